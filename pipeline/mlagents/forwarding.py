"""The one stats writer left in the training process: it forwards to the run's collector.

ML-Agents' ``StatsReporter`` calls every writer under its global lock, so this
writer's calls are the training's own cost: each is a statbus reporter call
(an append or a queued event, never I/O) and never raises.  The summaries
ML-Agents computes in ``write_stats`` are not sent: the collector aggregates
the forwarded values itself, across every process of the run.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict

from mlagents.trainers.stats import StatsReporter as MLAgentsStatsReporter
from mlagents.trainers.stats import StatsWriter
from mlagents_envs.side_channel.stats_side_channel import StatsAggregationMethod as MLAggregation

from ...plugins.stats import StatsAggregationMethod, StatsPropertyType
from ..trainer.reporter import StatsReporter

logger = logging.getLogger(__name__)

_AGGREGATIONS = {member: StatsAggregationMethod(member.value) for member in MLAggregation}
_MOST_RECENT = MLAggregation.MOST_RECENT


class ForwardingWriter(StatsWriter):
    """ML-Agents' ``StatsWriter`` whose every call goes to statbus's trainer client."""

    def __init__(self) -> None:
        self._reporters: Dict[str, StatsReporter] = {}
        self._lock = threading.Lock()
        self.errors = 0
        """Calls that failed (bad input, a client that could not start); logged once each kind."""
        self._logged: set = set()

    def _reporter(self, category: str) -> StatsReporter:
        reporter = self._reporters.get(category)
        if reporter is None:
            with self._lock:
                reporter = self._reporters.get(category)
                if reporter is None:
                    reporter = self._reporters[category] = StatsReporter(category)
        return reporter

    def _failed(self, call: str, exc: Exception) -> None:
        self.errors += 1
        kind = (call, type(exc).__name__)
        if kind not in self._logged:
            self._logged.add(kind)
            logger.warning("statbus: %s failed and was dropped: %r (logged once per kind)", call, exc)

    def on_add_stat(self, category: str, key: str, value: float, aggregation: Any = MLAggregation.AVERAGE) -> None:
        try:
            reporter = self._reporter(category)
            if aggregation is _MOST_RECENT:
                # ML-Agents calls this for add_stat and for set_stat alike; set_stat has
                # just replaced the period's values by [value] (it holds the reporter's
                # lock while it calls us), add_stat appended one.  A one-value list is
                # the same period either way.
                held = MLAgentsStatsReporter.stats_dict.get(category, {}).get(key)
                if held is not None and len(held) == 1:
                    reporter.set_stat(key, value)
                    return
            reporter.add_stat(key, value, _AGGREGATIONS.get(aggregation, aggregation))
        except Exception as exc:  # noqa: BLE001 — never raise into training
            self._failed("on_add_stat", exc)

    def write_stats(self, category: str, values: Any, step: int) -> None:
        try:
            self._reporter(category).write_stats(int(step))
        except Exception as exc:  # noqa: BLE001
            self._failed("write_stats", exc)

    def add_property(self, category: str, property_type: Any, value: Any) -> None:
        try:
            self._reporter(category).add_property(StatsPropertyType(property_type.value), value)
        except Exception as exc:  # noqa: BLE001
            self._failed("add_property", exc)
