"""A trainer exiting while its collector is busy waits for it: repeated acks keep it waiting past its linger.

In this process, on the client's fake clock (three lingers pass without waiting them), over
a real socket to a stand-in collector; ``shutdown()`` is what the exit hook calls.  That a
real process's exit runs it is tested in test_client.py.
"""

from __future__ import annotations

import logging
import os
import threading

import pytest
import zmq

import statbus.pipeline as sp
from statbus.pipeline import StatsReporter
from statbus.pipeline.trainer import reporter as reporter_module
from statbus.pipeline.trainer.clock import FakeClock
from statbus.pipeline.wire import decode_frame, encode_ack
from waiting import holds_for, wait_for

pytestmark = pytest.mark.usefixtures("fresh_trainer_state")

LINGER = 2.0
BUSY_STEPS = 12
"""Quarter-lingers of fake time in which the stand-in collector only repeats its acks: three lingers."""


def test_an_exiting_trainer_waits_while_its_collector_repeats_acks(tmp_path, context, monkeypatch, caplog):
    clock = FakeClock()
    monkeypatch.setattr(reporter_module, "_clock", clock)
    address = f"ipc://{tmp_path}/data"
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(address)
    sp.configure(run_id="r", results_dir=str(tmp_path / "results"), address=address, autostart=False, linger=LINGER)
    reporter = StatsReporter("C")
    for i in range(1000):
        reporter.add_stat("k", float(i))
    reporter.write_stats(1)
    client = reporter_module._client
    assert client is not None
    frames = {}
    routing_id = None
    closed = threading.Event()
    closer = threading.Thread(target=lambda: (sp.shutdown(), closed.set()), name="closer")
    closer.start()
    try:
        def read() -> None:
            nonlocal routing_id
            while router.poll(10):
                routing_id, data = router.recv_multipart()
                frame = decode_frame(data)
                frames[frame.seq] = frame

        def said_bye() -> bool:
            read()
            return any(type(r).__name__ == "Bye" for f in frames.values() for r in f.records)

        wait_for(said_bye, 60, "the trainer's goodbye")
        wait_for(lambda: clock.waiters >= 2, what="the exit waiting for acks")  # the sender waits at most once
        # Busy: nothing journaled yet, but alive, as a collector with a backlog says it.
        for _ in range(BUSY_STEPS):
            clock.advance(LINGER / 4)
            router.send_multipart([routing_id, encode_ack(0)])
            wait_for(lambda: client._life_at == clock.now() or closed.is_set(),
                     what="the repeated ack read as a sign of life (or the exit over)")
            assert not closed.is_set(), "the exit stopped waiting while its collector showed life"
        holds_for(lambda: not closed.is_set(), 0.3, what="the exit waiting past its linger")
        read()
        assert sorted(frames) == list(range(1, max(frames) + 1))
        router.send_multipart([routing_id, encode_ack(max(frames))])
        wait_for(closed.is_set, what="the exit ending once everything is acked")
    finally:
        clock.advance(3600.0)  # a failed test leaves no thread waiting
        closer.join(30)
        router.close()
    assert not closer.is_alive()
    # nothing lost, nothing spooled, no thread left behind
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert client.exit_wait_limit == LINGER and not client._thread.is_alive()
    values = [v for f in frames.values() for r in f.records if type(r).__name__ == "StatRecord" for v in r.values]
    assert values == [float(i) for i in range(1000)]
    assert [r.info["pid"] for f in frames.values() for r in f.records if type(r).__name__ == "Bye"] == [os.getpid()]
