"""The worker state machine: every legal move, and illegal ones raise."""

from __future__ import annotations

import itertools

import pytest

from statbus.plugins import StatbusError
from statbus.workers.supervision.states import (
    TRANSITIONS,
    IllegalTransition,
    StateMachine,
    WorkerEvent,
    WorkerState,
    next_state,
)

S = WorkerState
E = WorkerEvent

EXPECTED = {
    (S.STOPPED, E.START): S.STARTING,
    (S.STARTING, E.READY): S.READY,
    (S.STARTING, E.EXIT): S.EXITED,
    (S.READY, E.EXIT): S.EXITED,
    (S.STARTING, E.STOP): S.STOPPING,
    (S.READY, E.STOP): S.STOPPING,
    (S.STARTING, E.ABORT): S.ABORTING,
    (S.READY, E.ABORT): S.ABORTING,
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


def test_table_is_exactly_the_design() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("state", "event"), sorted(EXPECTED, key=str))
def test_every_legal_transition(state: WorkerState, event: WorkerEvent) -> None:
    machine = StateMachine("p", state)
    assert machine.can(event)
    assert machine.fire(event) is EXPECTED[(state, event)]
    assert machine.state is EXPECTED[(state, event)]


ILLEGAL = [pair for pair in itertools.product(WorkerState, WorkerEvent) if pair not in EXPECTED]


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_every_other_transition_raises(state: WorkerState, event: WorkerEvent) -> None:
    machine = StateMachine("plug", state)
    assert not machine.can(event)
    with pytest.raises(IllegalTransition) as info:
        machine.fire(event)
    assert isinstance(info.value, StatbusError)
    assert "plug" in str(info.value) and state.value in str(info.value) and event.value in str(info.value)
    assert machine.state is state, "a refused event leaves the state alone"


def test_some_illegal_moves_by_name() -> None:
    for state, event in [
        (S.STOPPED, E.EXIT),  # nothing runs, nothing can exit
        (S.READY, E.START),  # never two hosts for one plugin
        (S.FAILED, E.RETRY),  # only an explicit restart leaves FAILED
        (S.STOPPING, E.READY),
        (S.BACKOFF, E.EXIT),
    ]:
        with pytest.raises(IllegalTransition):
            next_state(state, event)


def test_crash_loop_path_and_recovery() -> None:
    machine = StateMachine("p")
    for event in [E.START, E.READY, E.EXIT, E.RETRY, E.START, E.EXIT, E.GIVE_UP, E.START, E.READY, E.STOP, E.EXIT]:
        machine.fire(event)
    assert machine.state is S.STOPPED


def test_has_process() -> None:
    assert {s for s in WorkerState if s.has_process} == {S.STARTING, S.READY, S.STOPPING, S.ABORTING}
    assert S.READY.value == "READY"
