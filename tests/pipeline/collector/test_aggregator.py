"""Aggregation exactness: ML-Agents' reporter semantics, lifted to the collector."""

from __future__ import annotations

import random

import msgpack
import pytest

from statbus.pipeline.collector.aggregator import Aggregator, SnapshotError
from statbus.pipeline.wire import Bye, Hello, WriteMarker
from statbus.plugins.records import PropertyRecord, StatOp, StatRecord, SummaryRecord, pack_values, unpack_values
from statbus.plugins.stats import StatsAggregationMethod as Agg
from statbus.plugins.stats import StatsPropertyType


def add(category: str, key: str, values, agg: Agg = Agg.AVERAGE) -> StatRecord:
    return StatRecord(category, key, agg, StatOp.ADD, pack_values(values))


def set_(category: str, key: str, value: float) -> StatRecord:
    return StatRecord(category, key, Agg.MOST_RECENT, StatOp.SET, pack_values([value]))


def as_dict(summary: SummaryRecord):
    return {key: (agg, unpack_values(packed)) for key, agg, packed in summary.entries}


def test_add_concatenates_values_in_arrival_order_and_keys_in_first_seen_order():
    a = Aggregator()
    a.add(add("C", "b", [1.0, 2.0]))
    a.add(add("C", "a", [3.0]))
    a.add(add("C", "b", [4.0]))
    assert a.open_values == 4
    summary = a.write("C", 10)
    assert summary.category == "C" and summary.step == 10
    assert [key for key, _, _ in summary.entries] == ["b", "a"]
    assert as_dict(summary) == {"b": (Agg.AVERAGE, [1.0, 2.0, 4.0]), "a": (Agg.AVERAGE, [3.0])}
    assert a.open_values == 0


def test_last_aggregation_given_wins():
    a = Aggregator()
    a.add(add("C", "k", [1.0], Agg.AVERAGE))
    a.add(add("C", "k", [2.0], Agg.SUM))
    assert as_dict(a.write("C", 1)) == {"k": (Agg.SUM, [1.0, 2.0])}


def test_set_replaces_values_keeps_key_place_and_is_most_recent():
    a = Aggregator()
    a.add(add("C", "x", [1.0, 2.0], Agg.SUM))
    a.add(add("C", "y", [5.0]))
    a.add(set_("C", "x", 9.0))
    summary = a.write("C", 3)
    assert [key for key, _, _ in summary.entries] == ["x", "y"]
    assert as_dict(summary)["x"] == (Agg.MOST_RECENT, [9.0])
    assert a.open_values == 0
    # an add after a set appends and takes the add's aggregation
    a.add(set_("C", "x", 1.0))
    a.add(add("C", "x", [2.0], Agg.AVERAGE))
    assert as_dict(a.write("C", 4)) == {"x": (Agg.AVERAGE, [1.0, 2.0])}


def test_write_closes_only_its_category_and_empty_write_gives_empty_summary():
    a = Aggregator()
    a.add(add("A", "k", [1.0]))
    a.add(add("B", "k", [2.0]))
    assert a.write("B", 5) == SummaryRecord("B", 5, (("k", Agg.AVERAGE, pack_values([2.0])),))
    assert a.write("B", 6) == SummaryRecord("B", 6, ())
    assert a.write("Z", 0) == SummaryRecord("Z", 0, ())
    assert as_dict(a.write("A", 7)) == {"k": (Agg.AVERAGE, [1.0])}


def test_values_after_a_write_belong_to_the_next_period():
    a = Aggregator()
    summaries = a.apply(
        [
            PropertyRecord("C", StatsPropertyType.HYPERPARAMETERS, {"lr": 1}),
            Hello({"pid": 1}),
            add("C", "k", [1.0]),
            WriteMarker("C", 1),
            add("C", "k", [2.0]),
            WriteMarker("C", 2),
            WriteMarker("C", 3),
            Bye({}),
        ]
    )
    assert [(s.step, as_dict(s)) for s in summaries] == [
        (1, {"k": (Agg.AVERAGE, [1.0])}),
        (2, {"k": (Agg.AVERAGE, [2.0])}),
        (3, {}),
    ]


def test_apply_refuses_unknown_objects():
    with pytest.raises(TypeError):
        Aggregator().apply([object()])


def test_bit_exact_values_including_nan_and_inf():
    a = Aggregator()
    values = [0.1, -0.0, float("inf"), float("-inf"), 1e308, 5e-324]
    a.add(add("C", "k", values))
    a.add(add("C", "k", [float("nan")]))
    (key, agg, packed), = a.write("C", 1).entries
    assert packed == pack_values(values) + pack_values([float("nan")])


def test_snapshot_round_trips_through_msgpack_with_order():
    a = Aggregator()
    a.add(add("C", "z", [1.0, 2.0], Agg.HISTOGRAM))
    a.add(add("C", "a", [3.0]))
    a.add(set_("D", "m", 7.0))
    data = msgpack.packb(a.snapshot(), use_bin_type=True)
    b = Aggregator.from_snapshot(msgpack.unpackb(data, raw=False))
    assert b.open_values == a.open_values == 4
    assert b.snapshot() == a.snapshot()
    for category in ("C", "D"):
        assert b.write(category, 1) == a.write(category, 1)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"C": [["k", 99, b""]]},
        {"C": [["k", 0, b"\x00" * 7]]},
        {"C": [["k", 0]]},
        {"": [["k", 0, b""]]},
        {"C": "nope"},
    ],
)
def test_restore_rejects_malformed_snapshots(bad):
    a = Aggregator()
    a.add(add("C", "k", [1.0]))
    with pytest.raises(SnapshotError):
        a.restore(bad)
    assert a.open_values == 1  # left untouched


def test_random_streams_match_a_reference_model():
    """Many random interleavings against a plain-Python model of ML-Agents' reporter."""
    rng = random.Random(1234)
    for _ in range(50):
        a = Aggregator()
        model = {}  # category -> dict key -> [agg, list]
        expected, got = [], []
        for _ in range(300):
            category = rng.choice("ABC")
            key = rng.choice("klmn")
            roll = rng.random()
            if roll < 0.7:
                values = [rng.uniform(-1e6, 1e6) for _ in range(rng.randint(1, 5))]
                agg = rng.choice(list(Agg))
                a.add(add(category, key, values, agg))
                slot = model.setdefault(category, {}).setdefault(key, [agg, []])
                slot[0] = agg
                slot[1].extend(values)
            elif roll < 0.8:
                value = rng.uniform(-1, 1)
                a.add(set_(category, key, value))
                model.setdefault(category, {})[key] = [Agg.MOST_RECENT, [value]]
            else:
                step = rng.randint(0, 10**6)
                period = model.pop(category, {})
                expected.append((category, step, {k: (v[0], v[1]) for k, v in period.items()}, list(period)))
                summary = a.write(category, step)
                got.append((summary.category, summary.step, as_dict(summary), [k for k, _, _ in summary.entries]))
        assert got == expected
