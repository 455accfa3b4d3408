"""The collector's stepped categories (pipeline/step_merge.py), through the Aggregator, in record order."""

from __future__ import annotations

import struct

import msgpack

from statbus.pipeline.collector.aggregator import Aggregator
from statbus.pipeline.collector.step_merge import MAX_PENDING_STEPS
from statbus.pipeline.wire import Bye, WriteMarker
from statbus.plugins.records import StatRecord, StatOp, marked_step, public_category, public_values, step_marker
from statbus.plugins.stats import StatsAggregationMethod

AVG = StatsAggregationMethod.AVERAGE


def values(category: str, step: int, *numbers: float) -> StatRecord:
    """A sender's values of ``category`` at ``step``: a step marker, then the values."""
    run = [step_marker(step), *numbers]
    return StatRecord(f"\x00{category}", "reward", AVG, StatOp.ADD, struct.pack(f"<{len(run)}d", *run))


def join(category: str) -> WriteMarker:
    return WriteMarker(f"\x00{category}\x00+", 0)


def leave(category: str) -> WriteMarker:
    return WriteMarker(f"\x00{category}\x00-", 0)


def done(category: str, step: int) -> WriteMarker:
    return WriteMarker(f"\x00{category}", step)


def steps_and_values(summaries):
    return [(s.category, s.step, struct.unpack(f"<{len(s.entries[0][2]) // 8}d", s.entries[0][2]))
            for s in summaries]


def test_a_step_closes_once_every_member_is_done_with_it_whatever_the_arrival_order():
    agg = Aggregator()
    assert agg.apply([join("c")], "a") == [] and agg.apply([join("c")], "b") == []
    # a runs ahead: its step 0 and 1 are done before b's step 0 values even arrive.
    assert agg.apply([values("c", 0, 1.0), done("c", 0), values("c", 1, 2.0), done("c", 1)], "a") == []
    out = agg.apply([values("c", 0, 10.0), done("c", 0)], "b")
    assert steps_and_values(out) == [("c", 0, (1.0, 10.0))]
    out = agg.apply([values("c", 1, 20.0), done("c", 1), values("c", 2, 30.0), done("c", 2), leave("c")], "b")
    assert steps_and_values(out) == [("c", 1, (2.0, 20.0))]  # b's step 2 waits for a
    assert steps_and_values(agg.apply([Bye({})], "a")) == [("c", 2, (30.0,))]  # a's goodbye is a leave
    assert agg.open_values == 0


def test_state_survives_a_snapshot_and_a_lagging_member_holds_back_a_bounded_number_of_steps():
    agg = Aggregator()
    agg.apply([join("c")], "a")
    agg.apply([join("c")], "dead")
    agg.apply([values("c", 0, 1.0), done("c", 0), values("c", 1, 7.0)], "a")  # step 1 not finished yet
    restored = Aggregator.from_snapshot(msgpack.unpackb(msgpack.packb(agg.snapshot()), strict_map_key=False))
    assert restored.snapshot() == agg.snapshot()
    out = []
    for step in range(1, MAX_PENDING_STEPS + 2):
        out += restored.apply([values("c", step, float(step)), done("c", step)], "a")
    assert [s.step for s in out] == [0, 1]  # "dead" never finishes: only the overflow is closed
    assert steps_and_values(out) == [("c", 0, (1.0,)), ("c", 1, (7.0, 1.0))]
    assert steps_and_values(restored.apply([leave("c")], "dead"))[-1] == ("c", MAX_PENDING_STEPS + 1,
                                                                            (float(MAX_PENDING_STEPS + 1),))


def test_ordinary_categories_are_untouched_and_writers_see_public_names():
    agg = Aggregator()
    agg.add(StatRecord("Behavior", "k", AVG, StatOp.ADD, struct.pack("<d", 3.0)))
    assert [s.category for s in agg.apply([WriteMarker("Behavior", 7)], "a")] == ["Behavior"]
    assert public_category("\x00runs/exp") == "runs/exp"
    assert public_category("Behavior") == "Behavior"


def test_a_record_carries_many_steps_and_a_run_goes_on_in_the_next_record():
    agg = Aggregator()
    agg.apply([join("c")], "a")
    run = [step_marker(3), 1.0, 2.0, step_marker(4), 5.0]
    first = StatRecord("\x00c", "reward", AVG, StatOp.ADD, struct.pack("<5d", *run))
    rest = StatRecord("\x00c", "reward", AVG, StatOp.ADD, struct.pack("<2d", 6.0, float("nan")))  # still step 4
    out = agg.apply([first, rest, done("c", 4)], "a")
    assert [(s.step, struct.unpack(f"<{len(s.entries[0][2]) // 8}d", s.entries[0][2])[:2]) for s in out] == \
        [(3, (1.0, 2.0)), (4, (5.0, 6.0))]
    # Writers' on_add_stat gets the values without the markers; a NaN value is a value.
    assert [marked_step(v) for v in run] == [3, -1, -1, 4, -1] and marked_step(float("nan")) == -1
    assert public_values(run) == [1.0, 2.0, 5.0]
