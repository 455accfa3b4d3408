"""The spool: frames a trainer could not get acknowledged before it exited, waiting on disk.

A trainer writes them (:mod:`.trainer.spool`) into ``<statbus_dir>/spool/`` and the
run's collector takes them in (:mod:`.collector.spool_intake`) through its ordinary
intake, so the per-sender delivery rule (docs/internals.md "Wire") drops what the
journal already holds.  This module is the file format both sides share.

One file = ``MAGIC``, a CRC-32 of the body, then the msgpack body
``{"sender", "frames": [frame bytes, ...]}`` — the frames as they go on the wire,
consecutive seqs, oldest first.  A file is written whole (tmp + fsync + rename), so a
name ending in :data:`SUFFIX` is always a complete file; its name sorts a sender's
files in seq order.
"""

from __future__ import annotations

import os
import re
import zlib
from typing import List, NamedTuple, Sequence, Tuple

import msgpack

from ..plugins import StatbusError

MAGIC = b"statbus-spool-1\n"
SUFFIX = ".spool"
SET_ASIDE_SUFFIX = ".set-aside"
"""A file the collector could not take in (damaged, or out of its sender's order): kept, not read again."""
FILE_BYTES = 8 << 20
"""Frame bytes per file (a bigger single frame gets a file of its own): a trainer's spool is
its buffer's bound (``buffer_bytes``, 64 MiB by default) in files of at most this size."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class SpoolError(StatbusError):
    """A spool file that cannot be read as one."""


class SpoolFile(NamedTuple):
    sender: str
    frames: List[bytes]


def file_prefix(sender: str) -> str:
    """What every file of ``sender`` is named first: the sender made file-safe, and a dash."""
    return f"{_UNSAFE.sub('_', sender)[:120]}-"


def file_name(sender: str, first_seq: int) -> str:
    """``<sender, made file-safe>-<first seq, 20 digits>.spool``: a sender's files sort by seq."""
    return f"{file_prefix(sender)}{first_seq:020d}{SUFFIX}"


def encode(sender: str, frames: Sequence[bytes]) -> bytes:
    body = msgpack.packb({"sender": sender, "frames": list(frames)}, use_bin_type=True)
    return MAGIC + zlib.crc32(body).to_bytes(4, "big") + body


def decode(data: bytes) -> SpoolFile:
    head = len(MAGIC) + 4
    if not data.startswith(MAGIC) or len(data) < head:
        raise SpoolError("not a statbus spool file")
    body = data[head:]
    if zlib.crc32(body) != int.from_bytes(data[len(MAGIC):head], "big"):
        raise SpoolError("checksum mismatch (damaged)")
    try:
        obj = msgpack.unpackb(body, raw=False)
    except Exception as exc:  # noqa: BLE001 — any decoding failure means a damaged file
        raise SpoolError(f"undecodable body: {exc}") from None
    sender, frames = (obj.get("sender"), obj.get("frames")) if isinstance(obj, dict) else (None, None)
    if not isinstance(sender, str) or not isinstance(frames, list) or not all(type(f) is bytes for f in frames):
        raise SpoolError("body is not {sender, frames}")
    return SpoolFile(sender, frames)


def waiting(spool_dir: str) -> List[Tuple[str, int]]:
    """``(path, bytes)`` of every complete spool file, in name order (each sender's in seq order)."""
    try:
        entries = list(os.scandir(spool_dir))
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
            try:
                found.append((entry.path, entry.stat().st_size))
            except FileNotFoundError:
                continue  # taken in meanwhile
    return sorted(found)


def summary(spool_dir: str) -> dict:
    """What ``statbus status`` shows of a spool: files and bytes waiting, files set aside."""
    files = waiting(spool_dir)
    try:
        set_aside = sum(1 for name in os.listdir(spool_dir) if name.endswith(SET_ASIDE_SUFFIX))
    except FileNotFoundError:
        set_aside = 0
    return {"dir": spool_dir, "files": len(files), "bytes": sum(size for _, size in files), "set_aside": set_aside}
