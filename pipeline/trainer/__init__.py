"""The trainer side: ``StatsReporter`` (``reporter``), ``configure`` (``config``), the lock-free
hand-off to the sender thread (``handoff``), frame building (``framing``), the buffer of
unacknowledged frames (``resend_buffer``), the sender loop (``sender``) and the on-demand
collector (``autostart``).  ``import statbus.pipeline`` loads this room only."""
