"""The trainer client's clock: what time it is, and how its threads wait for a while.

Every timing decision of a :class:`.sender.Client` — the batch interval, the ack
timeout and its re-sends, the linger at exit, the collector keeper's backoff, Ray
rediscovery, reconnects after a refusal — reads one :class:`Clock`, given where the
client is built.  :data:`MONOTONIC` is the real one; tests give a :class:`FakeClock`
and advance it, so that what would take seconds of waiting takes none (docs/design.md §10,
"Timing reads an injected clock").

A wait ends at the clock's deadline or as soon as what it waits on is ready (an
event set, a socket or pipe readable); the clock never touches ``add_stat``'s path.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, Union

import zmq

Pollable = Union[zmq.Socket, int]


class Clock:
    """Real time: :func:`time.monotonic`, and waits that last as long as they say."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Until ``event`` is set (True) or ``timeout`` seconds have passed on this clock (False)."""
        return event.wait(max(0.0, timeout))

    def poll(self, poller: zmq.Poller, timeout: float) -> Dict[Pollable, int]:
        """What ``poller`` has ready, waiting up to ``timeout`` seconds on this clock for something."""
        # +1 ms: poll's milliseconds round down, and a wake-up just before a deadline would spin.
        return dict(poller.poll(max(0, int(timeout * 1000) + 1)))


MONOTONIC = Clock()
"""The clock every client runs on unless told otherwise."""


class FakeClock(Clock):
    """Time that moves only when :meth:`advance` says so (tests).

    A wait on it ends when what it waits on is ready, or once the clock has been advanced
    past its deadline: a waiter looks at the fake time at least every :data:`SLICE` real
    seconds (one waiting on an event, at once after each :meth:`advance`).
    """

    SLICE = 0.005
    """Real seconds a waiter sleeps between two looks at fake time (an advance wakes it sooner)."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._moved = threading.Condition()
        self.waiters = 0
        """Threads waiting on this clock now: a test advances once the thread it means waits."""

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds`` and wake every waiter, which sees whether its deadline passed."""
        with self._moved:
            self._now += seconds
            self._moved.notify_all()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        with self._moved:
            deadline = self._now + max(0.0, timeout)
            self.waiters += 1
            try:
                while not event.is_set():
                    if self._now >= deadline:
                        return False
                    self._moved.wait(self.SLICE)
                return True
            finally:
                self.waiters -= 1

    def poll(self, poller: zmq.Poller, timeout: float) -> Dict[Pollable, int]:
        with self._moved:
            deadline = self._now + max(0.0, timeout)
            self.waiters += 1
        try:
            while True:
                ready = dict(poller.poll(int(self.SLICE * 1000)))
                if ready or self._now >= deadline:
                    return ready
        finally:
            with self._moved:
                self.waiters -= 1
