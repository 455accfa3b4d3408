"""The record codec's fast paths agree with its checked paths, value for value and error for error."""

from __future__ import annotations

import math

import msgpack
import pytest

from statbus.pipeline.collector.aggregator import Aggregator
from statbus.plugins import StatsAggregationMethod, StatsPropertyType, StatsSummary
from statbus.plugins.errors import RecordError
from statbus.plugins.records import (
    PropertyRecord,
    StatOp,
    StatRecord,
    SummaryRecord,
    decode_batch,
    decode_stat,
    decode_summary,
    pack_values,
)

A = StatsAggregationMethod


def test_a_valid_stat_record_decodes_to_the_enums_and_bytes_it_names() -> None:
    record = decode_stat([0, "cat", "key", 3, 0, pack_values([1.5, -2.0])])
    assert record == StatRecord("cat", "key", A.HISTOGRAM, StatOp.ADD, pack_values([1.5, -2.0]))
    assert type(record) is StatRecord
    assert record.aggregation is A.HISTOGRAM and record.op is StatOp.ADD
    assert record.values == [1.5, -2.0]
    assert decode_stat([0, "c", "k", 1, 1, pack_values([7.0])]).op is StatOp.SET


@pytest.mark.parametrize(
    "obj, message",
    [
        ([0, "c", "k", 0, 0], "6 fields"),
        ([0, "c", "k", 0, 0, b"", None], "6 fields"),
        ([0, 1, "k", 0, 0, b""], "category must be a string"),
        ([0, "", "k", 0, 0, b""], "category must have 1 to"),
        ([0, "c", "k" * 1025, 0, 0, b""], "key must have 1 to"),
        ([0, "c", b"k", 0, 0, b""], "key must be a string"),
        ([0, "c", "k", 9, 0, b""], "unknown aggregation 9"),
        ([0, "c", "k", True, 0, b""], "unknown aggregation True"),
        ([0, "c", "k", 0, 2, b""], "stat op must be 0"),
        ([0, "c", "k", 0, False, b""], "stat op must be 0"),
        ([0, "c", "k", 0, 0, b"1234567"], "not a whole number of float64"),
        ([0, "c", "k", 0, 0, "12345678"], "packed float64 bytes"),
        ([0, "c", "k", 0, 1, pack_values([1.0, 2.0])], "exactly one value"),
        ([0, "c", "k", 0, 1, b""], "exactly one value"),
    ],
)
def test_every_malformed_stat_record_is_refused_with_its_reason(obj, message) -> None:
    with pytest.raises(RecordError, match=message):
        decode_stat(obj)


def _batch(*records: list) -> bytes:
    return msgpack.packb(list(records), use_bin_type=True)


def test_a_batch_without_its_stats_keeps_properties_in_order_and_skips_markers() -> None:
    data = _batch(
        [0, "c", "k", 0, 0, pack_values([1.0])],
        [2, "c", "hyperparameters", {"lr": 0.1}],
        [3, "c", 10],  # a write marker: not a writer record
        [0, "c", "k", 0, 0, pack_values([2.0])],
        [2, "c", "selfplay", True],
    )
    assert decode_batch(data, stats=False) == [
        PropertyRecord("c", StatsPropertyType.HYPERPARAMETERS, {"lr": 0.1}),
        PropertyRecord("c", StatsPropertyType.SELF_PLAY, True),
    ]
    assert [type(r) for r in decode_batch(data)] == [StatRecord, PropertyRecord, StatRecord, PropertyRecord]


def test_a_batch_without_its_stats_still_refuses_a_bad_property() -> None:
    with pytest.raises(RecordError, match="unknown property type"):
        decode_batch(_batch([0, "c", "k", 0, 0, b""], [2, "c", "nope", 1]), stats=False)


def test_summary_entries_decode_alike_from_lists_and_tuples() -> None:
    entries = [["a", 0, pack_values([1.0, 3.0])], ["b", 2, pack_values([])]]
    from_lists = decode_summary([1, "cat", 5, entries])
    from_tuples = decode_summary((1, "cat", 5, tuple(tuple(e) for e in entries)))
    assert from_lists == from_tuples == SummaryRecord(
        "cat", 5, (("a", A.AVERAGE, pack_values([1.0, 3.0])), ("b", A.SUM, b""))
    )


@pytest.mark.parametrize(
    "entry, message",
    [
        (["a", 0], "must be \\[key, aggregation, values\\]"),
        (["", 0, b""], "key must have 1 to"),
        (["a", 7, b""], "unknown aggregation"),
        (["a", 0, b"123"], "not a whole number"),
        (["a", 0, [1.0]], "packed float64 bytes"),
    ],
)
def test_malformed_summary_entries_are_refused(entry, message) -> None:
    with pytest.raises(RecordError, match=message):
        decode_summary([1, "cat", 5, [entry]])


def test_summaries_are_statssummary_tuples_of_float_lists() -> None:
    record = SummaryRecord("c", 1, (("r", A.AVERAGE, pack_values([1.0, 2.0, 6.0])), ("e", A.SUM, b"")))
    summaries = record.summaries()
    assert list(summaries) == ["r", "e"]
    reward = summaries["r"]
    assert type(reward) is StatsSummary and reward == StatsSummary([1.0, 2.0, 6.0], A.AVERAGE)
    assert type(reward.full_dist) is list and reward.mean == 3.0 and reward.num == 3
    assert summaries["e"].full_dist == [] and math.isnan(summaries["e"].mean)


def test_the_aggregator_never_changes_a_record_and_concatenates_in_order() -> None:
    first = StatRecord("c", "k", A.AVERAGE, StatOp.ADD, pack_values([1.0]))
    second = StatRecord("c", "k", A.HISTOGRAM, StatOp.ADD, pack_values([2.0, 3.0]))
    aggregator = Aggregator()
    aggregator.add(first)
    aggregator.add(second)
    aggregator.add(StatRecord("c", "s", A.AVERAGE, StatOp.SET, pack_values([9.0])))
    assert first.values == [1.0] and second.values == [2.0, 3.0]
    assert aggregator.open_values == 4
    summary = aggregator.write("c", 7)
    assert summary.entries == (
        ("k", A.HISTOGRAM, pack_values([1.0, 2.0, 3.0])),
        ("s", A.MOST_RECENT, pack_values([9.0])),
    )
    assert all(type(packed) is bytes for _, _, packed in summary.entries)
    assert aggregator.open_values == 0
    # A key written once hands its record's bytes on; the next period starts empty.
    aggregator.add(first)
    assert aggregator.write("c", 8).entries == (("k", A.AVERAGE, pack_values([1.0])),)
