"""The collector's side of the workers: spawn, watch, restart (circus-style arbiter → watcher → process).

``supervisor`` owns one ``watcher`` per plugin; ``processes`` starts and stops a host
(TERM, grace, KILL); ``policy`` (restart budget, backoff) and ``states`` (the state
machine as one table) are pure logic on an injected clock; ``config`` reads the
plugins' settings.  Never imports plugin code nor :mod:`.host`."""
