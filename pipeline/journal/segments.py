"""The journal's on-disk format: entries, segment files, and the scan that finds entries.

A segment file ``<base:020d>.seg`` holds the journal bytes from absolute position
``base`` on; segment N+1 starts where segment N ends.  An entry is::

    header  struct "<IIB"  (payload length, zlib.crc32(type byte + payload), type)
    payload length bytes

Nothing else is in a file: no file header, no index, so a position is a plain byte
offset and the reader and the writer agree on it without talking to each other.

Damage is found by :func:`scan`: a run of bytes that does not parse as an intact
entry is followed forward to the next offset where an intact entry begins (a sane
header *and* a matching CRC).  What lies between is a damaged region; if no intact
entry follows, the rest is a tail (torn by a crash, or damaged beyond use).
"""

from __future__ import annotations

import enum
import errno
import os
import re
import struct
import zlib
from typing import Iterator, List, NamedTuple, Optional, Tuple, Union

from ...plugins import StatbusError

HEADER = struct.Struct("<IIB")
HEADER_SIZE = HEADER.size  # 9
# Sanity cap on one payload.  A length above it is garbage, not a huge entry: the
# largest real payload is a wire frame holding one media value (72 MiB,
# wire.MAX_MEDIA_FRAME_BYTES) or a snapshot, below this.
MAX_PAYLOAD = 96 << 20
SEGMENT_SUFFIX = ".seg"
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")

Buffer = Union[bytes, bytearray, memoryview]


class EntryType(enum.IntEnum):
    """Kind of a journal entry; the value is the type byte on disk."""

    PAD = 0  # filler written over a damaged region; readers skip it
    SNAPSHOT = 1  # first entry of every segment: dedupe state + open periods
    FRAME = 2  # a validated wire frame, as received
    SUMMARY = 3  # a finished SummaryRecord, msgpack


# CRC of the type byte alone, the seed of every entry's CRC: the type byte is
# covered without building ``type + payload`` on the hot path.
_TYPE_SEED = {t: zlib.crc32(bytes([t])) for t in EntryType}
_SEED_BY_BYTE = tuple(_TYPE_SEED[EntryType(i)] for i in range(len(EntryType)))
_TYPES = tuple(EntryType(i) for i in range(len(EntryType)))
_MAX_TYPE = len(EntryType) - 1

# A cheap pre-filter for resync, run by the regex engine in C: a header can only
# start where the length's top byte is small enough (MAX_PAYLOAD < 2**27) and the
# type byte is a known type.  Survivors are checked fully in Python.
assert MAX_PAYLOAD < 1 << 27 and _MAX_TYPE < 8
_CANDIDATE = re.compile(rb"(?=[\x00-\xff]{3}[\x00-\x07][\x00-\xff]{4}[\x00-\x07])", re.DOTALL)


class Entry(NamedTuple):
    """One journal entry: where it starts, where the next one starts, and its content."""

    position: int
    end: int
    type: EntryType
    payload: bytes


class JournalError(StatbusError):
    """The journal cannot do what was asked (not open, entry too large, disk error)."""


class JournalLockedError(JournalError):
    """Another process already writes this journal."""


WRITE_RETRY_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})
"""Write and sync failures the journal's owner waits out (full disk, quota, I/O error)
instead of failing: the entries stay buffered and a later commit writes them."""


