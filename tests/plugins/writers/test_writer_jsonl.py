"""The jsonl writer: one valid JSON object per summary and per property, never twice."""

from __future__ import annotations

import json
import math

import pytest

from statbus.plugins import RunOptions, StatsAggregationMethod, StatsPropertyType, StatsSummary
from delivering import write_at
from statbus.plugins.writers.jsonl import FILE_NAME, JsonlWriter, get_jsonl_writer

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


def test_replays_are_dropped_by_journal_position_across_restart_late_summaries_are_not(tmp_path):
    path = tmp_path / "stats.jsonl"
    values = {"k": StatsSummary([1.0], A.AVERAGE)}
    writer = JsonlWriter(str(path), start_time=0.0)
    writer.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 1})
    write_at(writer, 100, "c", values, 10)
    write_at(writer, 200, "c", values, 10)  # a second summary at step 10 (late values): a line of its own
    write_at(writer, 200, "c", values, 10)  # the same entry again: a replay
    write_at(writer, 300, "c", values, 5)  # an older step in a newer entry: written
    writer.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 1})
    write_at(writer, 400, "d", values, 10)
    writer.flush()
    assert [line.get("journal_position") for line in read_lines(path)] == [None, 100, 200, 300, 400]

    # A restarted worker (new instance, same run) delivers again from its committed cursor.
    restarted = JsonlWriter(str(path), start_time=0.0)
    restarted.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 1})
    write_at(restarted, 300, "c", values, 5)
    write_at(restarted, 400, "d", values, 10)
    write_at(restarted, 500, "c", values, 10)
    restarted.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 2})
    restarted.close()
    writer.close()
    lines = read_lines(path)
    assert [(l["category"], l.get("step"), l.get("journal_position"), l.get("value")) for l in lines] == [
        ("c", None, None, {"a": 1}),
        ("c", 10, 100, None),
        ("c", 10, 200, None),
        ("c", 5, 300, None),
        ("d", 10, 400, None),
        ("c", 10, 500, None),
        ("c", None, None, {"a": 2}),
    ]


def test_outside_a_worker_host_every_summary_is_written(tmp_path):
    path = tmp_path / "stats.jsonl"
    writer = JsonlWriter(str(path), start_time=0.0)
    for step in (3, 3, 1):
        writer.write_stats("c", {"k": StatsSummary([float(step)], A.AVERAGE)}, step)
    writer.close()
    assert [(l["step"], "journal_position" in l) for l in read_lines(path)] == [(3, False), (3, False), (1, False)]


def test_lines_of_an_earlier_run_are_not_replays(tmp_path):
    path = tmp_path / "stats.jsonl"
    old = JsonlWriter(str(path), start_time=0.0)
    write_at(old, 100, "c", {"k": StatsSummary([1.0], A.AVERAGE)}, 10)
    old.close()
    # A later run (started over: its journal too) appends, and its entry at 100 is new.
    new = JsonlWriter(str(path), start_time=read_lines(path)[0]["time"] + 1)
    write_at(new, 100, "c", {"k": StatsSummary([2.0], A.AVERAGE)}, 10)
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


# -- the hand-written summary line -----------------------------------------------

from statbus.plugins.stats import summarize  # noqa: E402
from statbus.plugins.writers import jsonl  # noqa: E402

FROZEN_TIME = 1700000000.123456


def reference_summary_dict(summary: StatsSummary) -> dict:
    """The writer's entry for one key as it was built before the line was formatted by hand."""
    finite = [v for v in summary.full_dist if math.isfinite(v)]

    def finite_or_none(value):
        return value if math.isfinite(value) else None

    return {
        "aggregation": summary.aggregation_method.name,
        "num": summary.num,
        "sum": finite_or_none(summary.sum),
        "mean": finite_or_none(summary.mean),
        "std": finite_or_none(summary.std),
        "min": min(finite) if finite else None,
        "max": max(finite) if finite else None,
        "aggregated_value": finite_or_none(summary.aggregated_value),
    }


def reference_line(category, values, step, position=None) -> str:
    line = {"category": category, "step": step, "time": FROZEN_TIME}
    if position is not None:
        line["journal_position"] = position
    line["values"] = {key: reference_summary_dict(summary) for key, summary in values.items()}
    return json.dumps(line, allow_nan=False, separators=(",", ":"))


@pytest.fixture
def frozen_time(monkeypatch):
    import time as real_time
    import types

    monkeypatch.setattr(jsonl, "time", types.SimpleNamespace(time=lambda: FROZEN_TIME, monotonic=real_time.monotonic))


def raw_lines(path) -> list:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


