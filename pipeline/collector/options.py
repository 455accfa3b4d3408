"""What a collector is built from: its options, and the supervisor it drives (as a protocol).

The collector never imports the supervisor (``statbus.workers.supervision``):
``python -m statbus.pipeline`` hands it a factory, and tests hand it fakes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Protocol

from ...plugins.settings import RunOptions
from ..journal.writer import FsyncPolicy
from ..security.curve import TransportSecurity


class SupervisorLike(Protocol):
    """What the collector needs of :class:`statbus.workers.supervision.supervisor.Supervisor`."""

    def start(self, head_position: int = 0) -> None: ...
    def tick(self, head_position: int) -> None: ...
    def committed(self, plugin: str) -> int: ...
    def skip_positions(self, plugin: str) -> FrozenSet[int]: ...
    def consumers(self) -> List[str]: ...
    def status(self) -> List[Dict[str, Any]]: ...
    def restart(self, name: str) -> None: ...
    def enable(self, name: str) -> None: ...
    def disable(self, name: str) -> None: ...
    def all_caught_up(self, head_position: int) -> bool: ...
    def settled(self) -> bool: ...
    def stop(self, timeout: float) -> None: ...


@dataclasses.dataclass(frozen=True)
class SupervisorHooks:
    """What the collector hands the supervisor it creates."""

    worker_address: str
    on_dead_letter: Callable[[str, int], Optional[Dict[str, Any]]]
    """``(plugin, position) -> record``: the journal entry at ``position``, JSON-safe, for the dead-letter file."""
    count_entries: Callable[[int, int], Optional[int]]
    """``(start, end) -> entries`` between two positions (a plugin's lag in records)."""
    run_options: RunOptions
    """The run's options from its identity (:mod:`.identity`): the same start time for every collector of the run."""


SupervisorFactory = Callable[[SupervisorHooks], SupervisorLike]
"""``factory(hooks) -> supervisor``; called once the sockets are bound and the journal recovered."""


@dataclasses.dataclass(frozen=True)
class CollectorOptions:
    bind: Optional[str] = None
    """Trainer address; default: the run's private ``ipc://`` socket."""
    also_bind: Optional[str] = None
    """A second trainer address next to ``bind``: the Ray collector takes its own node's trainers
    on the private ``ipc://`` socket and every other node's on ``tcp://`` with CURVE."""
    security: TransportSecurity = TransportSecurity()
    """CURVE keys / allow-list for a ``tcp://`` data address; plain tcp only when ``insecure`` (docs/design.md §7)."""
    segment_bytes: int = 64 << 20
    fsync: FsyncPolicy = FsyncPolicy.INTERVAL
    fsync_interval: float = 1.0
    quota_bytes: int = 1 << 30
    """Per consumer: bytes behind the head it may lag before its quota position moves up."""
    stop_timeout: float = 30.0
    """Default time live plugins get to catch up on a graceful stop."""
    idle_exit: Optional[float] = None
    """On-demand collectors: stop once trainers are gone, plugins caught up, and this long quiet."""
    owner_pid: Optional[int] = None
    """On-demand collectors: never idle while this process (on this host) runs (see :mod:`.idle`)."""
    force: bool = False
    """Start the run over: clear its outputs first (``--force``); otherwise an existing run is continued."""
    force_before: Optional[float] = None
    """An on-demand start's ``STATBUS_FORCE``: start over unless the run began at or after this time."""
