"""statbus.plugins — the plugin contract (floor 1) and the built-in writers.

What a plugin author needs, and nothing else: the writer base class and the summary it is
handed, the aggregation and property enums, the run's options, and the errors to raise.
The plumbing the other floors share — the records a writer is fed and their msgpack form
(:mod:`.records`), entry-point discovery (:mod:`.discovery`), the groups' names
(:mod:`.groups`), the rest of the error hierarchy (:mod:`.errors`) — is imported from its
module, so importing the contract stays cheap: a trainer never loads entry-point metadata
(``importlib_metadata``), let alone tensorboard.
"""

from .errors import ConfigError, StatbusError
from .settings import CheckpointSettings, RunOptions
from .stats import StatsAggregationMethod, StatsPropertyType, StatsSummary, StatsWriter

__all__ = [
    "CheckpointSettings",
    "ConfigError",
    "RunOptions",
    "StatbusError",
    "StatsAggregationMethod",
    "StatsPropertyType",
    "StatsSummary",
    "StatsWriter",
]
