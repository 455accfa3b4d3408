"""statbus.plugins — the plugin contract (floor 1) and the built-in writers.

Nothing here imports the other floors.  The built-in writers live in their
own modules and are imported only by whoever uses them, so that importing the
contract stays cheap (a trainer never pays for tensorboard).
"""

from .discovery import PluginInfo, discover_plugins, find_plugin
from .errors import ConfigError, PluginError, PluginImportError, PluginRegistrationError, RecordError, StatbusError
from .groups import ML_AGENTS_STATS_WRITER, STATBUS_STATS_WRITER, STATS_WRITER_GROUPS
from .records import PropertyRecord, RecordKind, StatOp, StatRecord, SummaryRecord
from .settings import CheckpointSettings, RunOptions
from .stats import StatsAggregationMethod, StatsPropertyType, StatsSummary, StatsWriter

__all__ = [
    "CheckpointSettings",
    "ConfigError",
    "ML_AGENTS_STATS_WRITER",
    "PluginError",
    "PluginImportError",
    "PluginInfo",
    "PluginRegistrationError",
    "PropertyRecord",
    "RecordError",
    "RecordKind",
    "RunOptions",
    "STATBUS_STATS_WRITER",
    "STATS_WRITER_GROUPS",
    "StatOp",
    "StatRecord",
    "StatbusError",
    "StatsAggregationMethod",
    "StatsPropertyType",
    "StatsSummary",
    "StatsWriter",
    "SummaryRecord",
    "discover_plugins",
    "find_plugin",
]
