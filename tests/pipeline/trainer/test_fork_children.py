"""multiprocessing children started with ``fork`` end with ``os._exit``: what they recorded still arrives.

And no thread of statbus runs in the parent at a fork, which is what Python >= 3.12's
DeprecationWarning about forking a multi-threaded process counts (OS threads, read from
/proc/self/stat): the trainer below counts them the same way at every fork.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from collector_helpers import REPO, journal_summaries

TRAINER = r"""
import json, os, sys
threads_at_fork = []

def count_threads():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                threads_at_fork.append(int(line.split()[1]))

# Registered before statbus: before-fork hooks run in reverse order, so this one runs last,
# where Python 3.12 makes its check (after every hook, at the fork itself).
os.register_at_fork(before=count_threads)

import multiprocessing
from statbus.pipeline import StatsReporter, configure, flush

configure(run_id="r", results_dir=sys.argv[1])

def work(n):
    reporter = StatsReporter(f"W{n}")
    for value in range(1000):
        reporter.add_stat("k", float(value))
    reporter.write_stats(n)
    # returning ends the child with os._exit: no atexit, nothing sent since the last batch

parent = StatsReporter("P")
parent.add_stat("k", 1.0)
assert flush(30)  # the parent's sender is running, connected
context = multiprocessing.get_context("fork")
children = [context.Process(target=work, args=(n,)) for n in range(3)]
for child in children:
    child.start()
for child in children:
    child.join()
pool = context.Pool(2)
pool.map(work, [10, 11, 12, 13])
pool.close()
pool.join()
parent.add_stat("k", 2.0)
parent.write_stats(1)
print(json.dumps({"threads_at_fork": threads_at_fork, "exitcodes": [c.exitcode for c in children],
                  "flushed": flush(30)}))
"""


@pytest.fixture
def collector(collectors):
    return collectors(run_id="r", extra=["--no-plugins"])


def test_fork_children_deliver_what_they_recorded_and_no_sender_thread_runs_at_a_fork(collector):
    env = dict(os.environ, STATBUS_AUTOSTART="0", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["PYTHONWARNINGS"] = "error"
    done = subprocess.run(
        [sys.executable, "-c", TRAINER, collector.layout.results_dir],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no warning, no error line, from the parent or any child
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["exitcodes"] == [0, 0, 0] and report["flushed"] is True
    summaries = {(category, step): data["k"] for category, step, data in journal_summaries(collector.layout.journal_dir)}
    for n in (0, 1, 2, 10, 11, 12, 13):
        assert summaries.pop((f"W{n}", n)) == (0, [float(v) for v in range(1000)])
    assert summaries == {("P", 1): (0, [1.0, 2.0])}  # the parent's sender went on across the forks
    assert report["threads_at_fork"] == [1] * 5  # 3 processes + 2 pool workers, each forked alone
