"""statbus.workers — running each plugin in an isolated process (floor 2)."""
