"""``statbus status``: the collector's answer, assembled from the sections its parts render.

Intake, aggregator, journal, retention, fetch server and supervisor each render
their own section (their ``status()``); this module only puts them together
with what the collector itself knows (run, addresses, phase, intake rate).
"""

from __future__ import annotations

import collections
import os
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Tuple

from ..control import json_safe

if TYPE_CHECKING:  # loop.py imports this module; the collector is passed in
    from .loop import Collector

RATE_WINDOW = 5.0
"""Seconds over which the intake rate is averaged."""


class RateMeter:
    """Values and frames per second over the last :data:`RATE_WINDOW` seconds, from cumulative counters."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._samples: Deque[Tuple[float, int, int]] = collections.deque()

    def sample(self, values: int, frames: int) -> None:
        now = self._clock()
        self._samples.append((now, values, frames))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
            self._samples.popleft()

    def rates(self) -> Tuple[float, float]:
        if len(self._samples) < 2:
            return 0.0, 0.0
        (t0, v0, f0), (t1, v1, f1) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span <= 0:
            return 0.0, 0.0
        return (v1 - v0) / span, (f1 - f0) / span


def build_status(collector: Collector) -> Dict[str, Any]:
    now = collector.clock()
    values_rate, frames_rate = collector.rate.rates()
    fetch = collector.fetch.status(now) if collector.fetch is not None else {"consumers": [], "bad_fetches": 0}
    status = {
        "ok": True,
        "run_id": collector.layout.run_id,
        "results_dir": collector.layout.results_dir,
        "address": collector.data_address,
        "also_address": collector.also_address,
        "worker_address": collector.worker_address,
        "control_address": collector.control_address,
        "pid": os.getpid(),
        "uptime": now - collector.started,
        "phase": collector.phase.value,
        "on_demand": collector.options.idle_exit is not None,
        "pidfile": collector.layout.pid_file,
        "pidfile_ours": collector.pidfile.is_ours(),
        "run_folder_lost": collector.folder_lost,
        "run": collector.identity.status() if collector.identity is not None else None,
        "intake": {
            "values_per_second": values_rate,
            "frames_per_second": frames_rate,
            **collector.intake.status(),
            "summaries": collector.summaries,
            "acks_repeated": collector.beacons.sent,
            **collector.aggregator.status(),
        },
        "journal": {
            **collector.journal.status(),
            "deleted_bytes": collector.retention.deleted_bytes,
            "recovery": collector.recovery,
            **collector.stalls.status(now),
        },
        "spool": collector.spool.status(),
        "trainers": collector.intake.trainers_status(now),
        "plugins": collector.supervisor.status() if collector.supervisor is not None else [],
        "consumers": fetch["consumers"],
        "bad_fetches": fetch["bad_fetches"],
    }
    return json_safe(status)
