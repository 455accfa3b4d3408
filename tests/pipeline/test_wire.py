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



def media_frame(*records, size=0):
    from statbus.plugins.media import Media, MediaKind
    from statbus.plugins.records import MediaRecord

    media = MediaRecord("C", "img", 7, Media(MediaKind.IMAGE, (size,), "uint8", b"\x01" * size, {"dataformats": "HW"}))
    return encode_frame("s", 1, 1, 0, [*records, media.to_msgpack()]), media


def test_a_media_record_travels_alone_in_a_frame_larger_than_others_may_be():
    from statbus.pipeline.wire import MAX_FRAME_BYTES, decode_frame, hello_record

    data, media = media_frame(hello_record({"pid": 1}), size=MAX_FRAME_BYTES + 1)
    assert decode_frame(data).records[1] == media
    # the writer records of its journal entry: the media record alone (markers are skipped)
    assert decode_batch(frame_records_bytes(data)) == [media]


def test_two_media_records_or_a_large_frame_without_one_are_refused():
    import pytest

    from statbus.pipeline.wire import MAX_FRAME_BYTES, MAX_MEDIA_FRAME_BYTES, RejectReason, WireError, decode_frame

    _, media = media_frame()
    cases = {
        "2 media records": (encode_frame("s", 1, 1, 0, [media.to_msgpack(), media.to_msgpack()]),
                            RejectReason.BAD_RECORD),
        "without a media record": (encode_frame("s", 1, 1, 0, [property_record("C", "hyperparameters",
                                                                               b"\0" * MAX_FRAME_BYTES)]),
                                   RejectReason.TOO_LARGE),
        f"> {MAX_MEDIA_FRAME_BYTES}": (b"\xc4" + b"\0" * MAX_MEDIA_FRAME_BYTES, RejectReason.TOO_LARGE),
        "needs 3 bytes": (encode_frame("s", 1, 1, 0, [[6, "C", "t", 0, ["image", [3], "uint8", b"\0", {}]]]),
                          RejectReason.BAD_RECORD),
    }
    for detail, (data, reason) in cases.items():
        with pytest.raises(WireError, match=detail) as info:
            decode_frame(data)
        assert info.value.reason is reason
