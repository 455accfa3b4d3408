"""Loading one plugin and calling its registration function.

Only a worker host calls this: loading runs the plugin's code.
"""

from __future__ import annotations

import collections.abc
import logging
from typing import Any, List

import importlib_metadata

from .discovery import PluginInfo
from .errors import PluginImportError, PluginRegistrationError
from .settings import RunOptions
from .stats import StatsWriter

logger = logging.getLogger(__name__)


def is_stats_writer(obj: Any) -> bool:
    """A writer is anything with a callable ``write_stats``.

    Duck-typed on purpose: a plugin that imports real mlagents subclasses
    mlagents' ``StatsWriter``, not ours, and must still be accepted.
    """
    return isinstance(obj, StatsWriter) or callable(getattr(obj, "write_stats", None))


def _entry_point(plugin: PluginInfo) -> importlib_metadata.EntryPoint:
    return importlib_metadata.EntryPoint(name=plugin.name, value=plugin.target, group=plugin.group)


def load_registration_function(plugin: PluginInfo) -> Any:
    try:
        function = _entry_point(plugin).load()
    except Exception as exc:
        raise PluginImportError(plugin.name, f"importing {plugin.target} failed: {exc!r}") from exc
    if not callable(function):
        raise PluginImportError(plugin.name, f"{plugin.target} is a {type(function).__name__}, not a function")
    return function


def load_writers(plugin: PluginInfo, run_options: RunOptions) -> List[Any]:
    """Import ``plugin``, call its registration function, and check what it returned."""
    register = load_registration_function(plugin)
    try:
        result = register(run_options)
    except Exception as exc:
        raise PluginRegistrationError(plugin.name, f"registration function {plugin.target} raised {exc!r}") from exc
    if not isinstance(result, collections.abc.Iterable) or not isinstance(result, collections.abc.Sized):
        raise PluginRegistrationError(
            plugin.name,
            f"registration function {plugin.target} returned {type(result).__name__}, "
            "expected a list of StatsWriter",
        )
    writers = list(result)
    for index, writer in enumerate(writers):
        if not is_stats_writer(writer):
            raise PluginRegistrationError(
                plugin.name,
                f"item {index} returned by {plugin.target} is a {type(writer).__name__}, "
                "not a StatsWriter (it has no write_stats method)",
            )
    logger.info("plugin %s registered %d writer(s)", plugin.name, len(writers))
    return writers
