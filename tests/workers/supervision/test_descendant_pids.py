"""A worker's descendants from /proc/<pid>/task/<tid>/children, as psutil's children() finds them."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from statbus.workers.supervision.processes import ResourceSampler, descendant_pids
from waiting import wait_for


def test_descendants_match_psutil_and_count_in_the_sampled_rss():
    # A parent with a child that has a child of its own.
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', "
            "'import subprocess, sys, time; q = subprocess.Popen([\"sleep\", \"30\"]); time.sleep(30)']); "
            "time.sleep(30)")
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        def started() -> list:
            found = sorted(c.pid for c in psutil.Process(parent.pid).children(recursive=True))
            return found if len(found) >= 2 else []

        expected = wait_for(started, 20, what="the child and the grandchild", interval=0.05)
        assert len(expected) == 2
        assert sorted(descendant_pids(parent.pid)) == expected
        sampler = ResourceSampler(parent.pid)
        sampler.sample(0.0, 1.0)
        own = psutil.Process(parent.pid).memory_info().rss / (1 << 20)
        assert sampler.rss_mb > own
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()


def test_no_descendants_and_gone_process():
    assert descendant_pids(os.getpid()) is not None
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    assert descendant_pids(finished.pid) == []
