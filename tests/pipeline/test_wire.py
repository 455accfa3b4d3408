"""The trainer frame's codec (pipeline/wire.py)."""

from __future__ import annotations

import msgpack

from statbus.pipeline.wire import encode_frame, frame_records_bytes, property_record, stat_record, write_record
from statbus.plugins.records import PropertyRecord, StatRecord, decode_batch, pack_values


def stat(category, key, values, agg=0, op=0):
    return stat_record(category, key, agg, op, pack_values(values))


def test_frame_records_bytes_is_the_records_array():
    records = [property_record("C", "hyperparameters", {"lr": 0.1}), stat("C", "k", [1.0, 2.0]), write_record("C", 3)]
    sliced = frame_records_bytes(encode_frame("sender-x", 12, 3, 4, records))
    assert msgpack.unpackb(sliced, raw=False) == msgpack.unpackb(msgpack.packb(records, use_bin_type=True), raw=False)
    decoded = decode_batch(sliced)
    assert [type(r) for r in decoded] == [PropertyRecord, StatRecord]

