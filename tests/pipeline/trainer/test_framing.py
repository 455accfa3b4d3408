"""Trainer framing (trainer/framing.py): queued events → frames, without sockets or threads.

What a frame holds and in which order: properties, then periods (a period's stats, then its
WRITE), then the open period, then BYE; ``set_stat`` as a SET record before the key's later
ADD; a flush closes the frame; a frame stays within the wire's limits.
"""

from __future__ import annotations

import collections
from typing import Dict

import msgpack

import statbus.pipeline as sp
from statbus.pipeline.trainer.framing import (
    BATCH_VALUES,
    BYE,
    FlushEvent,
    FrameBuilder,
    PropertyEvent,
    SetStatEvent,
    StatsEvent,
    Ticket,
    WriteEvent,
    drain_events,
)
from statbus.pipeline.wire import MAX_FRAME_BYTES, Bye, WriteMarker, bye_record, decode_frame, encode_frame
from statbus.plugins.records import PropertyRecord, StatOp, StatRecord

AVERAGE = sp.StatsAggregationMethod.AVERAGE


def decoded(builder: FrameBuilder) -> list:
    """The builder's records as the collector decodes them."""
    return decode_frame(encode_frame("me", 1, 1, 0, builder.records())).records


def test_frame_builder_groups_keys_in_first_seen_order() -> None:
    agg = sp.StatsAggregationMethod
    builder = FrameBuilder()
    for event in [("C", "b", 1.0, agg.AVERAGE), ("C", "a", 2.0, agg.SUM), ("C", "b", 3.0, agg.HISTOGRAM)]:
        builder.add(*event)
    builder.property("C", "selfplay", {"x": 1}, 10)
    builder.write("C", 4)
    records = builder.records()
    assert [r[0] for r in records] == [2, 0, 0, 3]
    assert records[1][2] == "b" and records[1][3] == agg.HISTOGRAM.value and records[2][2] == "a"
    msgpack.packb(records)


def test_drained_frames_stay_within_the_wire_limits_whatever_the_keys() -> None:
    agg = sp.StatsAggregationMethod.AVERAGE
    queue = collections.deque()
    for i in range(20_000):  # distinct 1000-character keys: ~20 MB of names
        key = f"{i:06d}" + "k" * 994
        queue.append(StatsEvent({("C" * 1000, key): [agg, -1.0]}))
        queue.append(SetStatEvent("C" * 1000, key, float(i)))  # set_stat replaces the -1
    builders = list(drain_events(queue, lambda: []))
    assert len(builders) > 1 and not queue
    period: Dict[str, list] = {}  # what the collector makes of them
    for seq, builder in enumerate(builders, 1):
        payload = encode_frame("me", seq, 1, 0, builder.records())
        assert len(payload) < MAX_FRAME_BYTES
        for record in decode_frame(payload).records:
            if record.op == StatOp.SET:
                period[record.key] = record.values
            else:
                period.setdefault(record.key, []).extend(record.values)
    assert [v for values in period.values() for v in values] == [float(i) for i in range(20_000)]


def test_sealed_entries_are_split_across_frames_in_order() -> None:
    # One sealed dict far past a frame's values: no frame exceeds BATCH_VALUES, order holds.
    agg = sp.StatsAggregationMethod
    n = 3 * BATCH_VALUES + 17
    sealed = {("C", "big"): [agg.AVERAGE] + [float(i) for i in range(n)], ("C", "small"): [agg.SUM, 1.0, 2.0]}
    queue = collections.deque([StatsEvent(sealed), WriteEvent("C", 5), StatsEvent({("C", "big"): [agg.AVERAGE, -1.0]})])
    builders = list(drain_events(queue, lambda: []))
    assert not queue and all(b.nvalues <= BATCH_VALUES for b in builders)
    assert sum(b.nvalues for b in builders) == n + 3
    values, kinds = [], []
    for seq, builder in enumerate(builders, 1):
        for record in decode_frame(encode_frame("me", seq, 1, 0, builder.records())).records:
            kinds.append(type(record).__name__)
            if kinds[-1] == "StatRecord" and record.key == "big":
                values.extend(record.values)
    assert values == [float(i) for i in range(n)] + [-1.0]
    # The write closes the period after every value sealed before it, and before the later one.
    assert kinds.index("WriteMarker") == len(kinds) - 2


