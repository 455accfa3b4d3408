"""Helpers for the plugin fixture distribution in ``tests/fixtures/plugin_zoo``.

The zoo is a directory holding the ``statbus_zoo`` package and its
``statbus_zoo-0.1.dist-info``; a process sees its plugins (entry point group
``mlagents.stats_writer``) when the directory is on its ``PYTHONPATH``.  A
collector started with :func:`zoo_env` passes that environment down to the
worker hosts it spawns.
"""

from __future__ import annotations

import configparser
import os
from typing import Dict, Mapping, Optional

from statbus.plugins.discovery import PluginInfo
from statbus.plugins.groups import ML_AGENTS_STATS_WRITER

ZOO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "plugin_zoo")
ZOO_DISTRIBUTION = "statbus_zoo"
ZOO_VERSION = "0.1"
_ENTRY_POINTS = os.path.join(ZOO_DIR, f"{ZOO_DISTRIBUTION}-{ZOO_VERSION}.dist-info", "entry_points.txt")


def zoo_env(base: Optional[Mapping[str, str]] = None, **extra: str) -> Dict[str, str]:
    """``base`` (default ``os.environ``) with the zoo first on ``PYTHONPATH``, plus ``extra``."""
    env = dict(os.environ if base is None else base)
    paths = [ZOO_DIR] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != ZOO_DIR]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


def zoo_plugins() -> Dict[str, PluginInfo]:
    """Every zoo plugin by name, read from the fixture's entry_points.txt."""
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # names are case-sensitive
    parser.read(_ENTRY_POINTS, encoding="utf-8")
    return {
        name: PluginInfo(ML_AGENTS_STATS_WRITER, name, target.strip(), ZOO_DISTRIBUTION, ZOO_VERSION)
        for name, target in parser.items(ML_AGENTS_STATS_WRITER)
    }


def zoo_plugin(name: str) -> PluginInfo:
    """The zoo plugin ``name`` (``good``, ``hangs``, ``flaky``, ...)."""
    plugins = zoo_plugins()
    if name not in plugins:
        raise KeyError(f"no zoo plugin {name!r}; the zoo has {sorted(plugins)}")
    return plugins[name]


def zoo_output(results_dir: str, run_id: str, plugin: str) -> str:
    """Where a zoo writer appends its JSON lines by default."""
    return os.path.join(results_dir, run_id, "zoo", f"{plugin}.jsonl")
