"""Issue 4's end-to-end proof: a real collector, real trainer processes, real worker hosts, and plugins
that fail in every way the zoo knows — training never notices, every other plugin's output stays exact."""

from __future__ import annotations

import collections
import time

import pytest

from chaos_helpers import (
    ChaosRun,
    chaos_run,
    example_summaries,
    expected_summaries,
    read_jsonl,
    stats_jsonl_summaries,
    tensorboard_steps,
    zoo_summaries,
)

TRAINER_CALL_BOUND = 1.0
"""Seconds no single add_stat/write_stats call may take.  Generous on purpose: a
training call that *waited on a plugin* would wait for seconds (the sleeping
plugin takes 2 s per summary, a hung one forever), while a loaded 2-core test
machine can stall a process for tens of milliseconds.  Not a speed assertion."""


def assert_exact(got, want, what):
    """``got`` (category, step, values) lines hold every wanted summary exactly once, and nothing else."""
    counts = collections.Counter((c, s) for c, s, _ in got)
    duplicated = sorted(k for k, n in counts.items() if n > 1)
    missing = sorted(set(want) - set(counts))
    extra = sorted(set(counts) - set(want))
    assert not duplicated and not missing and not extra, (what, duplicated[:5], missing[:5], extra[:5])
    for category, step, values in got:
        assert values == want[(category, step)], (what, category, step)


def assert_at_least_once(got, want, what):
    seen = {(c, s): v for c, s, v in got}
    missing = sorted(set(want) - set(seen))
    assert not missing, (what, len(missing), missing[:5])
    for key, values in seen.items():
        if key in want:
            assert values == want[key], (what, key)


def assert_stats_jsonl_exact(run: ChaosRun, want):
    got = stats_jsonl_summaries(run.path("stats.jsonl"))
    counts = collections.Counter((c, s) for c, s, _ in got)
    assert all(n == 1 for n in counts.values()), [k for k, n in counts.items() if n > 1][:5]
    assert set(counts) == set(want), (sorted(set(want) - set(counts))[:5], sorted(set(counts) - set(want))[:5])
    for category, step, values in got:
        expected = want[(category, step)]
        assert set(values) == set(expected)
        for key, (num, total) in values.items():
            assert num == len(expected[key]) and total == pytest.approx(sum(expected[key])), (category, step, key)


def assert_tensorboard_exact(run: ChaosRun, trainers: int, steps: int):
    for index in range(trainers):
        shown, raw = tensorboard_steps(run.path(f"T{index}"), "reward")
        assert shown == list(range(1, steps + 1)), (index, shown[:10])
        assert sorted(raw) == list(range(1, steps + 1)), (index, collections.Counter(raw).most_common(3))


def assert_trainers_never_waited(reports):
    # Every trainer process finished and flushed; none of its calls waited on a plugin.
    assert reports and all(r["calls"] > 0 for r in reports)
    assert max(r["max_call"] for r in reports) < TRAINER_CALL_BOUND, reports


# --- 6. an unmodified ML-Agents-style plugin ------------------------------------------------------


def test_unmodified_mlagents_style_plugins_receive_every_summary(tmp_path):
    trainers, steps, per_step = 2, 40, 5
    want = expected_summaries(trainers, steps, per_step)
    with chaos_run(tmp_path, ["example", "mlagents_style", "good"]) as run:
        run.start_trainers(trainers, steps, per_step)
        assert_trainers_never_waited(run.finish_trainers())
        run.wait_caught_up(["example", "mlagents_style", "good"])
        example = example_summaries(run.path("example_plugin.txt"))
        assert sorted(example) == sorted(want), "the example plugin: every summary exactly once"
        styled = [x for x in read_jsonl(run.path("zoo", "mlagents_style.jsonl")) if "step" in x]
        assert sorted((x["category"], x["step"]) for x in styled) == sorted(want)
        for line in styled:
            values = want[(line["category"], line["step"])]
            assert line["means"]["reward"] == pytest.approx(sum(values["reward"]) / len(values["reward"]))
            assert line["sums"] == {"count": 1.0}  # SUM aggregation seen through mlagents' enum
        assert_exact(zoo_summaries(run.path("zoo", "good.jsonl")), want, "good")
        assert all(p["restarts"] == 0 for p in run.status()["plugins"])
