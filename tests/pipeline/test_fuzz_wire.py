"""Property-based fuzzing of the wire decoder and the record validators (Hypothesis).

The property, for any input: ``decode_frame`` either returns a Frame whose every
field is valid (checked again here, independently), or raises ``WireError`` with a
reason.  Never another exception, never a hang (pytest's timeout), and memory
bounded: inputs crafted to make msgpack pre-allocate huge containers are measured
with tracemalloc.
"""

from __future__ import annotations

import math
import struct
import tracemalloc
from typing import Any, List

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statbus.pipeline.collector.intake import Intake, Verdict
from statbus.pipeline.wire import (
    MAX_FRAME_BYTES,
    MAX_MAP_ENTRIES,
    MAX_NESTING,
    MAX_RECORDS_PER_FRAME,
    MAX_SENDER_LENGTH,
    MAX_STRING_BYTES,
    WIRE_VERSION,
    Bye,
    Frame,
    Hello,
    RejectReason,
    WireError,
    WriteMarker,
    decode_frame,
    encode_frame,
    hello_record,
    property_record,
    stat_record,
    write_record,
)
from statbus.plugins.errors import RecordError
from statbus.plugins.records import (
    MAX_NAME_LENGTH,
    PropertyRecord,
    StatOp,
    StatRecord,
    decode_batch,
    decode_record,
    pack_values,
    unpack_values,
)
from statbus.plugins.stats import StatsAggregationMethod, StatsPropertyType

# Hypothesis's pytest plugin imports a deprecated name while it reports a failing example;
# with warnings as errors that would turn a clear failure into an INTERNALERROR.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")

FUZZ = settings(
    max_examples=300,
    deadline=None,  # the machine is shared: a slow example is not a failure; a hang hits the timeout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # reproducible in CI; the examples differ per test through their strategies
    database=None,  # derandomized: nothing to remember, and no .hypothesis/ left in the tree
)

# --- independent check of a decoded frame --------------------------------------------------


def _plain_ok(value: Any, depth: int = 0) -> bool:
    if depth > MAX_NESTING:
        return False
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_ok(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_ok(v, depth + 1) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, bytes))


def _name_ok(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_LENGTH


def assert_valid_frame(frame: Frame) -> None:
    assert type(frame) is Frame
    assert isinstance(frame.sender, str) and 0 < len(frame.sender) <= MAX_SENDER_LENGTH
    assert frame.sender.isprintable()
    for value in (frame.seq, frame.lowest_sendable, frame.dropped):
        assert type(value) is int and 0 <= value < 2**63
    assert 1 <= frame.seq and frame.lowest_sendable <= frame.seq
    assert isinstance(frame.records, tuple)
    for record in frame.records:
        kind = type(record)
        if kind is StatRecord:
            assert _name_ok(record.category) and _name_ok(record.key)
            assert isinstance(record.aggregation, StatsAggregationMethod)
            assert isinstance(record.op, StatOp)
            assert type(record.packed) is bytes and len(record.packed) % 8 == 0
            assert record.op is StatOp.ADD or len(record.packed) == 8
        elif kind is PropertyRecord:
            assert _name_ok(record.category)
            assert isinstance(record.property_type, StatsPropertyType)
            assert _plain_ok(record.value)
        elif kind is WriteMarker:
            assert _name_ok(record.category)
            assert type(record.step) is int and 0 <= record.step < 2**63
        elif kind in (Hello, Bye):
            assert isinstance(record.info, dict) and _plain_ok(record.info)
        else:
            raise AssertionError(f"unexpected record type {kind}")


def decode_or_reason(data: bytes) -> Frame | RejectReason:
    """The property itself: a valid Frame or a WireError; anything else fails the test."""
    try:
        frame = decode_frame(data)
    except WireError as exc:
        assert isinstance(exc.reason, RejectReason)
        assert exc.detail
        return exc.reason
    assert_valid_frame(frame)
    return frame


# --- strategies ----------------------------------------------------------------------------

names = st.text(min_size=1, max_size=12)
int64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # the whole msgpack integer range
floats = st.floats(allow_nan=True, allow_infinity=True)
scalars = st.none() | st.booleans() | int64 | floats | st.text(max_size=20) | st.binary(max_size=20)
keys = st.text(max_size=8) | st.integers(-5, 5) | st.binary(max_size=4)  # non-string keys included
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
plain = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
value_lists = st.lists(floats, max_size=8)


@st.composite
def valid_records(draw) -> list:
    kind = draw(st.sampled_from(["stat", "set", "property", "write", "hello", "bye"]))
    if kind == "stat":
        return stat_record(draw(names), draw(names), draw(st.sampled_from([0, 1, 2, 3])), 0, pack_values(draw(value_lists)))
    if kind == "set":
        return stat_record(draw(names), draw(names), 1, 1, pack_values([draw(floats)]))
    if kind == "property":
        return property_record(draw(names), draw(st.sampled_from(["hyperparameters", "selfplay"])), draw(plain))
    if kind == "write":
        return write_record(draw(names), draw(st.integers(0, 2**63 - 1)))
    info = draw(st.dictionaries(st.text(max_size=8), plain, max_size=4))
    return hello_record(info) if kind == "hello" else [5, info]


@st.composite
def valid_envelopes(draw) -> list:
    seq = draw(st.integers(1, 2**63 - 1))
    return [
        WIRE_VERSION,
        draw(st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Zs", "Cf", "Co", "Cn")),
                     min_size=1, max_size=MAX_SENDER_LENGTH)),
        seq,
        draw(st.integers(0, seq)),
        draw(st.integers(0, 2**63 - 1)),
        draw(st.lists(valid_records(), max_size=6)),
    ]


