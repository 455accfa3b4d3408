"""Entry-point groups, compatible with ``mlagents.plugins``."""

STATBUS_STATS_WRITER = "statbus.stats_writer"
"""statbus's own group; the built-in writers are registered here."""

ML_AGENTS_STATS_WRITER = "mlagents.stats_writer"
"""ML-Agents' group; third-party plugins written for ML-Agents register here."""

STATS_WRITER_GROUPS = (STATBUS_STATS_WRITER, ML_AGENTS_STATS_WRITER)

REPLACED_PLUGINS = frozenset({f"{ML_AGENTS_STATS_WRITER}:default"})
"""``group:name`` of the plugins statbus's built-in writers stand in for (ML-Agents' own
in-process TensorBoard, gauge and console writers): a collector leaves them out unless
``--plugins`` names them."""
