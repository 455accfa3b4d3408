"""The learn figure's statistics and its target mark: logic on made-up runs, no training."""

from __future__ import annotations

import math

import pytest

from statbus.pipeline.bench.figures.learn import pair_statistics, paired_ratio_estimate
from statbus.pipeline.bench.learn_env import timed_call, wrapper_cpu_per_call
from statbus.pipeline.bench.report import learn_rows


def test_the_geometric_mean_of_pairs_weighs_a_slower_and_a_faster_pair_alike():
    mean, (low, high) = paired_ratio_estimate([0.5, 2.0])
    assert mean == pytest.approx(1.0)
    assert 0.5 <= low <= mean <= high <= 2.0


def test_identical_pairs_leave_no_doubt_and_spread_pairs_some():
    assert paired_ratio_estimate([0.98] * 6) == (pytest.approx(0.98), (pytest.approx(0.98), pytest.approx(0.98)))
    ratios = [1.27, 1.17, 0.99, 1.04, 0.91]
    mean, (low, high) = paired_ratio_estimate(ratios)
    assert mean == pytest.approx(math.exp(sum(map(math.log, ratios)) / len(ratios)))
    assert min(ratios) < low < mean < high < max(ratios)
    assert paired_ratio_estimate(ratios) == (mean, (low, high))  # seeded: the same pairs, the same interval


def _run(train_s, thread_cpu_s):
    return {"train_s": train_s, "train_thread_cpu_s": thread_cpu_s}


def _setup(plain_train_s, statbus_train_s, steps=1000):
    def side(train):
        return {"steps_per_s": steps / sorted(train)[len(train) // 2], "wall_s": 1.0, "training_process_cpu_s": 1.0,
                "training_thread_cpu_s": 1.0, "training_thread_waited_s": 0.1, "training_thread_run_delay_s": 0.01,
                "statbus_processes_cpu_s": 0.5}
    plain, statbus = side(plain_train_s), side(statbus_train_s)
    figure = {"plain": plain, "statbus": statbus, "speed_ratio": statbus["steps_per_s"] / plain["steps_per_s"]}
    figure.update(pair_statistics([_run(t, 0.9 * t) for t in plain_train_s],
                                  [_run(t, 0.9 * t) for t in statbus_train_s]))
    return figure


def test_a_pairs_speed_ratio_is_its_two_factors_and_the_hosts_drift_stays_in_the_cpu_one():
    # Pair 1: the host slowed the statbus run's thread by 30%; the thread ran 95% of the
    # loop's time under mlagents-learn and 93% under statbus.  Pair 2: the other way round.
    plain = [_run(10.0 / 0.95, 10.0), _run(13.0 / 0.95, 13.0)]
    statbus = [_run(13.0 / 0.93, 13.0), _run(10.0 / 0.93, 10.0)]
    stats = pair_statistics(plain, statbus)
    pairs = [p["train_s"] / s["train_s"] for p, s in zip(plain, statbus)]
    assert stats["paired_ratio_geomean"] == pytest.approx(math.sqrt(pairs[0] * pairs[1]))
    assert stats["paired_ratio_geomean"] == pytest.approx(
        stats["paired_thread_cpu_geomean"] * stats["paired_on_cpu_geomean"])
    assert stats["paired_thread_cpu_geomean"] == pytest.approx(1.0)
    assert stats["paired_thread_cpu_ci95"][0] < 0.9 and stats["paired_thread_cpu_ci95"][1] > 1.1
    assert stats["paired_on_cpu_geomean"] == pytest.approx(0.93 / 0.95)
    assert stats["paired_on_cpu_ci95"] == (pytest.approx(0.93 / 0.95), pytest.approx(0.93 / 0.95))


def _speed_mark(figure):
    (row,) = [r for r in learn_rows(figure) if r.target.startswith("≥ 0.97")]
    return row.passed


def test_the_speed_target_is_judged_within_pairs_not_on_the_ratio_of_medians():
    # Medians of runs taken minutes apart move with the host; each pair's two runs move alike.
    plain = [10.0, 12.0, 20.0, 11.0, 19.0]
    within = _setup(plain, [t * 1.01 for t in plain])
    assert _speed_mark({"default": dict(within, speed_ratio=0.90)}) is True
    slower = _setup(plain, [t * 1.05 for t in plain])
    assert _speed_mark({"default": dict(slower, speed_ratio=1.05)}) is False


def test_a_timed_writer_call_is_charged_its_cpu_and_passes_its_result_and_errors_on():
    spent = {"cpu_s": 0.0, "calls": 0}

    def busy(n):
        return sum(i * i for i in range(n))

    def raises():
        raise ValueError("a writer's own error")

    timed_busy = timed_call(busy, spent)
    assert timed_busy(200_000) == busy(200_000)
    assert spent["calls"] == 1 and spent["cpu_s"] > 0
    with pytest.raises(ValueError, match="own error"):
        timed_call(raises, spent)()
    assert spent["calls"] == 2
    assert 0 < wrapper_cpu_per_call() < spent["cpu_s"]


def test_the_writers_row_adds_up_every_writer_of_a_side():
    figure = _setup([10.0, 11.0], [10.0, 11.0])
    figure["writers_on_training_thread"] = {
        "plain": {"TensorboardWriter": {"cpu_s": 0.25, "calls": 100}, "ConsoleWriter": {"cpu_s": 0.125, "calls": 20}},
        "statbus": {"ForwardingWriter": {"cpu_s": 0.05, "calls": 9000}},
    }
    (row,) = [r for r in learn_rows({"default": figure}) if "writers on the training thread" in r.measure]
    assert row.statbus == "0.050 s, 9,000 calls (ForwardingWriter)"
    assert row.reference == "0.375 s, 120 calls (ConsoleWriter, TensorboardWriter)"