def pack(envelope: Any) -> bytes:
    return msgpack.packb(envelope, use_bin_type=True)


def _replace(obj: Any, path: List[int], value: Any) -> Any:
    if not path:
        return value
    if isinstance(obj, list) and obj:
        obj = list(obj)
        i = path[0] % len(obj)
        obj[i] = _replace(obj[i], path[1:], value)
    return obj


# --- properties ----------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes(data):
    decode_or_reason(data)


@FUZZ
@given(valid_envelopes())
def test_valid_frames_decode_to_what_was_sent(envelope):
    frame = decode_or_reason(pack(envelope))
    assert isinstance(frame, Frame), frame
    assert (frame.sender, frame.seq, frame.lowest_sendable, frame.dropped) == tuple(envelope[1:5])
    assert len(frame.records) == len(envelope[5])
    for sent, got in zip(envelope[5], frame.records):
        if sent[0] == 0:
            # NaN and infinities are values like any other: they arrive bit for bit.
            assert got.packed == sent[5]
            assert [math.isnan(v) or v for v in got.values] == [math.isnan(v) or v for v in unpack_values(sent[5])]


@FUZZ
@given(valid_envelopes(), st.lists(st.integers(0, 10), min_size=0, max_size=4), anything)
def test_any_field_replaced_by_anything(envelope, path, value):
    decode_or_reason(pack(_replace(envelope, path, value)))


@FUZZ
@given(valid_envelopes(), st.data())
def test_byte_mutations_of_valid_frames(envelope, data):
    raw = bytearray(pack(envelope))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=6))
        elif op == "delete" and raw:
            del raw[at]
        elif op == "truncate":
            del raw[at:]
    decode_or_reason(bytes(raw))


@FUZZ
@given(valid_envelopes(), int64, st.sampled_from([0, 2, 3, 4]))
def test_out_of_range_integers_in_envelope_fields(envelope, number, field):
    reason = decode_or_reason(pack(_replace(envelope, [field], number)))
    if field == 0 and number != WIRE_VERSION:
        assert reason is RejectReason.BAD_VERSION or reason is RejectReason.NOT_MSGPACK
    if field == 2 and number < 1:
        assert reason is RejectReason.BAD_ENVELOPE
    if field in (2, 3, 4) and number >= 2**63:
        assert reason is RejectReason.BAD_ENVELOPE


@FUZZ
@given(valid_envelopes(), int64, st.integers(0, 3))
def test_unknown_record_kinds_and_bad_arity(envelope, kind, extra):
    if kind in (0, 2, 3, 4, 5):
        return
    envelope[5] = [[kind] + [None] * extra]
    assert decode_or_reason(pack(envelope)) is RejectReason.BAD_RECORD


@FUZZ
@given(anything)
def test_record_validators_raise_only_record_error(obj):
    for candidate in (obj, [0, obj, obj, obj, obj, obj], [1, "c", 1, obj], [2, "c", "selfplay", obj], [1, "c", 1, [obj]]):
        try:
            decode_record(candidate)
        except RecordError:
            pass
        try:
            decode_batch(msgpack.packb([candidate], use_bin_type=True))
        except RecordError:
            pass


@FUZZ
@given(st.binary(max_size=256))
def test_intake_judges_arbitrary_bytes_without_raising(data):
    decision = Intake(clock=lambda: 0.0).receive(data, "peer")
    assert decision.verdict in (Verdict.REJECT, Verdict.ACCEPT, Verdict.GAP, Verdict.DUPLICATE)


