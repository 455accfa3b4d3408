"""Many trainer processes at once, on a 2-core machine: every value arrives exactly once.

N processes are forked together; each records 2,000 steps of 10 keys (20,000 values) and
exits through ``sys.exit`` (its atexit hook sends what is left and waits for the acks);
process 0 closes the period every 100 steps, and the parent closes the last one once
every child has exited.  Nobody starts the collector: the trainers start it on demand,
while all of them record and exit, so their last frames meet a collector that is just
starting and then works through a backlog of 128 processes' frames.  Every value of
every process must be in ``stats.jsonl`` once, and no process may say it lost any.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, Tuple

import pytest

from collector_helpers import REPO, end_daemon
from statbus.pipeline.control import control_request
from statbus.pipeline.collector.lifecycle.daemon import wait_for_exit
from statbus.pipeline.collector.lifecycle.pidfile import running_pid
from statbus.pipeline.layout import RunLayout
from waiting import wait_for

STEPS = 2000
KEYS = 10
LAST_STEP = STEPS  # the parent's closing write_stats

TRAINERS = r"""
import json, os, sys
n, results = int(sys.argv[1]), sys.argv[2]
from statbus.pipeline import StatsReporter, configure, flush
configure(run_id="many", results_dir=results, collector_args=("--plugins", "jsonl"))
go_read, go_write = os.pipe()
children = []
for index in range(n):
    pid = os.fork()
    if pid == 0:
        os.close(go_write)
        os.read(go_read, 1)  # all start together
        reporter = StatsReporter("Many")
        for step in range(STEPS):
            for key in range(KEYS):
                reporter.add_stat(f"k{key}", index * 10_000.0 + step)
            if index == 0 and step % 100 == 99:
                reporter.write_stats(step)
        sys.exit(0)  # atexit: the rest is sent and waited for
    children.append(pid)
os.close(go_read)
os.close(go_write)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
StatsReporter("Many").write_stats(LAST_STEP)  # closes what the children recorded after process 0's last write
print(json.dumps({"codes": codes, "flushed": flush(120)}))
""".replace("STEPS", str(STEPS)).replace("KEYS", str(KEYS)).replace("LAST_STEP", str(LAST_STEP))


def _totals(path: str) -> Tuple[Dict[str, Tuple[int, float]], list]:
    """``{key: (values, sum)}`` over every summary line of ``stats.jsonl``, and the steps in order."""
    totals: Dict[str, Tuple[int, float]] = {}
    steps = []
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return totals, steps
    for line in lines:
        if "step" not in line:
            continue
        steps.append(line["step"])
        for key, value in line["values"].items():
            num, total = totals.get(key, (0, 0.0))
            totals[key] = (num + value["num"], total + value["sum"])
    return totals, steps


@pytest.mark.parametrize("n", [1, 8, 128])
def test_every_value_of_many_trainer_processes_arrives_once(tmp_path, n):
    layout = RunLayout(str(tmp_path / "results"), "many")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONWARNINGS="error")
    for name in ("STATBUS_AUTOSTART", "STATBUS_CONFIG", "STATBUS_ADDRESS", "STATBUS_RUN_ID", "STATBUS_RESULTS_DIR"):
        env.pop(name, None)
    try:
        done = subprocess.run([sys.executable, "-c", TRAINERS, str(n), layout.results_dir],
                              capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        # No process lost anything, none left its sender running, nothing warned.
        assert done.stderr == ""
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report == {"codes": [0] * n, "flushed": True}
        path = os.path.join(layout.run_dir, "stats.jsonl")
        # The parent's closing summary is the journal's last: once it is written, everything is.
        wait_for(lambda: LAST_STEP in _totals(path)[1], 120, what="the closing summary in stats.jsonl")
        totals, steps = _totals(path)
        assert steps == [*range(99, STEPS, 100), LAST_STEP]
        per_key = (n * STEPS, float(sum(index * 10_000 * STEPS + STEPS * (STEPS - 1) // 2 for index in range(n))))
        assert totals == {f"k{key}": per_key for key in range(KEYS)}
        pid = running_pid(layout.pid_file)
        control_request(layout.control_address, {"op": "stop", "timeout": 30}, timeout=10)
        assert pid is None or wait_for_exit(pid, 60)
    finally:
        end_daemon(layout)