class JournalWriteError(JournalError):
    """Buffered entries could not be written or synced; they are still held, in order.

    ``errno`` is the OS error's; ``pending_bytes`` what waits in memory for the
    disk.  The positions already handed out stay true: the next successful
    :meth:`Journal.commit` writes the same bytes at the same offsets.
    """

    def __init__(self, message: str, errno_: Optional[int], pending_bytes: int, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message
        """What failed, without the directory: ``"write failed: No space left on device"``."""
        self.errno = errno_
        self.pending_bytes = pending_bytes

    @property
    def retryable(self) -> bool:
        return self.errno in WRITE_RETRY_ERRNOS


def whole_entries_length(data: Buffer, limit: int) -> int:
    """Bytes of the complete entries at the start of ``data`` that lie within its first ``limit`` bytes.

    ``data`` must start at an entry boundary (the writer's buffer always does).
    """
    offset = 0
    while offset + HEADER_SIZE <= limit:
        end = offset + HEADER_SIZE + HEADER.unpack_from(data, offset)[0]
        if end > limit:
            break
        offset = end
    return offset


class Region(enum.IntEnum):
    """What :func:`scan` found between two offsets."""

    ENTRY = 0  # an intact entry
    DAMAGED = 1  # bytes that are not an entry, followed by an intact entry
    TAIL = 2  # bytes that are not an entry, up to the end of what was scanned


def entry_crc(type: int, payload: Buffer) -> int:
    try:
        seed = _SEED_BY_BYTE[type]
    except (IndexError, TypeError):
        raise JournalError(f"unknown entry type {type!r}") from None
    return zlib.crc32(payload, seed)


def encode_entry(type: int, payload: Buffer) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise JournalError(f"entry payload of {len(payload)} bytes exceeds MAX_PAYLOAD ({MAX_PAYLOAD})")
    return HEADER.pack(len(payload), entry_crc(type, payload), type) + bytes(payload)


def pad_entries(total: int) -> List[bytes]:
    """PAD entries that together cover exactly ``total`` bytes (``total >= HEADER_SIZE``).

    A region longer than one PAD can hold is split; the pieces are sized so that the
    last one is never shorter than a header.
    """
    if total < HEADER_SIZE:
        raise JournalError(f"cannot pad {total} bytes: a PAD entry needs at least {HEADER_SIZE}")
    pads = []
    largest = HEADER_SIZE + MAX_PAYLOAD
    while total > largest:
        # Leave at least a header's worth for what follows.
        size = min(largest, total - HEADER_SIZE)
        pads.append(encode_entry(EntryType.PAD, bytes(size - HEADER_SIZE)))
        total -= size
    pads.append(encode_entry(EntryType.PAD, bytes(total - HEADER_SIZE)))
    return pads


def check_entry(view: memoryview, off: int, limit: int) -> int:
    """Check the entry starting at ``view[off]``, looking no further than ``limit``.

    Returns its total size when intact, 0 when it is incomplete (fewer than a header's
    bytes, or a sane header whose payload runs past ``limit``), -1 when it is damaged
    (length above the cap, unknown type, or CRC mismatch).
    """
    if limit - off < HEADER_SIZE:
        return 0
    length, crc, type_ = HEADER.unpack_from(view, off)
    if length > MAX_PAYLOAD or type_ > _MAX_TYPE:
        return -1
    end = off + HEADER_SIZE + length
    if end > limit:
        return 0
    if zlib.crc32(view[off + HEADER_SIZE : end], _SEED_BY_BYTE[type_]) != crc:
        return -1
    return end - off


def entry_from(view: memoryview, off: int, size: int, position: int) -> Entry:
    """Build the :class:`Entry` of an intact entry already checked by :func:`check_entry`."""
    return Entry(position, position + size, _TYPES[view[off + 8]], bytes(view[off + HEADER_SIZE : off + size]))


def find_next_intact(view: memoryview, start: int, limit: int) -> Optional[int]:
    """First offset in ``[start, limit)`` where an intact entry lies wholly before ``limit``."""
    if start >= limit:
        return None
    for match in _CANDIDATE.finditer(view, start, limit):
        off = match.start()
        if check_entry(view, off, limit) > 0:
            return off
    return None


def scan(data: Buffer, start: int = 0, limit: Optional[int] = None) -> Iterator[Tuple[Region, int, int]]:
    """Walk ``data[start:limit]`` and yield ``(region, begin, end)`` offsets covering it.

    A damaged region always spans at least ``HEADER_SIZE`` bytes: the search for the
    next intact entry starts a header past the damage, so that the region can be
    covered by a PAD entry.  An intact entry that would begin inside those first
    bytes overlaps the damaged header and is taken as part of the damage.
    """
    view = memoryview(data)
    limit = len(view) if limit is None else limit
    off = start
    while off < limit:
        size = check_entry(view, off, limit)
        if size > 0:
            yield Region.ENTRY, off, off + size
            off += size
            continue
        nxt = find_next_intact(view, off + HEADER_SIZE, limit)
        if nxt is None:
            yield Region.TAIL, off, limit
            return
        yield Region.DAMAGED, off, nxt
        off = nxt


class Repair(NamedTuple):
    """What :func:`repair_segment` found and did."""

    size: int  # file size before the repair
    kept: int  # file size after it
    entries: int  # intact entries (PADs included)
    padded_regions: int
    padded_bytes: int
    first_type: Optional[EntryType]  # type of the entry at offset 0, if intact


def repair_segment(fd: int) -> Repair:
    """Scan a whole segment file and repair it in place.

    A damaged region followed by an intact entry is overwritten with PAD entries of
    exactly its length, so every later position stays true; a tail with no intact
    entry after it (torn by a crash, or damaged) is truncated.  The fd must be
    open for reading and writing; the repair is fsynced before returning.
    """
    size = os.fstat(fd).st_size
    data = read_file(fd, size)
    view = memoryview(data)
    entries = padded = padded_bytes = 0
    kept = size
    first_type: Optional[EntryType] = None
    for region, begin, end in scan(view):
        if region is Region.ENTRY:
            entries += 1
            if begin == 0:
                first_type = _TYPES[view[HEADER_SIZE - 1]]
        elif region is Region.DAMAGED:
            offset = begin
            for pad in pad_entries(end - begin):
                write_file(fd, pad, offset)
                offset += len(pad)
            padded += 1
            padded_bytes += end - begin
        else:
            kept = begin
    if kept < size:
        os.ftruncate(fd, kept)
    if padded or kept < size:
        os.fsync(fd)
    return Repair(size, kept, entries, padded, padded_bytes, first_type)


def segment_name(base: int) -> str:
    return f"{base:020d}{SEGMENT_SUFFIX}"


def segment_path(directory: str, base: int) -> str:
    return os.path.join(directory, segment_name(base))


def list_segments(directory: str) -> List[int]:
    """Bases of the segment files in ``directory``, oldest first (other files ignored)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    bases = []
    for name in names:
        match = _SEGMENT_NAME.match(name)
        if match:
            bases.append(int(match.group(1)))
    bases.sort()
    return bases


def read_file(fd: int, size: int, offset: int = 0) -> bytes:
    """``size`` bytes from ``offset`` (fewer at end of file), despite short reads."""
    parts = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)


def write_file(fd: int, data: Buffer, offset: int) -> None:
    """Write all of ``data`` at ``offset`` despite short writes."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        offset += written
        view = view[written:]


class FsyncPolicy(enum.Enum):
    ALWAYS = "always"  # fsync in every commit(), i.e. before every ack
    INTERVAL = "interval"  # fsync at most every fsync_interval seconds, from commit() or tick()
    NEVER = "never"  # leave it to the OS


def fsync_directory(directory: str) -> None:
    """Make a file's creation or deletion in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
