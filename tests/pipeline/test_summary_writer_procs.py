"""Four real processes log one tag at the same steps under one log_dir: one point per step, num == 4."""

from __future__ import annotations

import os
import subprocess
import sys

from summary_writer_helpers import CHILD, child_env, read_jsonl, read_run, run_child, start_collector, stop
from waiting import wait_for

RANKS = 4
STEPS = 25


def test_four_processes_make_one_curve(tmp_path):
    log_dir = tmp_path / "runs" / "shared"
    barrier = str(tmp_path / "go")
    collector = start_collector(str(tmp_path), "runs", plugins="tensorboard,jsonl,recorder")
    children = []
    try:
        children = [subprocess.Popen([sys.executable, CHILD, "rank", str(log_dir), str(i), barrier, str(STEPS)],
                                     env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                    for i in range(RANKS)]
        # Every rank has joined (its SummaryWriter returned with its join acked) before any logs a value.
        wait_for(lambda: all(os.path.exists(f"{barrier}.{i}") for i in range(RANKS)), 60, "every rank joined")
        open(barrier, "w").close()
        for child in children:
            out, _ = child.communicate(timeout=60)
            assert child.returncode == 0, out.decode(errors="replace")
        stop(collector)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        collector.close()

    summaries = [s for s in read_jsonl(str(tmp_path / "runs" / "stats.jsonl")) if s.get("category") == "shared"]
    assert [s["step"] for s in summaries] == list(range(STEPS))
    for s in summaries:
        reward = s["values"]["reward"]
        assert reward["num"] == RANKS, s
        assert reward["min"] == s["step"] and reward["max"] == 300 + s["step"]
    recorded = [line for line in read_jsonl(str(tmp_path / "runs" / "zoo" / "recorder.jsonl"))
                if line["call"] == "write_stats"]
    assert [sorted(line["values"]["reward"]) for line in recorded] == \
        [[float(i * 100 + step) for i in range(RANKS)] for step in range(STEPS)]
    points = read_run(str(log_dir))["scalars"]["reward"]
    assert [step for step, _ in points] == list(range(STEPS))
    assert [value for _, value in points] == [150.0 + step for step in range(STEPS)]  # the mean of the 4 ranks


def test_exit_closes_the_open_step(tmp_path):
    collector = start_collector(str(tmp_path), "runs", plugins="jsonl")
    try:
        run_child("no_close", str(tmp_path / "runs" / "quit"))
        stop(collector)
    finally:
        collector.close()
    summaries = [s for s in read_jsonl(str(tmp_path / "runs" / "stats.jsonl")) if s.get("category") == "quit"]
    assert [(s["step"], s["values"]["loss"]["mean"]) for s in summaries] == [(0, 0.0), (1, 1.0), (2, 2.0)]
