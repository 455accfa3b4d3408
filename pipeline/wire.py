"""The trainer → collector wire: one ZeroMQ frame is one msgpack envelope.

Envelope (an array, cheaper to encode and check than a map)::

    [version, sender, seq, lowest_sendable, dropped, records]

* ``sender``  — the trainer process's identity (unique per process and per fork);
* ``seq``     — 1, 2, 3, ... per sender; the collector accepts frames strictly in order;
* ``lowest_sendable``   — the lowest seq the sender can still re-send: frames below it were
  dropped by the sender's bounded buffer and will never come;
* ``dropped`` — values the sender has dropped so far (for status);
* ``records`` — writer records of :mod:`statbus.plugins.records` (stat, property,
  media) and the pipeline's markers below.  A frame holds at most one media record,
  and only a frame holding one may pass :data:`MAX_FRAME_BYTES` (up to
  :data:`MAX_MEDIA_FRAME_BYTES`).

Ack (collector → trainer, over the same ROUTER/DEALER pair)::

    [version, acked_seq]

``acked_seq`` is cumulative: every frame up to it is in the journal.

Refusal (collector → trainer, in place of an ack, on CURVE tcp)::

    [version, 0, reason]

``reason`` (:class:`Refusal`) says why nothing of this connection is taken any more:
the trainer stops re-sending on it and tells its user.
"""

from __future__ import annotations

import enum
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import msgpack

from ..plugins import StatbusError
from ..plugins.errors import RecordError
from ..plugins.media import MAX_MEDIA_BYTES
from ..plugins.records import (
    PIPELINE_MARKER_KINDS,
    MediaRecord,
    PropertyRecord,
    RecordKind,
    StatRecord,
    check_name,
    check_step,
    decode_media_record,
    decode_property,
    decode_stat,
)

WIRE_VERSION = 1

# Limits, named so that they can be documented and tested.  A frame past any of
# them is rejected whole, with a counted reason.
MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_MEDIA_FRAME_BYTES = MAX_MEDIA_BYTES + MAX_FRAME_BYTES
"""A frame holding one media record: its raw data (at most 64 MiB) plus what any frame may hold."""
MAX_RECORDS_PER_FRAME = 100_000
MAX_STRING_BYTES = 64 * 1024
MAX_MAP_ENTRIES = 4_096
MAX_NESTING = 16
MAX_SENDER_LENGTH = 128


class MarkerKind(enum.IntEnum):
    """Pipeline-only record kinds; codes continue :class:`~statbus.plugins.records.RecordKind`'s."""

    WRITE = 3
    HELLO = 4
    BYE = 5
    MEDIA_DROPS = 7
    """``[7, values, bytes]``: media values the sender dropped so far (its media bound), for status."""


# What decode_batch skips: 3-5, and any code above RecordKind's.
assert {int(k) for k in MarkerKind if k < RecordKind.MEDIA} == PIPELINE_MARKER_KINDS
assert all(k > max(RecordKind) for k in MarkerKind if k > RecordKind.MEDIA)

# Every record decoded looks its kind up: plain ints, not enum attribute look-ups.
_STAT = RecordKind.STAT.value
_PROPERTY = RecordKind.PROPERTY.value
_MEDIA = RecordKind.MEDIA.value
_WRITE = MarkerKind.WRITE.value
_HELLO = MarkerKind.HELLO.value
_BYE = MarkerKind.BYE.value
_MEDIA_DROPS = MarkerKind.MEDIA_DROPS.value


class RejectReason(enum.Enum):
    """Why a frame was refused; counted per reason and per sender."""

    TOO_LARGE = "too_large"
    NOT_MSGPACK = "not_msgpack"
    BAD_ENVELOPE = "bad_envelope"
    BAD_VERSION = "bad_version"
    BAD_RECORD = "bad_record"


class Refusal(enum.Enum):
    """Reasons a collector gives a trainer for refusing its frames (see the module's doc); counted
    in the intake's rejects under their values, beside :class:`RejectReason`'s."""

    REVOKED = "revoked"
    """The connection's CURVE key is no longer on the allow-list."""
    WRONG_KEY = "wrong_key"
    """The sender is bound to another CURVE key (the one that first used it)."""


