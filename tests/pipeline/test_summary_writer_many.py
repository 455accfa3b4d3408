"""Many processes started together on one SummaryWriter log_dir: every value of every step lands.

Processes join in whatever order they start: one that makes its writer after others
closed a step adds its values of that step as a second summary at that step.  So per
step, the summaries' ``num`` add up to the number of processes, in stats.jsonl and in
TensorBoard (read with its own reader; a histogram point carries its count).
"""

from __future__ import annotations

import collections
import subprocess
import sys

import numpy
import pytest

from summary_writer_helpers import CHILD, child_env, read_jsonl, read_run, start_collector, stop

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
