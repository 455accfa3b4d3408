"""A trainer exiting while its collector is busy waits for it: repeated acks keep it waiting past its linger."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import zmq

from statbus.pipeline.wire import decode_frame, encode_ack
from waiting import wait_for

TRAINER = """
import sys
from statbus.pipeline import StatsReporter, configure
configure(run_id="r", results_dir=sys.argv[1], address=sys.argv[2], linger=2.0)
reporter = StatsReporter("C")
for i in range(1000):
    reporter.add_stat("k", float(i))
reporter.write_stats(1)
"""

BUSY_SECONDS = 6.0
"""How long the stand-in collector only repeats its acks: three times the trainer's linger."""


def test_an_exiting_trainer_waits_while_its_collector_repeats_acks(tmp_path, context):
    address = f"ipc://{tmp_path}/data"
    env = dict(os.environ, STATBUS_AUTOSTART="0", PYTHONWARNINGS="error")
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(address)
    process = subprocess.Popen([sys.executable, "-c", TRAINER, str(tmp_path / "results"), address],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    frames = {}
    routing_id = None
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
        # Busy: nothing journaled yet, but alive, as a collector with a backlog says it.
        busy_until = time.monotonic() + BUSY_SECONDS
        while time.monotonic() < busy_until:
            read()
            router.send_multipart([routing_id, encode_ack(0)])
            assert process.poll() is None, process.communicate()[1].decode()
            router.poll(100)  # the pace of the repeats (what arrives is read on the next turn)
        assert sorted(frames) == list(range(1, max(frames) + 1))
        router.send_multipart([routing_id, encode_ack(max(frames))])
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        router.close()
    assert process.returncode == 0
    assert err.decode() == ""  # nothing lost, nothing spooled, no thread left behind
    values = [v for f in frames.values() for r in f.records if type(r).__name__ == "StatRecord" for v in r.values]
    assert values == [float(i) for i in range(1000)]