class WireError(StatbusError):
    def __init__(self, reason: RejectReason, detail: str, sender: str | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.sender = sender


class WriteMarker(NamedTuple):
    """``write_stats(step)`` of a category: closes its period across all trainers."""

    category: str
    step: int


class Hello(NamedTuple):
    info: Dict[str, Any]
    """``pid``, ``host``, ``run_id`` and such: shown by ``statbus status``."""


class Bye(NamedTuple):
    info: Dict[str, Any]


class MediaDrops(NamedTuple):
    """Media values (and their raw bytes) the sender dropped so far, past its media bound."""

    values: int
    nbytes: int


Record = StatRecord | PropertyRecord | MediaRecord | WriteMarker | Hello | Bye | MediaDrops  # type: ignore[valid-type]


class Frame(NamedTuple):
    sender: str
    seq: int
    lowest_sendable: int
    dropped: int
    records: Tuple[Any, ...]


# --- encoding (trainer side) ------------------------------------------------

def stat_record(category: str, key: str, aggregation: int, op: int, packed: bytes) -> list:
    return [_STAT, category, key, aggregation, op, packed]


def property_record(category: str, property_type: str, value: Any) -> list:
    return [_PROPERTY, category, property_type, value]


def write_record(category: str, step: int) -> list:
    return [_WRITE, category, step]


def hello_record(info: Dict[str, Any]) -> list:
    return [_HELLO, info]


def bye_record(info: Dict[str, Any]) -> list:
    return [_BYE, info]


def media_drops_record(values: int, nbytes: int) -> list:
    return [_MEDIA_DROPS, values, nbytes]


def encode_frame(sender: str, seq: int, lowest_sendable: int, dropped: int, records: Sequence[list]) -> bytes:
    return msgpack.packb([WIRE_VERSION, sender, seq, lowest_sendable, dropped, list(records)], use_bin_type=True)


def frame_records_bytes(frame: bytes) -> bytes:
    """The ``records`` array of an encoded frame (one we wrote, or one :func:`decode_frame` accepted), as bytes.

    Skips the five envelope items with an Unpacker and slices at ``tell()``: the same
    cost for a frame of ten values as for one of a million.  The journal's FRAME entries
    reach the plugins as exactly this slice.
    """
    unpacker = msgpack.Unpacker(max_buffer_size=len(frame) + 1)
    unpacker.feed(frame)
    unpacker.read_array_header()
    for _ in range(5):
        unpacker.skip()
    return frame[unpacker.tell():]


def frame_records(frame: bytes) -> List[list]:
    """The records of an encoded frame this process wrote (a trainer re-encoding its own frames)."""
    return msgpack.unpackb(frame_records_bytes(frame), raw=False)


def encode_ack(acked_seq: int) -> bytes:
    return msgpack.packb([WIRE_VERSION, acked_seq])


def encode_refusal(reason: Refusal) -> bytes:
    return msgpack.packb([WIRE_VERSION, 0, reason.value])


def decode_ack_or_refusal(data: bytes) -> Tuple[int, Optional[Refusal]]:
    """``(acked_seq, None)`` for an ack, ``(0, reason)`` for a refusal; WireError for anything else."""
    try:
        reply = msgpack.unpackb(data, max_array_len=3, max_map_len=0, max_str_len=64, max_bin_len=0)
    except Exception as exc:  # noqa: BLE001 — any parse failure is one reason
        raise WireError(RejectReason.NOT_MSGPACK, f"reply is not msgpack: {exc!r}") from None
    if type(reply) is not list or reply[:1] != [WIRE_VERSION]:
        raise WireError(RejectReason.BAD_ENVELOPE, f"bad reply {reply!r}"[:200])
    if len(reply) == 3:
        try:
            return 0, Refusal(reply[2])
        except (ValueError, TypeError):
            raise WireError(RejectReason.BAD_ENVELOPE, f"unknown refusal {reply[2]!r}"[:200]) from None
    acked = reply[1] if len(reply) == 2 else None
    if type(acked) is not int or acked < 0:
        raise WireError(RejectReason.BAD_ENVELOPE, f"bad ack {acked!r}")
    return acked, None


def decode_ack(data: bytes) -> int:
    try:
        version, acked = msgpack.unpackb(data, max_array_len=2, max_map_len=0, max_str_len=0, max_bin_len=0)
    except Exception as exc:  # noqa: BLE001 — any parse failure is one reason
        raise WireError(RejectReason.NOT_MSGPACK, f"ack is not msgpack: {exc!r}") from None
    if version != WIRE_VERSION or type(acked) is not int or acked < 0:
        raise WireError(RejectReason.BAD_ENVELOPE, f"bad ack {acked!r}")
    return acked


# --- decoding (collector side) ----------------------------------------------

def _check_plain(value: Any, depth: int = 0) -> None:
    """Property and hello values: nested maps/arrays of plain scalars only."""
    if depth > MAX_NESTING:
        raise RecordError(f"value nested deeper than {MAX_NESTING}")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise RecordError(f"map keys must be strings, got {type(k).__name__}")
            _check_plain(v, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_plain(v, depth + 1)
    elif value is None or isinstance(value, (bool, int, float, str, bytes)):
        return
    else:
        raise RecordError(f"unsupported value type {type(value).__name__}")


def _decode_info(obj: Sequence[Any], kind: str) -> Dict[str, Any]:
    if len(obj) != 2 or not isinstance(obj[1], dict):
        raise RecordError(f"{kind} record must be [{kind}, map]")
    _check_plain(obj[1])
    return obj[1]


def _decode_wire_record(obj: Any) -> Any:
    if not isinstance(obj, (list, tuple)) or not obj:
        raise RecordError("a record must be a non-empty array")
    kind = obj[0]
    if type(kind) is not int:
        raise RecordError(f"record kind must be an integer, got {type(kind).__name__}")
    if kind == _STAT:
        return decode_stat(obj)
    if kind == _PROPERTY:
        record = decode_property(obj)
        _check_plain(record.value)
        return record
    if kind == _MEDIA:
        record = decode_media_record(obj)
        _check_plain(record.media.options)
        return record
    if kind == _WRITE:
        if len(obj) != 3:
            raise RecordError("write record must be [3, category, step]")
        return WriteMarker(check_name(obj[1], "category"), check_step(obj[2]))
    if kind == _HELLO:
        return Hello(_decode_info(obj, "hello"))
    if kind == _BYE:
        return Bye(_decode_info(obj, "bye"))
    if kind == _MEDIA_DROPS:
        if len(obj) != 3 or not all(type(n) is int and 0 <= n < 2**63 for n in obj[1:]):
            raise RecordError("media drops record must be [7, values, bytes], non-negative integers")
        return MediaDrops(obj[1], obj[2])
    raise RecordError(f"unknown or trainer-forbidden record kind {kind}")


def _unpack(data: bytes) -> Any:
    # msgpack pre-allocates a container as soon as it reads its header, and its
    # parser nests up to 1024 deep: 1024 headers each claiming 100,000 items (5 KB of
    # input) cost ~75 ms of allocating and freeing.  No container can hold more
    # items than the frame has bytes (an item is at least one byte, a map entry
    # two), so the limits shrink with the frame and such a header fails at once.
    size = len(data)
    return msgpack.unpackb(
        data,
        raw=False,
        use_list=True,
        strict_map_key=True,
        max_str_len=min(MAX_STRING_BYTES, size),
        max_bin_len=min(MAX_MEDIA_FRAME_BYTES, size),
        max_array_len=min(MAX_RECORDS_PER_FRAME, size),
        max_map_len=min(MAX_MAP_ENTRIES, size // 2),
        max_ext_len=0,
    )


def decode_frame(data: bytes) -> Frame:
    """Decode and validate one frame; raises :class:`WireError` with the reason."""
    if len(data) > MAX_MEDIA_FRAME_BYTES:
        raise WireError(RejectReason.TOO_LARGE, f"{len(data)} bytes > {MAX_MEDIA_FRAME_BYTES}")
    try:
        envelope = _unpack(data)
    except msgpack.ExtraData as exc:
        # Not its repr: that would spell out every extra byte (a 72 MiB frame of zeros: ~300 MB of text).
        raise WireError(RejectReason.NOT_MSGPACK, f"{len(exc.extra)} bytes after the envelope") from None
    except Exception as exc:  # noqa: BLE001 — msgpack raises many types for bad input
        raise WireError(RejectReason.NOT_MSGPACK, repr(exc)[:200]) from None
    if not isinstance(envelope, list) or len(envelope) != 6:
        raise WireError(RejectReason.BAD_ENVELOPE, "envelope must be a 6-element array")
    version, sender, seq, lowest_sendable, dropped, records = envelope
    if version != WIRE_VERSION or type(version) is not int:
        raise WireError(RejectReason.BAD_VERSION, f"version {version!r}, this collector speaks {WIRE_VERSION}")
    if not isinstance(sender, str) or not 0 < len(sender) <= MAX_SENDER_LENGTH or not sender.isprintable():
        raise WireError(RejectReason.BAD_ENVELOPE, "sender must be 1-128 printable characters")
    for name, value in (("seq", seq), ("lowest_sendable", lowest_sendable), ("dropped", dropped)):
        if type(value) is not int or not 0 <= value < 2**63:
            raise WireError(RejectReason.BAD_ENVELOPE, f"{name} must be a non-negative integer", sender)
    if seq < 1 or lowest_sendable > seq:
        raise WireError(RejectReason.BAD_ENVELOPE, f"seq {seq} / lowest_sendable {lowest_sendable} out of order",
                        sender)
    if not isinstance(records, list):
        raise WireError(RejectReason.BAD_ENVELOPE, "records must be an array", sender)
    try:
        decoded = tuple([_decode_wire_record(r) for r in records])
    except (RecordError, RecursionError) as exc:
        raise WireError(RejectReason.BAD_RECORD, str(exc), sender) from None
    media = sum(1 for record in decoded if type(record) is MediaRecord)
    if media > 1:
        raise WireError(RejectReason.BAD_RECORD, f"{media} media records in one frame, at most 1", sender)
    if len(data) > MAX_FRAME_BYTES and not media:
        raise WireError(RejectReason.TOO_LARGE, f"{len(data)} bytes > {MAX_FRAME_BYTES} without a media record",
                        sender)
    return Frame(sender, seq, lowest_sendable, dropped, decoded)
