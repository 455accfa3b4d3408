"""The ``statbus`` command: ``main`` builds the parser; one module per subcommand."""
