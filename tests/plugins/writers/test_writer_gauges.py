"""The gauges writer keeps ML-Agents' timers.json gauges current, atomically."""

from __future__ import annotations

import json
import math
import os

import pytest

from statbus.plugins import RunOptions, StatsAggregationMethod, StatsSummary
from delivering import write_at
from statbus.plugins.writers.gauges import FILE_NAME, GaugesWriter, get_gauges_writer, sanitize_gauge_name

A = StatsAggregationMethod


def read(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.loads(f.read(), parse_constant=pytest.fail)


def test_gauge_names_follow_ml_agents():
    assert sanitize_gauge_name("3DBall.Environment/Cumulative Reward.mean") == "3DBall.Environment.CumulativeReward.mean"


def test_gauges_value_min_max_count(tmp_path):
    path = tmp_path / "run_logs" / "timers.json"
    writer = GaugesWriter(str(path), start_time=1.0, flush_secs=3600)
    writer.write_stats("3DBall", {"Environment/Cumulative Reward": StatsSummary([1.0, 3.0], A.AVERAGE)}, 1)
    writer.write_stats("3DBall", {"Environment/Cumulative Reward": StatsSummary([0.5], A.AVERAGE)}, 2)
    writer.write_stats("3DBall", {"Environment/Cumulative Reward": StatsSummary([4.0], A.AVERAGE)}, 3)
    assert not path.exists()  # not yet: the rewrite is periodic or on flush
    writer.flush()
    tree = read(path)
    assert tree["name"] == "root"
    assert tree["gauges"]["3DBall.Environment.CumulativeReward.mean"] == {"value": 4.0, "min": 0.5, "max": 4.0, "count": 3}
    assert tree["gauges"]["3DBall.Environment.CumulativeReward.sum"] == {"value": 4.0, "min": 0.5, "max": 4.0, "count": 3}
    assert tree["metadata"]["timer_format_version"]
    writer.close()


def test_nan_is_skipped(tmp_path):
    path = tmp_path / "timers.json"
    writer = GaugesWriter(str(path), start_time=1.0)
    writer.write_stats("c", {"k": StatsSummary([math.nan], A.AVERAGE), "e": StatsSummary.empty()}, 1)
    writer.write_stats("c", {"k": StatsSummary([2.0], A.AVERAGE), "i": StatsSummary([math.inf], A.SUM)}, 2)
    writer.close()
    gauges = read(path)["gauges"]
    assert gauges["c.k.mean"] == {"value": 2.0, "min": 2.0, "max": 2.0, "count": 1}
    # The empty summary's sum is 0, a real number; its mean is NaN and skipped.
    assert "c.e.mean" not in gauges and gauges["c.e.sum"]["value"] == 0.0
    assert "c.i.sum" not in gauges


def test_rewrite_is_atomic_and_periodic(tmp_path):
    path = tmp_path / "timers.json"
    writer = GaugesWriter(str(path), start_time=1.0, flush_secs=0)
    writer.write_stats("c", {"k": StatsSummary([1.0], A.AVERAGE)}, 1)
    # flush_secs 0: written while the run goes on, not only at close.
    assert read(path)["gauges"]["c.k.mean"]["value"] == 1.0
    inode = os.stat(path).st_ino
    writer.write_stats("c", {"k": StatsSummary([2.0], A.AVERAGE)}, 2)
    # os.replace of a temporary file: a new inode, never a half-written file.
    assert os.stat(path).st_ino != inode
    assert read(path)["gauges"]["c.k.mean"]["value"] == 2.0
    assert [n for n in os.listdir(tmp_path) if n != "timers.json"] == []
    writer.close()


def test_idempotent_across_restart(tmp_path):
    path = tmp_path / "timers.json"
    values = {"k": StatsSummary([1.0], A.AVERAGE)}
    writer = GaugesWriter(str(path), start_time=5.0)
    write_at(writer, 100, "c", values, 10)
    write_at(writer, 100, "c", values, 10)  # the same entry again: a replay
    write_at(writer, 200, "c", values, 10)  # a second summary at step 10 (late values): counted
    writer.close()
    assert read(path)["gauges"]["c.k.mean"]["count"] == 2
    assert read(path)["metadata"]["statbus_journal_position"] == 200

    restarted = GaugesWriter(str(path), start_time=5.0)
    write_at(restarted, 200, "c", values, 10)  # caught up from the journal: a replay
    write_at(restarted, 300, "c", {"k": StatsSummary([7.0], A.AVERAGE)}, 3)
    restarted.close()
    assert read(path)["gauges"]["c.k.mean"] == {"value": 7.0, "min": 1.0, "max": 7.0, "count": 3}


def test_new_run_starts_afresh_and_resume_carries_on(tmp_path):
    path = tmp_path / "timers.json"
    values = {"k": StatsSummary([1.0], A.AVERAGE)}
    first = GaugesWriter(str(path), start_time=5.0)
    write_at(first, 100, "c", values, 10)
    first.close()

    fresh = GaugesWriter(str(path), start_time=6.0)
    write_at(fresh, 100, "c", values, 10)
    fresh.close()
    assert read(path)["gauges"]["c.k.mean"]["count"] == 1

    resumed = GaugesWriter(str(path), start_time=7.0, resume=True)
    write_at(resumed, 100, "c", values, 10)  # a resumed run's entry is not a replay of the last run's
    resumed.close()
    assert read(path)["gauges"]["c.k.mean"]["count"] == 2


def test_registration_writes_run_logs_timers_json(tmp_path):
    options = RunOptions.create("r", results_dir=str(tmp_path))
    [writer] = get_gauges_writer(options)
    writer.write_stats("c", {"k": StatsSummary([1.0], A.AVERAGE)}, 1)
    writer.close()
    assert read(tmp_path / "r" / "run_logs" / FILE_NAME)["gauges"]["c.k.mean"]["value"] == 1.0
