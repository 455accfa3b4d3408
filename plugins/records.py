"""The records a writer is fed, and their msgpack form.

These record types are the contract between the journal and the worker
hosts: a worker reads them in journal order and turns them into
``on_add_stat``, ``write_stats``, ``add_property`` and (for writers that define it)
``add_media`` calls.

Their msgpack form is an array whose first element is the record kind (see
:class:`RecordKind`).  Values travel as packed little-endian float64 (``bin``),
because per-object encoding, not the socket, bounds throughput.  The pipeline
adds its own marker kinds: write, hello, bye (3–5, :data:`PIPELINE_MARKER_KINDS`, older
than MEDIA's code) and any future one in the code space above :class:`RecordKind`'s.
"""

from __future__ import annotations

import array
import math
import struct
import sys
from enum import IntEnum
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import msgpack

from .errors import RecordError
from .media import Media, decode_media
from .stats import StatsAggregationMethod, StatsPropertyType, StatsSummary

MAX_NAME_LENGTH = 1024
"""Longest category or key name, in characters, accepted anywhere."""


class RecordKind(IntEnum):
    """Wire code of each writer-visible record kind."""

    STAT = 0
    SUMMARY = 1
    PROPERTY = 2
    MEDIA = 6
    """One media value, alone in its frame (codes 3–5 are the pipeline's markers)."""


PIPELINE_MARKER_KINDS = frozenset({3, 4, 5})
"""The pipeline's marker codes below MEDIA's (write, hello, bye: ``pipeline.wire.MarkerKind``);
a consumer of writer records skips them, as it skips any code above :class:`RecordKind`'s."""


class StatOp(IntEnum):
    """What a stat record does to its key's values in the open period."""

    ADD = 0
    SET = 1


_AGGREGATIONS = {m.value: m for m in StatsAggregationMethod}
_STAT_OPS = {op.value: op for op in StatOp}  # a dict lookup: calling the enum is slow on the hot path
_PROPERTY_TYPES = {p.value: p for p in StatsPropertyType}


_STRUCTS: Dict[int, struct.Struct] = {}
_MAX_STRUCTS = 4096


def _float64s(count: int) -> Optional[struct.Struct]:
    """A compiled little-endian struct of ``count`` float64s (None past the cache's size)."""
    compiled = _STRUCTS.get(count)
    if compiled is None and len(_STRUCTS) < _MAX_STRUCTS:
        compiled = _STRUCTS[count] = struct.Struct(f"<{count}d")
    return compiled