# Every list StatsSummary reduces without raising; each is written under each aggregation.
DISTRIBUTIONS = [
    [],
    [1.0],
    [1.0, 2.0, 3.0],
    [2.0, 2.0],
    [-0.0],
    [-0.0, -0.0],
    [0.0, -0.0],
    [0.1, 0.2, 0.3],
    [1e16, 1.0, -1e16],
    [123456789.123456789, 1 / 3, -2.5e-7],
    [5e-324],
    [1e-320, -1e-320, 3e-321],
    [1.7976931348623157e308],
    [1e153, -1e153, 3.0],
    [math.nan],
    [math.nan, 1.0, -2.0],
    [math.inf],
    [-math.inf],
    [math.inf, 1.0, 2.0],
    [-math.inf, math.nan, 4.0],
    [3, 4],  # ints from a sloppy plugin stay ints for min/max
    [7],
]


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=repr)
def test_line_is_byte_for_byte_the_reference(tmp_path, frozen_time, dist):
    path = tmp_path / "stats.jsonl"
    writer = JsonlWriter(str(path), start_time=0.0)
    values = {f"k/{method.name}": StatsSummary(list(dist), method) for method in A}
    writer.write_stats("c", values, 7)
    writer.close()
    [text] = raw_lines(path)
    assert text == reference_line("c", values, 7)
    parsed = json.loads(text, parse_constant=pytest.fail)
    assert parsed["values"] == {key: reference_summary_dict(summary) for key, summary in values.items()}


def test_integral_floats_stay_floats(tmp_path, frozen_time):
    path = tmp_path / "stats.jsonl"
    writer = JsonlWriter(str(path), start_time=0.0)
    writer.write_stats("c", {"k": StatsSummary([1.0], A.AVERAGE), "z": StatsSummary([-0.0], A.SUM)}, 1)
    writer.close()
    [text] = raw_lines(path)
    assert '"k":{"aggregation":"AVERAGE","num":1,"sum":1.0,"mean":1.0,"std":0.0,"min":1.0,"max":1.0,"aggregated_value":1.0}' in text
    # fsum turns -0.0 into 0.0; min and max are the value as recorded.
    assert '"z":{"aggregation":"SUM","num":1,"sum":0.0,"mean":0.0,"std":0.0,"min":-0.0,"max":-0.0,"aggregated_value":0.0}' in text
    k = json.loads(text)["values"]["k"]
    assert all(type(k[field]) is float for field in ("sum", "mean", "std", "min", "max", "aggregated_value"))
    assert math.copysign(1.0, json.loads(text)["values"]["z"]["min"]) == -1.0


NAMES = ['quote"d', "back\\slash", "new\nline\ttab\x00nul\x1f", "caf\u00e9", "\u2028sep", "emoji \U0001f3af", "/", ""]


@pytest.mark.parametrize("name", NAMES, ids=repr)
def test_names_are_escaped_like_json_dumps(tmp_path, frozen_time, name):
    path = tmp_path / "stats.jsonl"
    writer = JsonlWriter(str(path), start_time=0.0)
    values = {name: StatsSummary([1.0, 2.0], A.SUM), f"Environment/{name}": StatsSummary([0.5], A.AVERAGE)}
    writer.write_stats(name, values, 3)
    writer.write_stats(name, values, 4)  # the second line comes from the cached encodings
    write_at(writer, 7, name, values, 5)
    writer.close()
    lines = raw_lines(path)
    assert lines == [reference_line(name, values, 3), reference_line(name, values, 4),
                     reference_line(name, values, 5, position=7)]
    assert all(line.isascii() for line in lines)
    parsed = json.loads(lines[1])
    assert parsed["category"] == name and set(parsed["values"]) == set(values)

    # Recovery reads the position back: a restarted writer drops the replay.
    restarted = JsonlWriter(str(path), start_time=0.0)
    write_at(restarted, 7, name, values, 5)
    write_at(restarted, 8, name, values, 6)
    restarted.close()
    assert [json.loads(line)["step"] for line in raw_lines(path)] == [3, 4, 5, 6]


def test_huge_finite_values_do_not_crash_the_writer(tmp_path):
    """math.fsum raises OverflowError on [1e308, 1e308], ``** 2`` on deviations past ~1.3e154,
    and ValueError on inf + -inf: the writer must write a valid line all the same."""
    path = tmp_path / "stats.jsonl"
    writer = JsonlWriter(str(path), start_time=0.0)
    writer.write_stats(
        "c",
        {
            "overflowing_sum": StatsSummary([1e308, 1e308], A.SUM),
            "overflow_then_back": StatsSummary([1e308, 1e308, -1e308], A.AVERAGE),
            "wide": StatsSummary([1e200, -1e200], A.AVERAGE),
            "widest": StatsSummary([1.7e308, -1.7e308, 1.7e308], A.AVERAGE),
            "squares_overflow": StatsSummary([1e154, -1e154, 0.0], A.AVERAGE),
            "inf_minus_inf": StatsSummary([math.inf, -math.inf, 1.0], A.AVERAGE),
            "inf_and_huge": StatsSummary([math.inf, 1e308, 1e308], A.SUM),
        },
        1,
    )
    writer.close()
    [line] = read_lines(path)
    v = line["values"]
    # The exact sum overflows a float: null; the mean of finite values is finite.
    assert v["overflowing_sum"] == {
        "aggregation": "SUM", "num": 2, "sum": None, "mean": 1e308, "std": 0.0,
        "min": 1e308, "max": 1e308, "aggregated_value": None,
    }
    assert v["overflow_then_back"]["sum"] == 1e308 and v["overflow_then_back"]["mean"] == pytest.approx(1e308 / 3)
    assert v["overflow_then_back"]["std"] == pytest.approx(math.sqrt(8 / 9) * 1e308, rel=1e-12)
    assert v["wide"]["mean"] == 0.0 and v["wide"]["std"] == pytest.approx(1e200)
    assert v["widest"]["std"] == pytest.approx(math.sqrt(8 / 9) * 1.7e308, rel=1e-12)
    # Squares of the deviations sum past the float range, the std does not.
    assert v["squares_overflow"]["std"] == pytest.approx(math.sqrt(2 / 3) * 1e154, rel=1e-12)
    assert v["inf_minus_inf"] == {
        "aggregation": "AVERAGE", "num": 3, "sum": None, "mean": None, "std": None,
        "min": 1.0, "max": 1.0, "aggregated_value": None,
    }
    assert v["inf_and_huge"]["sum"] is None and v["inf_and_huge"]["min"] == 1e308


