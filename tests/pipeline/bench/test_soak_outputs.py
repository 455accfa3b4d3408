"""The soak's judge of its outputs: each rule fails on the output that breaks it."""

from __future__ import annotations

import json

from statbus.pipeline.bench.procs import PPO_KEYS
from statbus.pipeline.bench.soak.outputs import Expected, check_example, check_stats_jsonl, expected_of
from statbus.pipeline.bench.soak.trainer import step_values

PER_KEY = 3


def _line(category, step, bad_sum=False):
    values = {}
    for k, key in enumerate(PPO_KEYS):
        want = step_values(step, k, PER_KEY)
        values[key] = {"num": len(want), "sum": sum(want) + (1.0 if bad_sum and k == 4 else 0.0)}
    return json.dumps({"category": category, "step": step, "values": values})


def _jsonl(tmp_path, lines):
    path = tmp_path / "stats.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_what_a_finished_and_a_killed_trainer_must_land():
    finished = [{"ready": True}, {"w": 1}, {"acked": 1}, {"w": 2}, {"done": True, "steps": 2, "flushed": True}]
    assert expected_of(finished, killed=False)[0] == Expected(2, 2)
    killed = [{"ready": True}, {"w": 1}, {"w": 2}, {"acked": 2}, {"w": 3}, {"w": 4}]
    # Acked up to 2; 3, 4 and a 5 whose line the kill cut off may have reached the journal.
    assert expected_of(killed, killed=True) == (Expected(2, 5), None)


def test_exact_outputs_pass_and_each_fault_is_named(tmp_path):
    expected = {"a": Expected(3, 3), "b": Expected(1, 4)}
    good = [_line("a", 1), _line("b", 1), _line("a", 2), _line("b", 2), _line("a", 3)]
    tally = check_stats_jsonl(_jsonl(tmp_path, good), expected, PER_KEY)
    assert tally.as_dict()["problems"] == 0 and tally.landed == {"a": 3, "b": 2}

    faults = {
        "missing": [_line("a", 1), _line("a", 3), _line("b", 1)],  # a's step 2 lost
        "duplicated": good + [_line("a", 2)],
        "wrong": [_line("a", 1), _line("a", 2, bad_sum=True), _line("a", 3), _line("b", 1)],
        "unexpected": good + [_line("b", 5)],  # beyond what b ever wrote (+1)
        "unknown": good + [_line("c", 1)],
    }
    for kind, lines in faults.items():
        tally = check_stats_jsonl(_jsonl(tmp_path, lines), expected, PER_KEY)
        assert tally.counts[kind] >= 1, (kind, tally.as_dict())


def test_a_third_party_plugin_may_repeat_but_not_miss(tmp_path):
    expected = {"a": Expected(2, 2)}
    path = tmp_path / "example_plugin.txt"
    path.write_text("a 1 x=1\na 1 x=1\na 2 x=2\n", encoding="utf-8")
    tally = check_example(str(path), expected)
    assert tally.as_dict()["problems"] == 0 and tally.repeated == 1  # counted, not a fault
    path.write_text("a 1 x=1\n", encoding="utf-8")
    assert check_example(str(path), expected).counts["missing"] == 1
