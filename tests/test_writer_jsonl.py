"""The jsonl writer: one valid JSON object per summary and per property, never twice."""

from __future__ import annotations

import json
import math

import pytest

from statbus.plugins import RunOptions, StatsAggregationMethod, StatsPropertyType, StatsSummary
from statbus.plugins.jsonl import FILE_NAME, JsonlWriter, get_jsonl_writer

A = StatsAggregationMethod


def read_lines(path) -> list:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text == "" or text.endswith("\n")
    # json.loads accepts NaN/Infinity; a strict reader does not.
    return [json.loads(line, parse_constant=pytest.fail) for line in text.splitlines()]


def test_summary_line_fields(tmp_path):
    path = tmp_path / "stats.jsonl"
    writer = JsonlWriter(str(path), start_time=0.0)
    writer.write_stats(
        "3DBall",
        {
            "Environment/Cumulative Reward": StatsSummary([1.0, 2.0, 3.0], A.AVERAGE),
            "Env/Count": StatsSummary([2.0, 5.0], A.SUM),
        },
        1000,
    )
    writer.close()
    [line] = read_lines(path)
    assert line["category"] == "3DBall" and line["step"] == 1000
    assert isinstance(line["time"], float) and line["time"] > 0
    reward = line["values"]["Environment/Cumulative Reward"]
    assert reward == {
        "aggregation": "AVERAGE",
        "num": 3,
        "sum": 6.0,
        "mean": 2.0,
        "std": pytest.approx(math.sqrt(2 / 3)),
        "min": 1.0,
        "max": 3.0,
        "aggregated_value": 2.0,
    }
    count = line["values"]["Env/Count"]
    assert count["aggregation"] == "SUM" and count["aggregated_value"] == 7.0


def test_non_finite_numbers_are_null_and_every_line_is_valid_json(tmp_path):
    path = tmp_path / "stats.jsonl"
    writer = JsonlWriter(str(path), start_time=0.0)
    writer.write_stats(
        "c",
        {
            "nan": StatsSummary([math.nan, 1.0], A.HISTOGRAM),
            "inf": StatsSummary([math.inf], A.SUM),
            "empty": StatsSummary.empty(),
        },
        1,
    )
    writer.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"lr": math.nan, "layers": (1, 2), "kind": A.SUM})
    writer.close()
    summary, prop = read_lines(path)
    assert summary["values"]["nan"]["mean"] is None
    assert summary["values"]["nan"]["min"] == 1.0 and summary["values"]["nan"]["max"] == 1.0
    assert summary["values"]["inf"]["sum"] is None and summary["values"]["inf"]["min"] is None
    assert summary["values"]["empty"]["num"] == 0 and summary["values"]["empty"]["mean"] is None
    assert prop == {"category": "c", "time": prop["time"], "property": "hyperparameters", "value": {"lr": None, "layers": [1, 2], "kind": 2}}


def test_property_lines(tmp_path):
    path = tmp_path / "stats.jsonl"
    writer = JsonlWriter(str(path), start_time=0.0)
    writer.add_property("c", StatsPropertyType.SELF_PLAY, True)
    writer.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 1})
    writer.close()
    lines = read_lines(path)
    assert [(l["property"], l["value"]) for l in lines] == [("selfplay", True), ("hyperparameters", {"a": 1})]
    assert all("step" not in l for l in lines)


def test_idempotent_per_category_and_step_across_restart(tmp_path):
    path = tmp_path / "stats.jsonl"
    values = {"k": StatsSummary([1.0], A.AVERAGE)}
    writer = JsonlWriter(str(path), start_time=0.0)
    writer.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 1})
    writer.write_stats("c", values, 10)
    writer.write_stats("c", values, 10)  # the same summary again
    writer.write_stats("c", values, 5)  # older than the last: a replay
    writer.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 1})
    writer.write_stats("d", values, 10)  # another category has its own steps
    writer.flush()
    assert len(read_lines(path)) == 3

    # A restarted worker (new instance, same run) is caught up from the journal.
    restarted = JsonlWriter(str(path), start_time=0.0)
    restarted.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 1})
    restarted.write_stats("c", values, 10)
    restarted.write_stats("d", values, 10)
    restarted.write_stats("c", values, 20)
    restarted.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 2})
    restarted.close()
    writer.close()
    lines = read_lines(path)
    assert [(l["category"], l.get("step"), l.get("value")) for l in lines] == [
        ("c", None, {"a": 1}),
        ("c", 10, None),
        ("d", 10, None),
        ("c", 20, None),
        ("c", None, {"a": 2}),
    ]


def test_lines_of_an_earlier_run_are_not_replays(tmp_path):
    path = tmp_path / "stats.jsonl"
    old = JsonlWriter(str(path), start_time=0.0)
    old.write_stats("c", {"k": StatsSummary([1.0], A.AVERAGE)}, 10)
    old.close()
    # A later run appends, and its step 10 is new.
    new = JsonlWriter(str(path), start_time=read_lines(path)[0]["time"] + 1)
    new.write_stats("c", {"k": StatsSummary([2.0], A.AVERAGE)}, 10)
    new.close()
    assert [l["values"]["k"]["mean"] for l in read_lines(path)] == [1.0, 2.0]


def test_torn_last_line_is_cut_at_restart(tmp_path):
    path = tmp_path / "stats.jsonl"
    writer = JsonlWriter(str(path), start_time=0.0)
    writer.write_stats("c", {"k": StatsSummary([1.0], A.AVERAGE)}, 1)
    writer.close()
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"category": "c", "step": 2, "ti')  # a crash mid-write
    restarted = JsonlWriter(str(path), start_time=0.0)
    restarted.write_stats("c", {"k": StatsSummary([2.0], A.AVERAGE)}, 2)
    restarted.close()
    assert [l["step"] for l in read_lines(path)] == [1, 2]


def test_registration_writes_in_the_run_directory(tmp_path):
    options = RunOptions.create("r", results_dir=str(tmp_path)).with_plugin_options({"flush_secs": 0})
    [writer] = get_jsonl_writer(options)
    try:
        writer.write_stats("c", {"k": StatsSummary([1.0], A.AVERAGE)}, 1)
        # flush_secs 0: the line is in the file without a flush() call.
        assert [l["step"] for l in read_lines(tmp_path / "r" / FILE_NAME)] == [1]
    finally:
        writer.close()
