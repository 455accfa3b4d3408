"""The worker host: one plugin's writers in a process of their own (``python -m statbus.workers``).

``loop`` fetches and commits, ``dispatch`` hands entries to the writers, ``heartbeat``
proves life and watches the parent, ``loading`` imports the one entry point,
``fetch_client`` talks to the collector.  Imports :mod:`statbus.plugins` and the
shared modules of :mod:`statbus.workers` only."""
