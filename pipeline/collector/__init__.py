"""The collector daemon: the event loop (``loop``), trainer intake (``drain``, ``intake``), aggregation
(``aggregator``), the workers' fetch server (``fetch_server``), control requests (``control``),
the status assembled from its parts (``status``), its options (``options``), the idle exit
(``idle``) and the process's life — pidfile, ready file, socket directories, starting it
detached — in ``lifecycle``."""
