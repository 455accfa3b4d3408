"""The collector daemon: the event loop (``loop``), trainer intake (``intake``), aggregation
(``aggregator``), the workers' fetch server (``fetch_server``), control requests (``control``),
the status assembled from its parts (``status``), its options (``options``), its ready file (``ready``),
the idle exit (``idle``), the run's pidfile (``pidfile``) and starting it detached (``daemon``)."""
