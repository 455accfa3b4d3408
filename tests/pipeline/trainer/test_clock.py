"""The trainer client's clock: the real one waits real time, the fake one only as far as it is advanced."""

from __future__ import annotations

import os
import threading

import zmq

from statbus.pipeline.trainer.clock import MONOTONIC, FakeClock
from waiting import holds_for, wait_for


def test_the_real_clock_waits_until_the_event_or_the_timeout() -> None:
    event = threading.Event()
    before = MONOTONIC.now()
    assert MONOTONIC.wait(event, 0.05) is False
    assert MONOTONIC.now() - before >= 0.05
    event.set()
    assert MONOTONIC.wait(event, 60.0) is True


def test_a_fake_wait_ends_once_advanced_past_its_deadline_or_at_its_event() -> None:
    clock = FakeClock()
    event = threading.Event()
    results = []
    waiter = threading.Thread(target=lambda: results.append(clock.wait(event, 2.0)))
    waiter.start()
    try:
        wait_for(lambda: clock.waiters == 1, what="the waiter waiting")
        clock.advance(1.5)
        holds_for(lambda: not results, 0.2, what="a wait short of its deadline")
        clock.advance(0.5)
        wait_for(lambda: results == [False], what="the wait over at its deadline")
    finally:
        clock.advance(3600.0)
        waiter.join(10)
    assert clock.waiters == 0
    event.set()
    assert clock.wait(event, 3600.0) is True  # a set event ends a wait however far its deadline


def test_a_fake_poll_returns_what_is_ready_at_once_and_nothing_only_past_its_deadline() -> None:
    clock = FakeClock()
    read_fd, write_fd = os.pipe()
    try:
        poller = zmq.Poller()
        poller.register(read_fd, zmq.POLLIN)
        os.write(write_fd, b"x")
        assert clock.poll(poller, 3600.0) == {read_fd: zmq.POLLIN}
        os.read(read_fd, 1)
        results = []
        poller_thread = threading.Thread(target=lambda: results.append(clock.poll(poller, 1.0)))
        poller_thread.start()
        try:
            holds_for(lambda: not results, 0.2, what="an empty poll short of its deadline")
            clock.advance(1.0)
            wait_for(lambda: results == [{}], what="the empty poll over at its deadline")
        finally:
            clock.advance(3600.0)
            poller_thread.join(10)
    finally:
        os.close(read_fd)
        os.close(write_fd)
