"""statbus.pipeline — moving stats: trainer client, wire, journal, collector, CLI (floor 3).

Importing this package loads the trainer side only (the ML-Agents-style API
below, zmq and msgpack): no collector, no plugin writers, no tensorboard.
"""

from ..plugins.stats import StatsAggregationMethod, StatsPropertyType, StatsSummary
from .reporter import StatsReporter, client_counters, flush, shutdown
from .trainer_config import TrainerConfig, configure

__all__ = [
    "StatsAggregationMethod",
    "StatsPropertyType",
    "StatsReporter",
    "StatsSummary",
    "TrainerConfig",
    "client_counters",
    "configure",
    "flush",
    "shutdown",
]
