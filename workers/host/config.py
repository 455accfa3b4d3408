"""What one worker host is started with (``python -m statbus.workers`` arguments, parsed)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from ...plugins.discovery import PluginInfo
from ..fetch_protocol import DEFAULT_MAX_BYTES
from .heartbeat import HEARTBEAT_INTERVAL


@dataclasses.dataclass(frozen=True)
class HostConfig:
    plugin: str
    group: str
    target: str
    address: str
    state_file: str
    run_options: Mapping[str, Any]
    call_timeout: Optional[float] = None
    parent_pid: Optional[int] = None
    """The collector's pid: exit with LOST_PARENT once it is gone.  It may be a
    grandparent (an interpreter wrapper that does not exec); losing our direct
    parent (``os.getppid()`` changing) counts as lost too."""
    max_bytes: int = DEFAULT_MAX_BYTES
    heartbeat_interval: float = HEARTBEAT_INTERVAL

    @property
    def plugin_info(self) -> PluginInfo:
        """The one entry point to load: built from the arguments, never by scanning."""
        return PluginInfo(self.group, self.plugin, self.target, None, None)
