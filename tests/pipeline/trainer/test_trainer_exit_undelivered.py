"""A trainer that exits while no collector takes its data spools it and says where in one line, nothing else."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import zmq

from waiting import wait_for

TRAINER = """
import sys
from statbus.pipeline import StatsReporter, configure
configure(run_id="r", results_dir=sys.argv[1], address=sys.argv[2], linger=1.0)
reporter = StatsReporter("C")
for i in range(300_000):   # big frames: the zero-copy sends that failed at exit
    reporter.add_stat("k", float(i))
    if i % 30_000 == 29_999:
        reporter.write_stats(i)
"""

LINE = re.compile(
    r"^statbus: 300000 values and 10 summaries recorded by this process wait in the spool (?P<dir>\S+) "
    r"\(1 files, \d+\.\d MiB\): the collector at ipc://\S+ did not acknowledge them within 1 s "
    r"\(.*statbus status.*\); a collector of this run folder on this host takes them in$"
)


@pytest.mark.parametrize("peer", ["never acks", "nobody"])
def test_a_trainer_exiting_with_undelivered_data_prints_one_clear_line(tmp_path, peer, context):
    address = f"ipc://{tmp_path}/data"
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    if peer == "never acks":
        router.bind(address)  # reads every frame (a collector whose journal cannot take them)
    env = dict(os.environ, STATBUS_AUTOSTART="0")
    process = subprocess.Popen(
        [sys.executable, "-c", TRAINER, str(tmp_path / "results"), address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    frames = 0
    try:
        def exited() -> bool:
            nonlocal frames
            while peer == "never acks" and router.poll(20):
                router.recv_multipart()
                frames += 1
            return process.poll() is not None

        wait_for(exited, 60, "the trainer's exit")
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        router.close()
    assert process.returncode == 0
    lines = err.decode().splitlines()
    assert len(lines) == 1 and LINE.match(lines[0]), err.decode()
    spool = tmp_path / "results" / "r" / "statbus" / "spool"
    assert LINE.match(lines[0])["dir"] == str(spool)
    assert [path.name.endswith(".spool") for path in spool.iterdir()] == [True]
    assert (frames > 0) == (peer == "never acks")