def test_set_stat_replaces_the_pending_values_and_later_adds_follow_as_an_add() -> None:
    builder = FrameBuilder()
    builder.add("C", "k", 1.0, AVERAGE)
    builder.add("C", "k", 2.0, AVERAGE)
    builder.add("C", "k", 5.0, None)  # set_stat
    builder.add("C", "k", 6.0, AVERAGE)
    (set_record, add_record) = decoded(builder)
    assert (set_record.op, set_record.aggregation, set_record.values) == (
        StatOp.SET, sp.StatsAggregationMethod.MOST_RECENT, [5.0])
    assert (add_record.op, add_record.aggregation, add_record.values) == (StatOp.ADD, AVERAGE, [6.0])
    assert builder.nvalues == 4


def test_a_write_closes_its_period_and_a_frame_keeps_properties_periods_then_bye() -> None:
    queue = collections.deque([
        StatsEvent({("C", "k"): [AVERAGE, 1.0]}),
        PropertyEvent("C", "hyperparameters", {"lr": 0.1}, 16),
        WriteEvent("C", 1),
        StatsEvent({("C", "k"): [AVERAGE, 2.0]}),
        BYE,
    ])
    (builder,) = drain_events(queue, lambda: bye_record({"pid": 1}))
    records = decoded(builder)
    assert [type(r) for r in records] == [PropertyRecord, StatRecord, WriteMarker, StatRecord, Bye]
    assert records[1].values == [1.0] and records[2].step == 1 and records[3].values == [2.0]


def test_a_flush_closes_the_frame_and_its_ticket_follows_it() -> None:
    ticket = Ticket()
    queue = collections.deque([StatsEvent({("C", "a"): [AVERAGE, 1.0]}), FlushEvent(ticket),
                               StatsEvent({("C", "b"): [AVERAGE, 2.0]})])
    first, flushed, second = drain_events(queue, lambda: [])
    assert flushed is ticket
    assert [r.key for r in decoded(first)] == ["a"] and [r.key for r in decoded(second)] == ["b"]
    # A flush with nothing before it closes no empty frame.
    assert list(drain_events(collections.deque([FlushEvent(ticket)]), lambda: [])) == [ticket]


def test_a_sealed_dict_that_fits_becomes_the_open_period_as_it_is() -> None:
    sealed = {("C", "a"): [AVERAGE, 1.0, 2.0], ("C", "b"): [AVERAGE, 3.0]}
    (builder,) = drain_events(collections.deque([StatsEvent(sealed)]), lambda: [])
    assert builder.stats is sealed and builder.nvalues == 3 and builder.nrecords == 2
    assert [(r.key, r.values) for r in decoded(builder)] == [("a", [1.0, 2.0]), ("b", [3.0])]


def test_a_media_value_goes_alone_in_a_frame_between_the_frames_of_what_came_before_and_after() -> None:
    from statbus.pipeline.trainer.framing import MediaEvent
    from statbus.plugins.media import Media, MediaKind
    from statbus.plugins.records import MediaRecord

    media = MediaRecord("C", "img", 3, Media(MediaKind.IMAGE, (2,), "uint8", b"\x01\x02", {}))
    queue = collections.deque([StatsEvent({("C", "a"): [AVERAGE, 1.0]}), WriteEvent("C", 3),
                               MediaEvent(media, 2), MediaEvent(media, 2), StatsEvent({("C", "b"): [AVERAGE, 2.0]})])
    before, first, second, after = drain_events(queue, lambda: [])
    assert [type(r) for r in decoded(before)] == [StatRecord, WriteMarker]
    assert decoded(first) == decoded(second) == (media,)
    assert (first.nvalues, first.media) == (0, MediaEvent(media, 2))
    assert [r.key for r in decoded(after)] == ["b"]
