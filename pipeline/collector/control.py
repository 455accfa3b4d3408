"""The collector's answers on its control socket: ``ping``, ``status``, ``stop`` and plugin commands."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict

from ...plugins import StatbusError
from .status import build_status

if TYPE_CHECKING:  # loop.py imports this module; the collector is passed in
    from .loop import Collector


def answer_control(collector: Collector, request: Dict[str, Any]) -> Dict[str, Any]:
    """The reply to one decoded control request (see :mod:`..control` for the protocol)."""
    op = request["op"]
    if op == "ping":
        return {"ok": True, "pid": os.getpid(), "run_id": collector.layout.run_id, "phase": collector.phase.value,
                "stalled": collector.stall is not None}
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
