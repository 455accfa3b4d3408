"""statbus on Ray: the collector as a named Ray actor, trainers that find it, a Tune callback.

Ray is an optional extra (``pip install 'statbus[ray]'``).  Importing this package
does not import Ray; each name below does, when first used, and without Ray it
raises :class:`RayMissing` saying what to install.

* :func:`start_collector` / :func:`find_collector` / :func:`stop_collector` /
  :func:`collector_status` — the run's collector as a detached actor (:mod:`.control`);
* ``configure(run_id=R, ray=True)`` or ``STATBUS_RAY=1`` in any task or actor —
  trainers find that actor and connect (:mod:`.discovery`);
* :class:`StatbusCallback` — Ray Tune trial results as summaries (:mod:`.tune_callback`).

Ray carries discovery and public keys only; stats travel over ZeroMQ.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..trainer.ray_discovery import RayMissing

_LAZY = {
    "start_collector": ".control",
    "find_collector": ".control",
    "stop_collector": ".control",
    "collector_status": ".control",
    "CollectorInfo": ".control",
    "StatbusCallback": ".tune_callback",
}

__all__ = ["RayMissing", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
