"""``mlagents.*`` module names inside a worker host where mlagents is not installed.

A plugin written for ML-Agents imports ``mlagents.trainers.stats``,
``mlagents.trainers.settings`` and ``mlagents.plugins``.  Where the real
mlagents is importable we leave it alone (the plugin then gets the real
classes; the loader accepts any object with ``write_stats``).  Otherwise we
register statbus's own modules under those names, with package modules for
``mlagents`` and ``mlagents.trainers`` so that both ``import
mlagents.trainers.settings`` and ``from mlagents.trainers.stats import
StatsWriter`` work.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import sys
import types
from typing import Any, Dict, Mapping, Optional

from ..plugins import groups as statbus_groups
from ..plugins import settings as statbus_settings
from ..plugins import stats as statbus_stats

logger = logging.getLogger(__name__)

ALIASED_MODULES = ("mlagents.trainers.stats", "mlagents.trainers.settings", "mlagents.plugins")
"""The modules a stats-writer plugin may import from ML-Agents and that we provide."""

_ALIAS_MARKER = "__statbus_alias__"


def _package(name: str) -> types.ModuleType:
    """An empty package module; its spec makes ``importlib.util.find_spec`` work on it."""
    module = types.ModuleType(name, f"statbus alias package standing in for {name}")
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []  # a package with nothing on disk: only what we register exists
    module.__package__ = name
    setattr(module, _ALIAS_MARKER, True)
    return module


def aliases_installed() -> bool:
    """True when the ``mlagents`` in ``sys.modules`` is ours."""
    return getattr(sys.modules.get("mlagents"), _ALIAS_MARKER, False)


def real_mlagents_available() -> bool:
    if aliases_installed():
        return False
    try:
        return importlib.util.find_spec("mlagents") is not None
    except (ImportError, ValueError):
        # A broken mlagents install or a module without a spec: treat as absent
        # only if nothing usable is there; find_spec failing means we cannot import it.
        return False


def install_mlagents_aliases() -> bool:
    """Provide the ``mlagents`` modules plugins import, unless real mlagents is importable.

    Returns True when the aliases are (now or already) installed, False when
    real mlagents was found and left alone.  Idempotent.
    """
    if aliases_installed():
        return True
    if real_mlagents_available():
        logger.info("real mlagents is importable; not installing aliases")
        return False
    root = _package("mlagents")
    trainers = _package("mlagents.trainers")
    modules: Dict[str, types.ModuleType] = {
        "mlagents": root,
        "mlagents.trainers": trainers,
        "mlagents.trainers.stats": statbus_stats,
        "mlagents.trainers.settings": statbus_settings,
        "mlagents.plugins": statbus_groups,
    }
    # Attributes as the import system would set them, so that after
    # ``import mlagents.trainers.stats`` the name ``mlagents.trainers.stats`` resolves.
    root.trainers = trainers  # type: ignore[attr-defined]
    root.plugins = statbus_groups  # type: ignore[attr-defined]
    trainers.stats = statbus_stats  # type: ignore[attr-defined]
    trainers.settings = statbus_settings  # type: ignore[attr-defined]
    sys.modules.update(modules)
    logger.debug("installed mlagents aliases: %s", ", ".join(sorted(modules)))
    return True


def real_run_options(mlagents_options: Mapping[str, Any]) -> Optional[Any]:
    """``mlagents.trainers.settings.RunOptions`` rebuilt from its ``as_dict()``; None where that fails.

    Only where the real mlagents is importable (the aliases are not installed).
    Its trainer types are plugins too: they must be registered before a
    behavior's ``trainer_type`` can be read back ("Invalid trainer type ppo").
    """
    try:
        from mlagents.plugins.trainer_type import register_trainer_plugins
        from mlagents.trainers.settings import RunOptions as MLAgentsRunOptions

        register_trainer_plugins()
        return MLAgentsRunOptions.from_dict(dict(mlagents_options))
    except Exception as exc:  # noqa: BLE001 — a plugin still gets statbus's RunOptions
        logger.warning("cannot build mlagents' RunOptions (%r); the plugin gets statbus's", exc)
        return None
