"""Writers the benchmark plugs into its collectors: a null sink, a slow one, a raising one.

They are registered only for the benchmark's own collectors, through a
dist-info the benchmark writes into its temporary directory (see
:mod:`.collector`); nothing in a normal installation discovers them.
The in-process baseline (:mod:`.baseline`) uses the same classes, so the
two sides of each comparison face the very same misbehaviour.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

from ...plugins.settings import RunOptions
from ...plugins.stats import StatsAggregationMethod, StatsSummary, StatsWriter


class BenchWriterError(RuntimeError):
    """Raised on purpose by :class:`RaisingWriter` (a plugin bug, not a statbus error)."""


class NullWriter(StatsWriter):
    """Accepts everything and keeps only counts: the cost of delivery alone."""

    def __init__(self) -> None:
        self.values = 0
        self.summaries = 0

    def on_add_stat(self, category: str, key: str, value: float,
                    aggregation: StatsAggregationMethod = StatsAggregationMethod.AVERAGE) -> None:
        self.values += 1

    def write_stats(self, category: str, values: Dict[str, StatsSummary], step: int) -> None:
        self.summaries += 1


class SleepyWriter(StatsWriter):
    """Sleeps ``write_sleep`` seconds per summary and ``add_sleep`` per value (a slow disk, a stalled plugin)."""

    def __init__(self, write_sleep: float = 0.05, add_sleep: float = 0.0) -> None:
        self.write_sleep = write_sleep
        self.add_sleep = add_sleep

    def on_add_stat(self, category: str, key: str, value: float,
                    aggregation: StatsAggregationMethod = StatsAggregationMethod.AVERAGE) -> None:
        if self.add_sleep:
            time.sleep(self.add_sleep)

    def write_stats(self, category: str, values: Dict[str, StatsSummary], step: int) -> None:
        time.sleep(self.write_sleep)

    def add_media(self, category: str, tag: str, media: Any, step: int) -> None:
        time.sleep(self.write_sleep)


class RaisingWriter(StatsWriter):
    """Raises from every ``write_stats``: the buggy plugin every run meets one day."""

    def write_stats(self, category: str, values: Dict[str, StatsSummary], step: int) -> None:
        raise BenchWriterError(f"bench: raising writer refuses {category} at step {step}")


def _float_option(options: Dict[str, Any], name: str, default: float) -> float:
    return float(options.get(name, default))


def get_null_writer(run_options: RunOptions) -> List[StatsWriter]:
    return [NullWriter()]


def get_sleepy_writer(run_options: RunOptions) -> List[StatsWriter]:
    """Options ``write_sleep`` (seconds per summary, default 0.05) and ``add_sleep`` (per value, default 0)."""
    options = dict(run_options.plugin_options)
    return [SleepyWriter(_float_option(options, "write_sleep", 0.05), _float_option(options, "add_sleep", 0.0))]


def get_raising_writer(run_options: RunOptions) -> List[StatsWriter]:
    return [RaisingWriter()]


ENTRY_POINTS = {
    "null": f"{__name__}:get_null_writer",
    "sleepy": f"{__name__}:get_sleepy_writer",
    "raiser": f"{__name__}:get_raising_writer",
    "stall": f"{__name__}:get_sleepy_writer",
}
"""Plugin name → entry-point target of the benchmark's own distribution."""
