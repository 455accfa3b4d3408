"""What the tracker writers share, and the W&B outbox: logic only, no tracker library."""

from __future__ import annotations

import json
import os

import pytest

from statbus.plugins.delivery import set_journal_position
from statbus.plugins.errors import PluginError
from statbus.plugins.settings import RunOptions
from statbus.plugins.writers.tracker_common import CallMarks, flatten, take_lock, tracker_run_key
from statbus.plugins.writers.wandb_outbox import Outbox


def test_the_tracker_run_key_is_the_run_s_and_changes_when_it_starts_over(tmp_path):
    one = RunOptions.create("3DBall ppo/1", str(tmp_path), start_time=1700000000.0)
    key = tracker_run_key(one)
    assert key.startswith("3DBall-ppo-1-") and len(key) == len("3DBall-ppo-1-") + 8
    assert tracker_run_key(RunOptions.create("3DBall ppo/1", str(tmp_path), start_time=1700000000.0)) == key
    assert tracker_run_key(RunOptions.create("3DBall ppo/1", str(tmp_path), start_time=1700000001.0)) != key
    assert tracker_run_key(RunOptions.create("3DBall ppo/1", str(tmp_path / "other"), start_time=1700000000.0)) != key


def test_flatten_nested_settings():
    assert dict(flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}, "B")) == {"B.a.b": 1, "B.a.c.d": [1, 2], "B.e": None}


def test_call_marks_count_calls_within_an_entry():
    marks = CallMarks()
    try:
        assert marks.next() is None  # outside a worker host
        set_journal_position(10)
        assert [marks.next(), marks.next()] == [(10, 0), (10, 1)]
        set_journal_position(42)
        assert marks.next() == (42, 0)
    finally:
        set_journal_position(None)


def test_a_second_worker_waits_for_the_lock_then_gives_up(tmp_path):
    fd = take_lock(str(tmp_path))
    try:
        with pytest.raises(PluginError, match="held by another worker"):
            take_lock(str(tmp_path), timeout=0.3)
    finally:
        os.close(fd)
    os.close(take_lock(str(tmp_path), timeout=0.3))  # free again


def test_the_outbox_keeps_whole_lines_and_cuts_a_torn_one(tmp_path):
    path = str(tmp_path / "outbox.jsonl")
    outbox = Outbox(path)
    outbox.append({"row": 0, "mark": [5, 0], "values": {"C/a": float("nan")}})
    outbox.append({"row": 1, "mark": [6, 0], "values": {"C/a": 2.0}})
    outbox.close()
    with open(path, "ab") as handle:
        handle.write(b'{"row": 2, "mark"')  # a kill in the middle of a write
    again = Outbox(path)
    again.close()
    assert [entry["row"] for entry in again.entries] == [0, 1]
    with open(path, "rb") as handle:
        lines = handle.read().splitlines(keepends=True)
    assert len(lines) == 2 and lines[-1].endswith(b"}\n") and json.loads(lines[0])["mark"] == [5, 0]
