"""The writer-facing stats API, compatible with ``mlagents.trainers.stats`` (1.1.0).

A plugin written against ML-Agents imports these names from
``mlagents.trainers.stats``; the worker host aliases that module to this one
where mlagents is not installed.
"""

from __future__ import annotations

import abc
import math
from enum import Enum
from fractions import Fraction
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple


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
    TEXT = "text"
    """statbus's own (torch's ``add_text``): ``{"tag": str, "text": str, "step": int}``."""


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

    # The reductions never raise, whatever the values (see sum_and_mean).

    @property
    def sum(self) -> float:
        return sum_and_mean(self.full_dist)[0]

    @property
    def mean(self) -> float:
        # ML-Agents (numpy) yields NaN for an empty period; so do we, without a warning.
        return sum_and_mean(self.full_dist)[1]

    @property
    def std(self) -> float:
        """Population standard deviation, as ``numpy.std`` computes it."""
        return summarize(self.full_dist)[3]

    @property
    def aggregated_value(self) -> float:
        total, mean = sum_and_mean(self.full_dist)
        return total if self.aggregation_method == StatsAggregationMethod.SUM else mean


def sum_and_mean(full_dist: Sequence[float]) -> Tuple[float, float]:
    """``math.fsum`` of the values and their mean, never raising.

    ``fsum`` raises on huge finite values (``[1e308, 1e308]`` overflows a
    partial sum) and on ``inf + -inf``; one extreme value from a trainer must
    not crash a writer, so those cases are computed exactly instead (``inf`` /
    ``nan`` where IEEE arithmetic gives them, as numpy does).  The mean of an
    empty list is NaN.
    """
    num = len(full_dist)
    try:
        total = math.fsum(full_dist)
    except (OverflowError, ValueError):
        return _exact_sum_and_mean(full_dist)
    return total, (total / num if num else math.nan)


def summarize(full_dist: Sequence[float]) -> Tuple[int, float, float, float, Optional[float], Optional[float]]:
    """``(num, sum, mean, std, min, max)`` of one key's values, each reduction done once.

    ``sum``, ``mean`` and ``std`` are the floats ``StatsSummary.sum``, ``.mean``
    and ``.std`` compute (the same expressions, so the same roundings); ``min``
    and ``max`` are over the finite values, ``None`` when there is none.  Where
    ``StatsSummary`` would raise (``math.fsum`` overflows on huge finite values
    such as ``[1e308, 1e308]``, ``(v - mean) ** 2`` overflows for ``|v - mean|``
    past ~1.3e154, ``fsum`` refuses ``inf + -inf``), the result is what exact
    arithmetic rounds to instead (``inf``/``nan`` where IEEE sums give them), so
    one extreme value cannot crash a writer.
    """
    num = len(full_dist)
    if not num:
        return 0, 0.0, math.nan, math.nan, None, None
    total, mean = sum_and_mean(full_dist)
    if not math.isfinite(mean):
        # Some value is NaN or infinite (fsum propagates them); the std is then
        # NaN whichever way it is computed, and min/max skip those values.
        finite = [v for v in full_dist if math.isfinite(v)]
        if finite:
            return num, total, mean, math.nan, min(finite), max(finite)
        return num, total, mean, math.nan, None, None
    # A finite mean means every value is finite.
    if num == 1:
        # (v - mean) is 0 exactly, so the population std is 0.0 exactly.
        value = full_dist[0]
        return 1, total, mean, 0.0, value, value
    try:
        std = math.sqrt(math.fsum([(v - mean) ** 2 for v in full_dist]) / num)
    except OverflowError:
        std = math.inf
    if std == math.inf:
        std = _scaled_std(full_dist, mean)
    return num, total, mean, std, min(full_dist), max(full_dist)


def _exact_sum_and_mean(full_dist: Sequence[float]) -> Tuple[float, float]:
    """Sum and mean where ``math.fsum`` gave up: IEEE for non-finite values, else exact."""
    non_finite = [float(v) for v in full_dist if not math.isfinite(v)]
    if non_finite:
        # inf + -inf is NaN here, as in numpy, rather than fsum's ValueError.
        total = sum(non_finite)
        return total, total / len(full_dist)
    # Only finite values: fsum overflowed on a partial sum.  Rational
    # arithmetic is exact; only the rounding to float can overflow.
    exact = sum((Fraction(float(v)) for v in full_dist), Fraction(0))
    try:
        total = float(exact)
    except OverflowError:
        total = math.inf if exact > 0 else -math.inf
    # The mean of finite floats is within their range, so it is finite.
    return total, float(exact / len(full_dist))


def _scaled_std(full_dist: Sequence[float], mean: float) -> float:
    """Population std without overflow: deviations are halved, then scaled to at most 1."""
    deviations = [v * 0.5 - mean * 0.5 for v in full_dist]
    largest = max(abs(d) for d in deviations)
    if largest == 0.0:
        return 0.0
    # Scaled back last: the std never exceeds the largest deviation, so only a
    # std past the float range overflows.
    return 2.0 * (largest * math.sqrt(math.fsum([(d / largest) ** 2 for d in deviations]) / len(full_dist)))


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

    def add_media(self, category: str, tag: str, media: Any, step: int) -> None:
        """statbus only (ML-Agents' ``StatsWriter`` has no such method): called once per media value
        a trainer recorded (``SummaryWriter.add_image``, ``add_video``, ...), in journal order between
        the other calls; ``media`` is a :class:`statbus.plugins.media.Media` (kind, shape, dtype, raw
        bytes, options), not encoded.  Does nothing by default; a writer that does not override it
        is not handed media at all."""