def test_summarize_matches_stats_summary_where_that_does_not_raise():
    for dist in DISTRIBUTIONS:
        summary = StatsSummary(list(dist), A.AVERAGE)
        num, total, mean, std, _, _ = summarize(summary.full_dist)
        for mine, theirs in ((num, summary.num), (total, summary.sum), (mean, summary.mean), (std, summary.std)):
            assert mine == theirs or (math.isnan(mine) and math.isnan(theirs)), dist
            assert math.copysign(1.0, mine) == math.copysign(1.0, theirs) or math.isnan(mine), dist


def test_aggregation_change_of_a_key_and_bounded_name_cache(tmp_path, frozen_time, monkeypatch):
    monkeypatch.setattr(jsonl, "_MAX_ENCODED", 4)
    path = tmp_path / "stats.jsonl"
    writer = JsonlWriter(str(path), start_time=0.0)
    expected = []
    for step in range(1, 6):
        method = A.SUM if step % 2 else A.AVERAGE
        values = {f"key{i}": StatsSummary([float(i), 2.0], method) for i in range(step + 3)}
        writer.write_stats(f"cat{step}", values, step)
        expected.append(reference_line(f"cat{step}", values, step))
        assert len(writer._heads) <= 4 and len(writer._encoded) <= 4
    writer.close()
    assert raw_lines(path) == expected


def test_unusual_types_take_the_json_dumps_path(tmp_path, frozen_time):
    path = tmp_path / "stats.jsonl"
    writer = JsonlWriter(str(path), start_time=0.0)
    values = {3: StatsSummary([1.0], A.AVERAGE), "k": StatsSummary([True, False], A.SUM)}
    writer.write_stats("c", values, 1)
    writer.close()
    [text] = raw_lines(path)
    assert text == reference_line("c", values, 1)


def test_recovery_reads_what_a_whole_parse_would_from_lines_that_look_alike(tmp_path):
    path = tmp_path / "stats.jsonl"
    values = {"values": StatsSummary([1.0], A.AVERAGE), 'k,"values":': StatsSummary([2.0], A.SUM)}
    writer = JsonlWriter(str(path), start_time=0.0)
    tricky = {"a": {"b": 1}, "step": 7, "values": {"journal_position": 900}}  # a property that looks like a summary
    writer.add_property('c,"values":', StatsPropertyType.HYPERPARAMETERS, tricky)
    write_at(writer, 100, 'c,"values":', values, 1)
    write_at(writer, 250, "c", values, 2)
    writer.close()
    restarted = JsonlWriter(str(path), start_time=0.0)
    assert restarted._written == 250  # not the property's 900
    write_at(restarted, 250, "c", values, 2)  # a replay: dropped
    restarted.add_property('c,"values":', StatsPropertyType.HYPERPARAMETERS, tricky)  # the same property: dropped
    write_at(restarted, 300, "c", values, 3)
    restarted.close()
    assert [(l["category"], l.get("step")) for l in read_lines(path)] == [
        ('c,"values":', None), ('c,"values":', 1), ("c", 2), ("c", 3)]


def test_recovery_memory_does_not_grow_with_the_file(tmp_path):
    import tracemalloc

    path = tmp_path / "stats.jsonl"
    values = {f"Policy/key {i}": StatsSummary([float(i)] * 10, A.AVERAGE) for i in range(12)}
    writer = JsonlWriter(str(path), start_time=0.0)
    for step in range(1, 8001):
        write_at(writer, step * 10, "c", values, step)
    writer.close()
    assert path.stat().st_size > 12 << 20
    tracemalloc.start()
    try:
        restarted = JsonlWriter(str(path), start_time=0.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    restarted.close()
    assert restarted._written == 80_000
    # A line at a time (reading the file whole held it twice over: 25 MB and more here).
    assert peak < 1 << 20, peak
