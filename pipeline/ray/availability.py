"""Whether Ray can be imported, and the one line that says what to install when it cannot."""

from __future__ import annotations

import importlib
from types import ModuleType

from ...plugins import StatbusError

INSTALL_HINT = "statbus's Ray features need Ray: pip install 'statbus[ray]'"


class RayMissing(StatbusError):
    """Ray (or Ray Tune) is not installed in this environment."""


def import_ray(module: str = "ray") -> ModuleType:
    """``ray`` (or ``ray.tune``, ...) or :class:`RayMissing` with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RayMissing(f"{INSTALL_HINT} ({module} cannot be imported: {exc})") from None
