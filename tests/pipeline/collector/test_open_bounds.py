"""The collector's open periods and its sender table are bounded in count and bytes;
what is dropped is counted and shown by ``statbus status`` (and ``--json``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading


from collector_helpers import REPO, RawTrainer, settle, wait_for
from statbus.pipeline.collector.aggregator import Aggregator
from statbus.pipeline.collector.loop import Collector
from statbus.pipeline.control import control_request
from statbus.pipeline.collector.intake import Intake
from statbus.pipeline.collector.senders import MAX_INFO_CHARS, SENDER_OVERHEAD
from statbus.pipeline.layout import RunLayout
from statbus.pipeline.wire import Frame, Hello, WriteMarker, hello_record, stat_record, write_record
from statbus.plugins.records import StatOp, StatRecord, pack_values
from statbus.plugins.stats import StatsAggregationMethod as A


def stat(category: str, key: str, values, op=StatOp.ADD) -> StatRecord:
    return StatRecord(category, key, A.AVERAGE, op, pack_values(values))


# --- open periods ------------------------------------------------------------------------------


def test_a_category_never_written_is_dropped_first_when_the_periods_are_full():
    aggregator = Aggregator(max_categories=3)
    for step in range(1, 6):
        aggregator.add(stat("Typo", "k", [1.0]))  # recorded every step, written never
        aggregator.add(stat("Learner", "k", [float(step)]))
        [summary] = aggregator.apply([WriteMarker("Learner", step)])
        assert summary.entries[0][2] == pack_values([float(step)])
    aggregator.add(stat("Other1", "k", [1.0]))
    aggregator.add(stat("Other2", "k", [1.0]))
    assert aggregator.dropped_periods == 0 and aggregator.open_categories() == ["Typo", "Other1", "Other2"]
    aggregator.add(stat("Learner", "k", [9.0]))  # a fourth open period: the oldest goes
    assert aggregator.open_categories() == ["Other1", "Other2", "Learner"]
    assert (aggregator.dropped_periods, aggregator.dropped_values, aggregator.open_values) == (1, 5, 3)
    aggregator.apply([WriteMarker(c, 6) for c in aggregator.open_categories()])
    assert (aggregator.open_values, aggregator.open_bytes) == (0, 0)  # the byte count is exact, not drifting


def test_open_periods_are_bounded_in_bytes_and_the_count_stays_exact():
    aggregator = Aggregator(max_bytes=64 * 1024)
    written = 0
    for step in range(1, 200):
        aggregator.add(stat("Typo", f"key-{step}", [0.5] * 64))  # ~0.6 KiB a step, never written
        aggregator.add(stat("Learner", "k", [1.0, 2.0]))
        aggregator.add(stat("Learner", "s", [float(step)], StatOp.SET))
        [summary] = aggregator.apply([WriteMarker("Learner", step)])
        written += 1
        assert dict((k, p) for k, _, p in summary.entries) == {
            "k": pack_values([1.0, 2.0]), "s": pack_values([float(step)])}
        assert aggregator.open_bytes <= 64 * 1024
    assert aggregator.dropped_periods >= 1
    # every value added is either still open, or written, or counted as dropped
    assert aggregator.open_values + aggregator.dropped_values == 199 * 64
    assert aggregator.open_bytes == Aggregator.from_snapshot(aggregator.snapshot()).open_bytes


def test_a_snapshot_restored_under_smaller_bounds_is_cut_to_them():
    big = Aggregator()
    for n in range(10):
        big.add(stat(f"C{n}", "k", [1.0]))
    small = Aggregator(max_categories=4)
    small.restore(big.snapshot())
    assert small.open_categories() == ["C6", "C7", "C8", "C9"] and small.dropped_periods == 6


# --- the sender table ----------------------------------------------------------------------------


def test_the_sender_table_is_bounded_in_bytes_and_info_is_cut():
    budget = 20 * (SENDER_OVERHEAD + 20 + 2 * MAX_INFO_CHARS + 8)
    intake = Intake(clock=lambda: 0.0, max_sender_bytes=budget)
    for n in range(100):
        frame = Frame(f"sender-{n:04d}", 1, 1, 0, (Hello({"host": "h" * 60_000, "argv0": "a" * 60_000, "pid": n}),))
        assert intake.judge(frame).ack == 1
        assert intake.sender_bytes <= budget
    state = intake.senders["sender-0099"]
    assert len(state.info["host"]) == MAX_INFO_CHARS and state.info["pid"] == 99
    assert 0 < len(intake.senders) <= 20 and intake.evicted == 100 - len(intake.senders)
    assert intake.sender_bytes == sum(s.size for s in intake.senders.values())
    restored = Intake(clock=lambda: 0.0, max_sender_bytes=budget)
    restored.restore(intake.snapshot())
    assert restored.sender_bytes == intake.sender_bytes


# --- shown in status -------------------------------------------------------------------------------


def test_status_shows_what_the_bounds_dropped(tmp_path, context):
    layout = RunLayout(str(tmp_path / "results"), "run")
    collector = Collector(layout)
    collector.aggregator = Aggregator(max_categories=2)
    codes = []
    thread = threading.Thread(target=lambda: codes.append(collector.run()), daemon=True)
    trainer = None
    try:
        thread.start()
        wait_for(lambda: os.path.exists(collector.ready_file), what="ready file")
        trainer = RawTrainer(context, layout.data_address, "t")
        trainer.frame([hello_record({"host": "x" * 5000, "pid": 1})])
        for n in range(5):
            trainer.frame([stat_record(f"Never{n}", "k", 0, 0, pack_values([1.0, 2.0]))])
        trainer.frame([stat_record("Learner", "k", 0, 0, pack_values([3.0])), write_record("Learner", 1)])
        settle([trainer])
        status = control_request(layout.control_address, {"op": "status"}, timeout=10)
        periods, senders = status["intake"]["open_periods"], status["intake"]["senders"]
        assert (periods["dropped_periods"], periods["dropped_values"], periods["categories"]) == (4, 8, 1)
        assert senders["count"] == 1 and senders["forgotten"] == 0
        assert SENDER_OVERHEAD < senders["bytes"] <= SENDER_OVERHEAD + 16 + MAX_INFO_CHARS + 8

        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        base = [sys.executable, "-m", "statbus.pipeline.cli", "status", "--run-id", "run", "--results-dir", layout.results_dir]
        shown = subprocess.run(base + ["--json"], capture_output=True, text=True, timeout=60, env=env)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["intake"]["open_periods"]["dropped_periods"] == 4
        text = subprocess.run(base, capture_output=True, text=True, timeout=60, env=env)
        assert "dropped unwritten: 4 periods, 8 values" in text.stdout, text.stdout
    finally:
        collector.request_stop(graceful=False)
        thread.join(timeout=30)
        if trainer is not None:
            trainer.close()
    assert codes == [0]