# --- hand-crafted hostile frames -----------------------------------------------------------


def _envelope_with(records_raw: bytes, sender_raw: bytes = b"\xa1s") -> bytes:
    """A 6-array envelope whose sender and records are raw msgpack bytes."""
    return b"\x96\x01" + sender_raw + b"\x01\x01\x00" + records_raw


def _array32(n: int) -> bytes:
    return b"\xdd" + struct.pack(">I", n)


def _map32(n: int) -> bytes:
    return b"\xdf" + struct.pack(">I", n)


HOSTILE = {
    "array header claims 2**32-1 items": _envelope_with(_array32(2**32 - 1)),
    "map header claims 2**32-1 entries": _envelope_with(b"\x91\x94\x02\xa1c\xa8selfplay" + _map32(2**32 - 1)),
    "1100 nested huge array headers": _array32(100_000) * 1100,
    "1100 nested huge map headers": _map32(4096) * 1100,
    "nested huge headers in a property value": _envelope_with(b"\x91\x94\x02\xa1c\xa8selfplay" + _array32(90_000) * 1100),
    "nesting deeper than msgpack's stack": b"\x91" * 5000,
    "property nested deeper than MAX_NESTING": _envelope_with(b"\x91\x94\x02\xa1c\xa8selfplay" + b"\x91" * (MAX_NESTING + 2) + b"\x00"),
    "invalid UTF-8 sender": _envelope_with(b"\x90", sender_raw=b"\xa3\xff\xfe\xfd"),
    "invalid UTF-8 category": _envelope_with(b"\x91\x93\x03\xa2\xc3\x28\x01"),
    "string claims 4 GiB": _envelope_with(b"\x90", sender_raw=b"\xdb\xff\xff\xff\xff"),
    "bin claims 4 GiB": _envelope_with(b"\x91\x96\x00\xa1c\xa1k\x00\x00\xc6\xff\xff\xff\xff"),
    "string longer than MAX_STRING_BYTES": _envelope_with(b"\x90", sender_raw=b"\xdb" + struct.pack(">I", MAX_STRING_BYTES + 1) + b"a" * (MAX_STRING_BYTES + 1)),
    "ext type": _envelope_with(b"\x91\xd4\x01\x00"),
    "non-string map key": _envelope_with(b"\x91\x92\x04\x81\x01\x01"),
    "map as map key": _envelope_with(b"\x91\x92\x04\x81\x80\x01"),
    "truncated valid frame": encode_frame("s", 1, 1, 0, [stat_record("c", "k", 0, 0, pack_values([1.0, 2.0]))])[:-3],
    "trailing bytes after a valid frame": encode_frame("s", 1, 1, 0, []) + b"\x00",
    "too large": b"\x00" * (MAX_FRAME_BYTES + 1),
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hand_crafted_hostile_frames_are_rejected_with_bounded_memory(name):
    data = HOSTILE[name]
    tracemalloc.start()
    try:
        reason = decode_or_reason(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(reason, RejectReason), f"{name} was accepted"
    # Bounded: a few MiB of working memory beyond the input, whatever the headers claim.
    assert peak < len(data) + (16 << 20), f"{name}: decoding took {peak} bytes"


def test_container_limits_shrink_with_the_frame():
    """A header can never claim more items than the frame has bytes (why the bombs above are cheap)."""
    with pytest.raises(WireError) as info:
        decode_frame(_array32(100_000) * 1100)
    assert info.value.reason is RejectReason.NOT_MSGPACK and "max_array_len" in info.value.detail
    # ... while a legitimate frame with many records still decodes
    many = [write_record("c", i) for i in range(20_000)]
    assert len(decode_frame(encode_frame("s", 1, 1, 0, many)).records) == 20_000
    big_map = {f"k{i}": i for i in range(MAX_MAP_ENTRIES)}
    assert decode_frame(encode_frame("s", 1, 1, 0, [hello_record(big_map)])).records[0].info == big_map
    assert MAX_RECORDS_PER_FRAME >= 20_000


def test_nan_and_infinities_are_valid_values():
    special = [math.nan, math.inf, -math.inf, -0.0, 5e-324]
    frame = decode_frame(encode_frame("s", 1, 1, 0, [
        stat_record("c", "k", 0, 0, pack_values(special)),
        property_record("c", "hyperparameters", {"lr": math.nan, "x": [math.inf]}),
    ]))
    assert_valid_frame(frame)
    values = frame.records[0].values
    assert math.isnan(values[0]) and values[1:3] == [math.inf, -math.inf] and values[4] == 5e-324
    assert math.isnan(frame.records[1].value["lr"])
