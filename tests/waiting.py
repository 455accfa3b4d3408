"""Waiting in tests: poll with a deadline, never a fixed sleep.  Every deadline loop of the suite goes through here."""

from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar, Union

import zmq
from zmq.utils.monitor import recv_monitor_message

T = TypeVar("T")
What = Union[str, Callable[[], str]]
"""What is awaited, for the failure message: a string, or a function called only on failure (to show state)."""


def _describe(what: What) -> str:
    return what() if callable(what) else what


def wait_for(condition: Callable[[], T], timeout: float = 30.0, what: What = "condition", interval: float = 0.02) -> T:
    """Poll ``condition`` until it returns something truthy, and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {_describe(what)}")
        time.sleep(interval)


def holds_for(condition: Callable[[], object], seconds: float, what: What = "condition", interval: float = 0.02) -> None:
    """Poll ``condition`` for ``seconds``; fail as soon as it is false (something must *stay* true)."""
    deadline = time.monotonic() + seconds
    while True:
        if not condition():
            raise AssertionError(f"no longer true: {_describe(what)}")
        if time.monotonic() > deadline:
            return
        time.sleep(interval)


def wait_monitor_event(monitor: zmq.Socket, mask: int, timeout: float = 20.0) -> dict:
    """The first event of a socket monitor in ``mask`` (others are skipped); fail after ``timeout``."""
    def matching() -> Optional[dict]:
        while monitor.poll(200):
            event = recv_monitor_message(monitor, zmq.NOBLOCK)
            if event["event"] & mask:
                return event
        return None

    return wait_for(matching, timeout, f"a monitor event in mask {mask:#x}", interval=0)
