"""The life cycle of one plugin's worker host, as one table.

docs/design.md §6, "The workers"::

    STOPPED ─start─► STARTING ─ready─► READY ─stop─► STOPPING ─exit─► STOPPED
    STARTING|READY ─exit─► EXITED ─retry─► BACKOFF ─start─► STARTING
    EXITED ─give_up─► FAILED ─start (explicit restart)─► STARTING

Two additions the supervisor needs:

* ``ABORTING``: the supervisor is stopping a host *because it is broken* (hung,
  over its memory cap).  It escalates exactly like ``STOPPING`` (TERM, grace,
  KILL), but its exit counts as a failure and goes to ``EXITED`` — and so
  through backoff, the restart budget and poison strikes — whereas an exit in
  ``STOPPING`` was asked for and goes to ``STOPPED``.
* ``stop`` from ``EXITED``, ``BACKOFF`` and ``FAILED`` goes straight to
  ``STOPPED`` (there is no process to stop): that is how ``disable`` and
  shutdown reach a plugin that is not running.

Whether a ``STOPPED`` plugin starts again (explicit restart, enable) is the
supervisor's decision; this module only says which moves are legal.  Every
transition not in the table raises :class:`IllegalTransition`.
"""

from __future__ import annotations

import enum
from typing import Dict, FrozenSet, Tuple

from ...plugins.errors import StatbusError


class WorkerState(str, enum.Enum):
    """Where a plugin's worker is in its life; the value is what status shows."""

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    READY = "READY"
    STOPPING = "STOPPING"
    ABORTING = "ABORTING"
    EXITED = "EXITED"
    BACKOFF = "BACKOFF"
    FAILED = "FAILED"

    @property
    def has_process(self) -> bool:
        """A live (or not yet reaped) host process belongs to this state."""
        return self in _WITH_PROCESS


class WorkerEvent(str, enum.Enum):
    START = "start"
    """A host process was spawned."""
    READY = "READY"
    """The host's state page says it is ready."""
    STOP = "stop"
    """Asked to stop (disable, explicit restart, shutdown)."""
    ABORT = "abort"
    """Being stopped because it is broken (hung, over its memory cap)."""
    EXIT = "exit"
    """The host process ended (and was reaped)."""
    RETRY = "retry"
    """The restart policy scheduled a restart after a delay."""
    GIVE_UP = "give_up"
    """The restart policy gave up (budget spent, or an exit restarting cannot fix)."""


_WITH_PROCESS: FrozenSet[WorkerState] = frozenset(
    {WorkerState.STARTING, WorkerState.READY, WorkerState.STOPPING, WorkerState.ABORTING}
)

S = WorkerState
E = WorkerEvent

TRANSITIONS: Dict[Tuple[WorkerState, WorkerEvent], WorkerState] = {
    (S.STOPPED, E.START): S.STARTING,
    (S.STARTING, E.READY): S.READY,
    (S.STARTING, E.EXIT): S.EXITED,
    (S.READY, E.EXIT): S.EXITED,
    (S.STARTING, E.STOP): S.STOPPING,
    (S.READY, E.STOP): S.STOPPING,
    (S.STARTING, E.ABORT): S.ABORTING,
    (S.READY, E.ABORT): S.ABORTING,
    # Shutdown while aborting: the stop is already under way, it just no
    # longer leads to a restart.
    (S.ABORTING, E.STOP): S.STOPPING,
    (S.STOPPING, E.EXIT): S.STOPPED,
    (S.ABORTING, E.EXIT): S.EXITED,
    (S.EXITED, E.RETRY): S.BACKOFF,
    (S.EXITED, E.GIVE_UP): S.FAILED,
    (S.EXITED, E.STOP): S.STOPPED,
    (S.BACKOFF, E.START): S.STARTING,
    (S.BACKOFF, E.STOP): S.STOPPED,
    (S.FAILED, E.START): S.STARTING,
    (S.FAILED, E.STOP): S.STOPPED,
}
"""The whole state machine: (state, event) → next state."""

del S, E


class IllegalTransition(StatbusError):
    """An event that the state machine does not allow in the current state."""

    def __init__(self, plugin: str, state: WorkerState, event: WorkerEvent) -> None:
        super().__init__(f"plugin {plugin!r}: no transition from {state.value} on {event.value}")
        self.plugin = plugin
        self.state = state
        self.event = event


def next_state(state: WorkerState, event: WorkerEvent, plugin: str = "?") -> WorkerState:
    """The state after ``event`` in ``state``; raises :class:`IllegalTransition`."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(plugin, state, event) from None


class StateMachine:
    """The current state of one plugin, moved only through :data:`TRANSITIONS`."""

    __slots__ = ("plugin", "_state")

    def __init__(self, plugin: str, state: WorkerState = WorkerState.STOPPED) -> None:
        self.plugin = plugin
        self._state = state

    @property
    def state(self) -> WorkerState:
        return self._state

    def can(self, event: WorkerEvent) -> bool:
        return (self._state, event) in TRANSITIONS

    def fire(self, event: WorkerEvent) -> WorkerState:
        self._state = next_state(self._state, event, self.plugin)
        return self._state

    def __repr__(self) -> str:
        return f"StateMachine({self.plugin!r}, {self._state.value})"
