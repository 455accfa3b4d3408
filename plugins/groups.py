"""Entry-point groups, compatible with ``mlagents.plugins``."""

STATBUS_STATS_WRITER = "statbus.stats_writer"
"""statbus's own group; the built-in writers are registered here."""

ML_AGENTS_STATS_WRITER = "mlagents.stats_writer"
"""ML-Agents' group; third-party plugins written for ML-Agents register here."""

STATS_WRITER_GROUPS = (STATBUS_STATS_WRITER, ML_AGENTS_STATS_WRITER)
