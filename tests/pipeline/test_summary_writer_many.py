"""Many processes started together on one SummaryWriter log_dir: every value of every step lands.

Processes join in whatever order they start: one that makes its writer after others
closed a step adds its values of that step as a second summary at that step.  So per
step, the summaries' ``num`` add up to the number of processes, in stats.jsonl and in
TensorBoard (read with its own reader; a histogram point carries its count).
"""

from __future__ import annotations

import collections
import contextlib
import json
import subprocess
import sys
import time

import numpy
import pytest

from chaos_helpers import chaos_run
from collector_helpers import journal_summaries
from summary_writer_helpers import CHILD, child_env, read_jsonl, read_run, start_collector, stop
from waiting import wait_for

STEPS = 20


@pytest.mark.timeout(600)
@pytest.mark.parametrize("delay", [0.0, 0.5], ids=["at-once", "delayed"])
@pytest.mark.parametrize("processes", [4, 16, 64])
def test_every_value_of_every_process_lands(tmp_path, processes, delay):
    log_dir = tmp_path / "runs" / "multi"
    collector = start_collector(str(tmp_path), "runs", plugins="tensorboard,jsonl")
    children = []
    try:
        children = [subprocess.Popen([sys.executable, CHILD, "many", str(log_dir), str(i), str(delay), str(STEPS)],
                                     env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                    for i in range(processes)]
        for child in children:
            out, _ = child.communicate(timeout=300)
            assert child.returncode == 0, out.decode(errors="replace")
            assert b"not delivered" not in out, out.decode(errors="replace")
        stop(collector)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        collector.close()

    expected = {step: sum(i * 1000.0 + step for i in range(processes)) for step in range(STEPS)}
    lines = [s for s in read_jsonl(str(tmp_path / "runs" / "stats.jsonl")) if s.get("category") == "multi"]
    assert len({line["journal_position"] for line in lines}) == len(lines)  # no summary written twice
    num, total = collections.Counter(), collections.Counter()
    for line in lines:
        x, h = line["values"]["charts/x"], line["values"]["charts/h"]
        assert (x["num"], x["sum"], x["min"], x["max"]) == (h["num"], h["sum"], h["min"], h["max"]), line
        num[line["step"]] += x["num"]
        total[line["step"]] += x["sum"]
    assert dict(num) == {step: processes for step in range(STEPS)}
    assert dict(total) == expected

    seen = read_run(str(log_dir))
    counts, sums = collections.Counter(), collections.Counter()
    for step, histogram in seen["histograms"]["charts/h"]:
        counts[step] += histogram.num
        sums[step] += histogram.sum
    assert dict(counts) == {step: processes for step in range(STEPS)}
    assert dict(sums) == expected
    # One TensorBoard point per summary, the mean of that summary's values (a float32 in the event).
    points = sorted(seen["scalars"]["charts/x"])
    assert points == sorted((line["step"], float(numpy.float32(line["values"]["charts/x"]["mean"]))) for line in lines)


def test_workers_killed_mid_run_write_nothing_twice_and_keep_every_late_summary(tmp_path):
    """16 processes at once (late joiners make second summaries at written steps) while the
    tensorboard, jsonl and gauges workers are SIGKILLed every 200 ms: each journaled summary is
    in stats.jsonl and in TensorBoard exactly once, and counted once in timers.json."""
    processes, steps = 16, 60
    plugins = ["tensorboard", "jsonl", "gauges"]
    with chaos_run(tmp_path, plugins, ["tensorboard.options.layout=torch"]) as run:
        for name in plugins:
            run.wait_plugin(name, lambda p: p["state"] == "READY", what=f"{name} ready")
        log_dir = run.path("multi")

        def start(index: int) -> None:
            run.trainers.append(subprocess.Popen([sys.executable, CHILD, "many", log_dir, str(index), "0", str(steps)],
                                                 env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT))

        for index in range(processes - 1):
            start(index)
        # The last process starts once steps are written: its values of those steps come late.
        def written() -> bool:
            with contextlib.suppress(FileNotFoundError), open(run.path("stats.jsonl"), encoding="utf-8") as handle:
                return '"category":"multi"' in handle.read()
            return False

        wait_for(written, 60, lambda: "a step written:\n" + run.collector.log()[-3000:])
        start(processes - 1)
        killed = collections.Counter()
        while run.trainers_running():
            for name in plugins:
                killed[name] += run.kill_worker(name) is not None
            time.sleep(0.2)
        for child in run.trainers:
            out, _ = child.communicate(timeout=60)
            assert child.returncode == 0, out.decode(errors="replace")
        assert all(killed[name] for name in plugins), f"the run ended before every worker was killed: {killed}"
        run.wait_caught_up(plugins)
        journaled = sorted((step, len(values["charts/h"][1]), sum(values["charts/h"][1]))
                           for category, step, values in journal_summaries(run.layout.journal_dir)
                           if category == "multi")
        lines = [s for s in read_jsonl(run.path("stats.jsonl")) if s.get("category") == "multi"]
        histograms = read_run(log_dir)["histograms"]["charts/h"]
        stop(run.collector)  # the gauges writer rewrites timers.json at its close
        with open(run.path("run_logs", "timers.json"), encoding="utf-8") as handle:
            gauge = json.load(handle)["gauges"]["multi.charts.x.mean"]

    assert len(journaled) > steps, "no late summary: the test did not make the case it is about"
    num = collections.Counter()
    for step, count, _ in journaled:
        num[step] += count
    assert dict(num) == {step: processes for step in range(steps)}
    assert len({line["journal_position"] for line in lines}) == len(lines)
    assert sorted((l["step"], l["values"]["charts/h"]["num"], l["values"]["charts/h"]["sum"]) for l in lines) \
        == journaled
    assert sorted((step, int(h.num), h.sum) for step, h in histograms) == journaled
    assert gauge["count"] == len(journaled), gauge
