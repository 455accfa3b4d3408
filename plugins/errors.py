"""The one error hierarchy of statbus.

Every error statbus raises on purpose derives from :class:`StatbusError`, so a
caller can catch the project's errors without catching everything else.  It
lives on the ground floor so that every floor can use it.
"""

from __future__ import annotations

import errno
from typing import Optional


class StatbusError(Exception):
    """Base of every error statbus raises on purpose."""


class ConfigError(StatbusError):
    """A setting, option or configuration file is invalid."""


class PluginError(StatbusError):
    """A plugin could not be discovered, loaded or registered."""

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"plugin {plugin!r}: {message}")
        self.plugin = plugin
        self.reason = message


class PluginImportError(PluginError):
    """Importing a plugin's entry point failed."""


class PluginRegistrationError(PluginError):
    """A plugin's registration function raised or returned something unusable."""


class RecordError(StatbusError):
    """A record's msgpack form is malformed."""


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""A writer's output failing with one of these waits for space (workers retry it) instead of crashing."""


def disk_full_error(exc: BaseException) -> Optional[OSError]:
    """The ``ENOSPC``/``EDQUOT`` ``OSError`` behind ``exc`` (itself, or a cause or context of it), else None."""
    seen = 0
    current: Optional[BaseException] = exc
    while current is not None and seen < 16:  # a cycle in a chain must not hang the caller
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None
