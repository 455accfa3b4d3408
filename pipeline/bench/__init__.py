"""``statbus bench``: ``main`` runs the figures (``figures/``) over the bench's own collector,
child processes and writers, and prints the table (``report``).  Imported only by the
``bench`` subcommand, lazily."""
