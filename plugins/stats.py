"""The writer-facing stats API, compatible with ``mlagents.trainers.stats`` (1.1.0).

A plugin written against ML-Agents imports these names from
``mlagents.trainers.stats``; the worker host aliases that module to this one
where mlagents is not installed.
"""

from __future__ import annotations

import abc
import math
from enum import Enum
from typing import Any, Dict, List, NamedTuple


class StatsAggregationMethod(Enum):
    """How the values of one key in one summary period are reduced."""

    AVERAGE = 0
    MOST_RECENT = 1
    SUM = 2
    HISTOGRAM = 3


class StatsPropertyType(Enum):
    """Kinds of run properties a trainer can announce to writers."""

    HYPERPARAMETERS = "hyperparameters"
    SELF_PLAY = "selfplay"


class StatsSummary(NamedTuple):
    """Every value of one key in one summary period, and how to reduce them."""

    full_dist: List[float]
    aggregation_method: StatsAggregationMethod

    @staticmethod
    def empty() -> "StatsSummary":
        return StatsSummary([], StatsAggregationMethod.AVERAGE)

    @property
    def num(self) -> int:
        return len(self.full_dist)

    @property
    def sum(self) -> float:
        return math.fsum(self.full_dist)

    @property
    def mean(self) -> float:
        # ML-Agents (numpy) yields NaN for an empty period; so do we, without a warning.
        if not self.full_dist:
            return math.nan
        return self.sum / len(self.full_dist)

    @property
    def std(self) -> float:
        """Population standard deviation, as ``numpy.std`` computes it."""
        if not self.full_dist:
            return math.nan
        mean = self.mean
        return math.sqrt(math.fsum((v - mean) ** 2 for v in self.full_dist) / len(self.full_dist))

    @property
    def aggregated_value(self) -> float:
        if self.aggregation_method == StatsAggregationMethod.SUM:
            return self.sum
        return self.mean


class StatsWriter(abc.ABC):
    """A sink for stats summaries; plugins subclass this.

    Methods are called from one thread of a worker process, in journal order.
    A writer may also define ``flush()`` (make everything written so far
    durable) and ``close()``; the worker host calls them when present.
    """

    def on_add_stat(
        self,
        category: str,
        key: str,
        value: float,
        aggregation: StatsAggregationMethod = StatsAggregationMethod.AVERAGE,
    ) -> None:
        """Called for every single value recorded; does nothing by default."""

    @abc.abstractmethod
    def write_stats(self, category: str, values: Dict[str, StatsSummary], step: int) -> None:
        """Called once per summary period of ``category``."""

    def add_property(self, category: str, property_type: StatsPropertyType, value: Any) -> None:
        """Called when a trainer announces a run property; does nothing by default."""
