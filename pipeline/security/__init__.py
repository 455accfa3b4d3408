"""Transport security for ``tcp://``: CURVE sockets (``curve``), the ZAP allow-list handler
(``zap``) and key files (``keyfiles``)."""
