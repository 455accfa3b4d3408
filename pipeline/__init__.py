"""statbus.pipeline — moving stats: trainer client, wire, journal, collector, CLI (floor 3)."""
