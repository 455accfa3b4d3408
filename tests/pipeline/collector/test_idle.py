"""When an on-demand collector may leave (collector/idle.py): the rule on a fake clock with real
process ids, then a collector process that waits for its owner and its trainer to end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from collector_helpers import RawTrainer, settle, wait_for
from statbus.pipeline.collector.idle import IdleWatch, trainer_gone
from statbus.pipeline.collector.senders import SenderState
from statbus.pipeline.wire import hello_record
from waiting import holds_for

HOST = socket.gethostname()


@pytest.fixture
def live_process():
    """A process that runs until the test ends it (a trainer, or the owner that started the collector)."""
    started = []

    def start() -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.kill()
            process.wait()
            process.stdin.close()


@pytest.fixture
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # reaped: its pid names no process (short of reuse within the test)
    return process.pid


def sender(pid: int, host: str = HOST, bye: bool = False) -> SenderState:
    return SenderState("s", info={"pid": pid, "host": host}, bye=bye)


def test_a_trainer_is_gone_after_its_bye_or_when_its_process_on_this_host_ended(dead_pid) -> None:
    assert trainer_gone(sender(os.getpid(), bye=True))
    assert trainer_gone(sender(dead_pid))
    assert not trainer_gone(sender(os.getpid()))
    # On another host a dead pid here means nothing: it cannot be told from a quiet trainer.
    assert not trainer_gone(sender(dead_pid, host="elsewhere"))
    # A trainer that never said which process it is stays.
    assert not trainer_gone(SenderState("s", info={"host": HOST}))
    assert not trainer_gone(SenderState("s", info={"pid": "12", "host": HOST}))


def test_the_quiet_period_starts_when_everything_is_done_and_any_activity_restarts_it(dead_pid) -> None:
    watch = IdleWatch(10.0)
    gone = [sender(dead_pid)]
    assert not watch.expired(0.0, gone, frames_received=5, plugins_caught_up=True)  # frames just arrived
    assert not watch.expired(1.0, gone, 5, True)  # quiet from here
    assert not watch.expired(10.9, gone, 5, True)
    assert watch.expired(11.0, gone, 5, True)
    assert not watch.expired(12.0, gone, 6, True)  # a frame: busy again
    assert not watch.expired(13.0, gone, 6, False)  # a plugin behind
    assert not watch.expired(14.0, gone + [sender(os.getpid())], 6, True)  # a trainer alive
    assert not watch.expired(15.0, {"s": gone[0]}, 6, True)
    assert watch.expired(25.0, {"s": gone[0]}, 6, True)


def test_an_owner_alive_keeps_the_collector_even_before_any_frame(dead_pid) -> None:
    owned = IdleWatch(1.0, owner_pid=os.getpid())
    assert not owned.expired(0.0, [], 0, True) and not owned.expired(100.0, [], 0, True)
    orphaned = IdleWatch(1.0, owner_pid=dead_pid)
    assert not orphaned.expired(0.0, [], 0, True)  # the first tick counts as activity
    assert not orphaned.expired(1.0, [], 0, True) and orphaned.expired(2.0, [], 0, True)


def test_an_on_demand_collector_leaves_once_its_owner_and_its_killed_trainer_are_gone(
        collectors, live_process, context) -> None:
    owner, trainer = live_process(), live_process()
    collector = collectors(extra=["--no-plugins", "--on-demand", "--idle-exit", "0.3", "--owner-pid", str(owner.pid)])
    raw = RawTrainer(context, collector.layout.data_address, "t")
    try:
        raw.frame([hello_record({"pid": trainer.pid, "host": HOST})])
        settle([raw])
        running = lambda: collector.process.poll() is None  # noqa: E731
        holds_for(running, 1.0, what="the collector stays while its owner runs")
        owner.kill()
        owner.wait()
        holds_for(running, 1.0, what="the collector stays while its trainer runs (no bye, process alive)")
        trainer.kill()  # kill -9: no bye; its process is gone
        trainer.wait()
        wait_for(lambda: not running(), 30, what="the idle collector to leave")
        assert collector.process.returncode == 0
        assert "every trainer is gone and every plugin caught up" in collector.log()
    finally:
        raw.close()
