"""When an on-demand collector may exit by itself.

A collector started on demand by a trainer has no operator to stop it.  It
leaves once every trainer is gone, every plugin has caught up, and nothing has
arrived for ``idle_seconds``.  A trainer is gone once it said goodbye, or — on
this host — once its process no longer exists (a trainer killed with
``kill -9`` never says goodbye).  A trainer on another host that never said
goodbye keeps the collector up: it cannot be told from a quiet one.

A collector started for one training before that training's first frame
(``statbus learn`` starts it, then waits for its workers while ML-Agents builds
the environment) has an *owner*: the launching process, on this host.  While
it runs the collector is not idle, however late its first frame comes; it was
taken for idle once on a slow host, left, and the training's stats had no
collector to go to.
"""

from __future__ import annotations

import socket
from typing import Callable, Iterable, Mapping, Optional

from ...workers.pids import pid_alive
from .senders import SenderState

_HOST = socket.gethostname()


def trainer_gone(state: SenderState, alive: Callable[[int], bool] = pid_alive) -> bool:
    if state.bye:
        return True
    pid = state.info.get("pid")
    return state.info.get("host") == _HOST and type(pid) is int and pid > 0 and not alive(pid)


class IdleWatch:
    """Says when the quiet period is over; fed once per collector tick."""

    def __init__(
        self, idle_seconds: float, owner_pid: Optional[int] = None, alive: Callable[[int], bool] = pid_alive
    ) -> None:
        self.idle_seconds = idle_seconds
        self.owner_pid = owner_pid
        self._alive = alive
        self._quiet_since: Optional[float] = None
        self._last_frames = -1

    def expired(
        self,
        now: float,
        senders: Mapping[str, SenderState] | Iterable[SenderState],
        frames_received: int,
        plugins_caught_up: bool,
    ) -> bool:
        states = senders.values() if isinstance(senders, Mapping) else senders
        busy = (
            frames_received != self._last_frames
            or not plugins_caught_up
            or (self.owner_pid is not None and self._alive(self.owner_pid))
            or not all(trainer_gone(state, self._alive) for state in states)
        )
        self._last_frames = frames_received
        if busy:
            self._quiet_since = None
            return False
        if self._quiet_since is None:
            self._quiet_since = now
        return now - self._quiet_since >= self.idle_seconds