def pack_values(values: Sequence[float]) -> bytes:
    """Pack floats as little-endian float64."""
    # A compiled struct per length packs a list of Python floats ~2x faster than
    # array("d", ...) does, and "<" fixes the byte order on any host.
    compiled = _float64s(len(values))
    if compiled is not None:
        return compiled.pack(*values)
    packed = array.array("d", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def unpack_values(packed: bytes) -> List[float]:
    """Inverse of :func:`pack_values`."""
    compiled = _float64s(len(packed) >> 3) if len(packed) <= 8 * 64 else None
    if compiled is not None:  # short runs (most summaries): about half the cost of an array
        return list(compiled.unpack(packed))
    values = array.array("d")
    values.frombytes(packed)
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


class StatRecord(NamedTuple):
    """Values one trainer added to (or set on) one key during one batch."""

    category: str
    key: str
    aggregation: StatsAggregationMethod
    op: StatOp
    packed: bytes

    @property
    def values(self) -> List[float]:
        return unpack_values(self.packed)

    def to_msgpack(self) -> list:
        return [RecordKind.STAT, self.category, self.key, self.aggregation.value, int(self.op), self.packed]


class SummaryRecord(NamedTuple):
    """A closed summary period of one category: what ``write_stats`` receives."""

    category: str
    step: int
    entries: Tuple[Tuple[str, StatsAggregationMethod, bytes], ...]
    """(key, aggregation, packed values), keys in first-seen order."""

    def summaries(self) -> Dict[str, StatsSummary]:
        # tuple.__new__ skips the NamedTuple's Python-level __new__ (a third of the cost per key).
        new = tuple.__new__
        return {key: new(StatsSummary, (unpack_values(packed), agg)) for key, agg, packed in self.entries}

    def to_msgpack(self) -> list:
        return [
            RecordKind.SUMMARY,
            self.category,
            self.step,
            [[key, agg._value_, packed] for key, agg, packed in self.entries],  # _value_: no enum property call
        ]


class PropertyRecord(NamedTuple):
    """A run property announced by a trainer (hyperparameters, ELO, ...)."""

    category: str
    property_type: StatsPropertyType
    value: Any

    def to_msgpack(self) -> list:
        return [RecordKind.PROPERTY, self.category, self.property_type.value, self.value]


class MediaRecord(NamedTuple):
    """One media value a trainer recorded (``SummaryWriter.add_image``, ...): what ``add_media`` receives.

    ``category`` is the public one (a ``SummaryWriter``'s log_dir name or ``<name>/<sub-run>``).
    A frame holds at most one, so its journal entry identifies it (docs/internals.md "Wire").
    """

    category: str
    tag: str
    step: int
    media: Media

    def to_msgpack(self) -> list:
        return [RecordKind.MEDIA.value, self.category, self.tag, self.step, self.media.to_msgpack()]


WriterRecord = StatRecord | SummaryRecord | PropertyRecord | MediaRecord  # type: ignore[valid-type]


STEPPED_MARK = "\x00"
"""First character of the wire categories of ``SummaryWriter``'s stepped protocol
(``pipeline/collector/step_merge.py``): stat records of ``\0<category>`` hold its values,
each run of a step's values led by a step marker (:func:`step_marker`)."""
STEP_MARKER_TAG = 0x7FFC
"""The top 16 bits of a step marker: a quiet NaN no arithmetic produces (Python's and
numpy's NaN is 0x7FF8...); its low 48 bits are the step."""
MAX_MARKED_STEP = (1 << 48) - 1
_BITS = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")


def step_marker(step: int) -> float:
    """The float64 that says "the values after me are of ``step``" (0 <= step <= MAX_MARKED_STEP)."""
    return _DOUBLE.unpack(_BITS.pack((STEP_MARKER_TAG << 48) | step))[0]


def marked_step(value: float) -> int:
    """The step of a step marker, or -1 for any other value (NaNs included)."""
    if value == value:
        return -1
    bits = _BITS.unpack(_DOUBLE.pack(value))[0]
    return bits & MAX_MARKED_STEP if bits >> 48 == STEP_MARKER_TAG else -1


def public_category(name: str) -> str:
    """The category a writer sees for a stat record's wire category."""
    return name[1:] if name[:1] == STEPPED_MARK else name


def public_values(values: List[float]) -> List[float]:
    """A stepped stat record's values without its step markers."""
    return [v for v in values if v == v or marked_step(v) < 0]


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{what} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_NAME_LENGTH:
        raise RecordError(f"{what} must have 1 to {MAX_NAME_LENGTH} characters, got {len(value)}")
    return value


def check_packed(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise RecordError(f"{what} must be packed float64 bytes, got {type(value).__name__}")
    if len(value) % 8:
        raise RecordError(f"{what}: {len(value)} bytes is not a whole number of float64")
    return value


def check_aggregation(value: Any) -> StatsAggregationMethod:
    if type(value) is not int or value not in _AGGREGATIONS:
        raise RecordError(f"unknown aggregation {value!r}; known are {sorted(_AGGREGATIONS)}")
    return _AGGREGATIONS[value]


def check_step(value: Any) -> int:
    if type(value) is not int or value < 0 or value >= 2**63:
        raise RecordError(f"step must be a non-negative 64-bit integer, got {value!r}")
    return value


def _check_arity(obj: Sequence[Any], arity: int, kind: str) -> None:
    if len(obj) != arity:
        raise RecordError(f"{kind} record must have {arity} fields, got {len(obj)}")


_ADD = StatOp.ADD
_SET = StatOp.SET
_new_tuple = tuple.__new__
_MAX_RECORD_KIND = int(max(RecordKind))


def decode_stat(obj: Sequence[Any]) -> StatRecord:
    # Stat records are nearly every record there is: a well-formed one passes on a few
    # type and length comparisons (no enum attribute, no NamedTuple __new__); anything
    # else takes the checked path, whose error names what is wrong.
    if len(obj) == 6:
        _, category, key, agg, op, packed = obj
        if (type(category) is str and type(key) is str and type(packed) is bytes and type(agg) is int
                and type(op) is int and 0 < len(category) <= MAX_NAME_LENGTH and 0 < len(key) <= MAX_NAME_LENGTH
                and not len(packed) & 7):
            aggregation = _AGGREGATIONS.get(agg)
            if aggregation is not None:
                if op == 0:
                    return _new_tuple(StatRecord, (category, key, aggregation, _ADD, packed))
                if op == 1 and len(packed) == 8:
                    return _new_tuple(StatRecord, (category, key, aggregation, _SET, packed))
    return _decode_stat_checked(obj)


def _decode_stat_checked(obj: Sequence[Any]) -> StatRecord:
    _check_arity(obj, 6, "stat")
    op = obj[4]
    if type(op) is not int or op not in (StatOp.ADD, StatOp.SET):
        raise RecordError(f"stat op must be 0 (add) or 1 (set), got {op!r}")
    packed = check_packed(obj[5], "stat values")
    if op == StatOp.SET and len(packed) != 8:
        raise RecordError("a set stat record carries exactly one value")
    return StatRecord(
        check_name(obj[1], "category"), check_name(obj[2], "key"), check_aggregation(obj[3]), _STAT_OPS[op], packed
    )


def decode_summary(obj: Sequence[Any]) -> SummaryRecord:
    _check_arity(obj, 4, "summary")
    entries = obj[3]
    if not isinstance(entries, (list, tuple)):
        raise RecordError("summary entries must be an array")
    checked = []
    append = checked.append
    aggregations = _AGGREGATIONS
    for entry in entries:
        # The common case on a few comparisons; anything odd gets the checks that name the fault.
        if type(entry) is list and len(entry) == 3:
            key, agg, packed = entry
            if (type(key) is str and 0 < len(key) <= MAX_NAME_LENGTH and type(agg) is int and agg in aggregations
                    and type(packed) is bytes and not len(packed) & 7):
                append((key, aggregations[agg], packed))
                continue
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            raise RecordError("summary entry must be [key, aggregation, values]")
        append((check_name(entry[0], "key"), check_aggregation(entry[1]), check_packed(entry[2], "values")))
    return SummaryRecord(check_name(obj[1], "category"), check_step(obj[2]), tuple(checked))


def decode_property(obj: Sequence[Any]) -> PropertyRecord:
    _check_arity(obj, 4, "property")
    ptype = obj[2]
    if not isinstance(ptype, str) or ptype not in _PROPERTY_TYPES:
        raise RecordError(f"unknown property type {ptype!r}; known are {sorted(_PROPERTY_TYPES)}")
    return PropertyRecord(check_name(obj[1], "category"), _PROPERTY_TYPES[ptype], obj[3])


def decode_media_record(obj: Sequence[Any]) -> MediaRecord:
    _check_arity(obj, 5, "media")
    return MediaRecord(check_name(obj[1], "category"), check_name(obj[2], "media tag"), check_step(obj[3]),
                       decode_media(obj[4]))


_DECODERS = {RecordKind.STAT: decode_stat, RecordKind.SUMMARY: decode_summary, RecordKind.PROPERTY: decode_property,
             RecordKind.MEDIA: decode_media_record}


def decode_record(obj: Any) -> WriterRecord:
    """Validate and decode the msgpack form of a writer record."""
    if not isinstance(obj, (list, tuple)) or not obj:
        raise RecordError("a record must be a non-empty array")
    kind = obj[0]
    decoder = _DECODERS.get(kind) if type(kind) is int else None
    if decoder is None:
        raise RecordError(f"unknown record kind {kind!r}")
    return decoder(obj)


def pack_summary(summary: SummaryRecord) -> bytes:
    """A summary's bytes, as the journal's SUMMARY entries and the fetch protocol carry them.

    Deterministic, so a summary rebuilt by the collector's recovery compares byte for byte.
    """
    return msgpack.packb(summary.to_msgpack(), use_bin_type=True)


def unpack_summary(data: bytes) -> SummaryRecord:
    """The summary of :func:`pack_summary`'s bytes; raises :class:`RecordError`."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 — msgpack raises many types for bad input
        raise RecordError(f"summary is not msgpack: {exc!r}") from None
    record = decode_record(obj)
    if not isinstance(record, SummaryRecord):
        raise RecordError(f"expected a summary record, got {type(record).__name__}")
    return record


BatchRecord = StatRecord | PropertyRecord | MediaRecord  # type: ignore[valid-type]


def decode_batch(data: bytes, stats: bool = True) -> List[BatchRecord]:
    """The writer records of a journaled batch (the ``records`` array of a frame).

    Kinds 3–5 (:data:`PIPELINE_MARKER_KINDS`) and above :class:`RecordKind`'s are the
    pipeline's markers (write, hello, bye): a consumer of writer records skips them.  With ``stats=False`` stat
    records are skipped unchecked too (a consumer that only wants properties
    pays for the msgpack parse, not for validating every value).
    """
    try:
        items = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 — msgpack raises many types for bad input
        raise RecordError(f"batch is not msgpack: {exc!r}") from None
    if not isinstance(items, list):
        raise RecordError("a batch must be an array of records")
    records: List[BatchRecord] = []
    append = records.append
    for item in items:
        if type(item) is list and item and type(item[0]) is int:
            kind = item[0]
            if kind == 0:
                if stats:
                    append(decode_stat(item))
                continue
            if kind > _MAX_RECORD_KIND or kind in PIPELINE_MARKER_KINDS:
                continue
        record = decode_record(item)  # a property or media, or a malformed item that raises here
        if isinstance(record, SummaryRecord):
            raise RecordError("a batch cannot hold a summary record")
        append(record)
    return records


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity; writers that emit JSON use ``null``."""
    return value if math.isfinite(value) else None
