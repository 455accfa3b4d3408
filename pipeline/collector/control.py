"""The collector's answers on its control socket: ``ping``, ``status``, ``stop`` and plugin commands."""

from __future__ import annotations

import collections
import os
from typing import Any, Callable, Deque, Dict, Tuple

from ...plugins import StatbusError
from ..control import json_safe

# The collector is passed in, not imported: collector.py imports this module,
# and no module imports one that imports it back.
CollectorT = Any

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


def build_status(collector: CollectorT) -> Dict[str, Any]:
    now = collector.clock()
    intake = collector.intake
    journal = collector.journal
    values_rate, frames_rate = collector.rate.rates()
    trainers = [
        {
            "sender": state.sender,
            "host": state.info.get("host"),
            "pid": state.info.get("pid"),
            "last_seq": state.last_seq,
            "last_seen_ago": max(0.0, now - state.last_seen),
            "values": state.values,
            "frames": state.frames,
            "duplicates": state.duplicates,
            "gaps": state.gaps,
            "rejects": state.rejects,
            "dropped": state.dropped,
            "bye": state.bye,
        }
        for state in intake.senders.values()
    ]
    starts = journal.segment_starts()
    plugins = collector.supervisor.status() if collector.supervisor is not None else []
    fetch = getattr(collector, "fetch", None)
    consumers = []
    if fetch is not None:
        floors = collector.retention.floors()
        for view in fetch.consumers.values():
            consumers.append({
                "plugin": view.plugin,
                "read_to": view.read_to,
                "last_fetch_ago": max(0.0, now - view.last_fetch) if view.last_fetch else None,
                "fetches": view.fetches,
                "entries_sent": view.entries_sent,
                "skipped_quota": view.skipped_quota,
                "skipped_poison": view.skipped_poison,
                "floor": floors.get(view.plugin, 0),
            })
    status = {
        "ok": True,
        "run_id": collector.layout.run_id,
        "results_dir": collector.layout.results_dir,
        "address": collector.data_address,
        "worker_address": collector.worker_address,
        "control_address": collector.control_address,
        "pid": os.getpid(),
        "uptime": now - collector.started,
        "phase": collector.phase.value,
        "on_demand": collector.options.idle_exit is not None,
        "intake": {
            "values_per_second": values_rate,
            "frames_per_second": frames_rate,
            "values": intake.accepted_values,
            "frames": intake.accepted_frames,
            "duplicates": intake.duplicates,
            "gaps": intake.gaps,
            "rejected": sum(intake.rejects.values()),
            "rejects": dict(intake.rejects),
            "rejects_by_source": dict(intake.rejects_by_source.most_common(20)),
            "summaries": collector.summaries,
            "open_values": collector.aggregator.open_values,
            "open_categories": collector.aggregator.open_categories(),
        },
        "journal": {
            "directory": collector.layout.journal_dir,
            "start": journal.start_position,
            "head": journal.end_position,
            "size_bytes": journal.size_bytes(),
            "segments": len(starts),
            "fsync": collector.options.fsync.value,
            "deleted_bytes": collector.retention.deleted_bytes,
            "recovery": collector.recovery,
        },
        "trainers": trainers,
        "plugins": plugins,
        "consumers": consumers,
        "bad_fetches": fetch.bad_requests if fetch is not None else 0,
    }
    return json_safe(status)


def answer_control(collector: CollectorT, request: Dict[str, Any]) -> Dict[str, Any]:
    """The reply to one decoded control request (see :mod:`..control` for the protocol)."""
    op = request["op"]
    if op == "ping":
        return {"ok": True, "pid": os.getpid(), "run_id": collector.layout.run_id, "phase": collector.phase.value}
    if op == "status":
        return build_status(collector)
    if op == "stop":
        timeout = request.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            return {"ok": False, "error": "stop: timeout must be a non-negative number of seconds"}
        collector.request_stop(graceful=True, timeout=None if timeout is None else float(timeout))
        return {"ok": True, "stopping": True}
    plugin = request.get("plugin")
    if not isinstance(plugin, str) or not plugin:
        return {"ok": False, "error": f"{op}: a plugin name is required"}
    if collector.supervisor is None:
        return {"ok": False, "error": "this collector runs no plugins"}
    try:
        getattr(collector.supervisor, op)(plugin)
    except StatbusError as exc:
        return {"ok": False, "error": str(exc)}
    except KeyError:
        return {"ok": False, "error": f"no plugin {plugin!r} in this run"}
    return {"ok": True}
