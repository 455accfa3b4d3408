"""statbus.pipeline — moving stats: trainer client, wire, journal, collector, CLI (floor 3).

Importing this package loads the trainer side only (the ML-Agents-style API
below, zmq and msgpack): no collector, no plugin writers, no tensorboard.
"""

from typing import TYPE_CHECKING, Optional, Sequence

from ..plugins.stats import StatsAggregationMethod, StatsPropertyType, StatsSummary
from .trainer.config import TrainerConfig, configure
from .trainer.reporter import StatsReporter, client_counters, flush, shutdown

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time, __getattr__ below loads it on first use
    from .summary_writer import SummaryWriter


def learn(argv: Optional[Sequence[str]] = None) -> int:
    """``mlagents-learn ARGV`` in this process, every stats writer but one out of process.

    See :mod:`statbus.pipeline.mlagents.launcher`; mlagents is imported here, on call.
    """
    from .mlagents.launcher import learn as _learn

    return _learn(argv)


__all__ = [
    "StatsAggregationMethod",
    "StatsPropertyType",
    "StatsReporter",
    "StatsSummary",
    "TrainerConfig",
    "client_counters",
    "configure",
    "flush",
    "learn",
    "shutdown",
    "SummaryWriter",
]


def __getattr__(name: str) -> object:
    # torch-style SummaryWriter: loaded on first use, so this package stays cheap to import.
    if name == "SummaryWriter":
        from .summary_writer import SummaryWriter

        return SummaryWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
