"""Built-in plugins that are off until asked for, and how each is turned on.

The tracker writers (``wandb``, ``mlflow``) send a run to a service and need a library of
their own: they run only when the config file's ``[plugins.NAME]`` table says
``enabled = true``, ``--set NAME.enabled=true`` does, or their environment variable is set
(``STATBUS_WANDB=1``).  Read from metadata and the environment only: nothing here imports
a plugin or its library.
"""

from __future__ import annotations

import importlib.util
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

from .groups import STATBUS_STATS_WRITER


class OptIn(NamedTuple):
    env: str
    """The environment variable that turns the plugin on (1/true/yes/on) or off (0/false/no/off)."""
    extra: str
    """statbus's extra that installs what it needs."""
    modules: Tuple[str, ...]
    """Top-level modules it imports (looked up, not imported, to tell a missing library)."""

    @property
    def install_hint(self) -> str:
        return f"pip install 'statbus[{self.extra}]'"


OPT_IN_PLUGINS: Dict[str, OptIn] = {
    "wandb": OptIn("STATBUS_WANDB", "wandb", ("wandb",)),
    "mlflow": OptIn("STATBUS_MLFLOW", "mlflow", ("mlflow",)),
}
"""Plugins of the ``statbus.stats_writer`` group that are off by default, by name."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def opt_in_of(group: str, name: str) -> Optional[OptIn]:
    return OPT_IN_PLUGINS.get(name) if group == STATBUS_STATS_WRITER else None


def env_choice(opt_in: OptIn, environ: Mapping[str, str]) -> Optional[bool]:
    """True/False when the plugin's variable says on/off, None when unset or unreadable."""
    text = environ.get(opt_in.env)
    if text is None:
        return None
    text = text.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def missing_modules(opt_in: OptIn) -> List[str]:
    """The modules of ``opt_in`` this interpreter cannot find (found without importing them)."""
    missing = []
    for module in opt_in.modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing
