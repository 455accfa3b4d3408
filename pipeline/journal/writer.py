"""The journal: the collector's append-only, CRC-checked log of frames and summaries.

Format and scan live in :mod:`.segments`, the read side in
:mod:`.reader`, opening and recovery in :mod:`.opening`; this module is the single writer —
appends, commits, fsync policy, rotation and retention — and re-exports the names
the rest of the pipeline uses.

Life of the collector's journal::

    journal = Journal(layout.journal_dir, fsync=FsyncPolicy.INTERVAL)
    report = journal.open()                 # repairs the newest segment's tail
    if not report.has_snapshot:             # new journal, or the snapshot was lost
        journal.rotate(snapshot_bytes)      # every segment starts with a SNAPSHOT
    for entry in journal.recovery_entries():  # rebuild dedupe state + open periods
        ...
    pos = journal.append(EntryType.FRAME, frame)
    journal.commit()                        # visible to readers, durable per policy; then ack
    journal.tick()                          # ~10x/s: interval fsync
    if journal.needs_rotation():
        journal.rotate(snapshot_bytes)
    journal.delete_before(min_cursor)

Positions are absolute byte offsets and never move: recovery overwrites damage in
place with PAD entries and only ever cuts the tail.

A write or sync that fails (a full disk, a quota, an I/O error) raises
:class:`JournalWriteError` from ``commit()`` and loses nothing: whole entries that
reached the file stay, a torn one is cut back, and the rest stays buffered, in
order, to be written at the same offsets by a later ``commit()``.  Readers only
ever see whole entries.  While an error is outstanding, appends are kept in memory
(no early write-through) and ``rotate()`` defers its snapshot's write the same way.

Not thread-safe: the collector's event loop is its only user.
"""

from __future__ import annotations

import os
import time
import zlib
from typing import Any, Callable, Dict, List, Optional

from .opening import JournalOpening, RecoveryReport
from .reader import JournalReader, iter_entries
from .segments import (
    HEADER,
    HEADER_SIZE,
    MAX_PAYLOAD,
    Entry,
    EntryType,
    FsyncPolicy,
    JournalError,
    JournalLockedError,
    JournalWriteError,
    fsync_directory,
    segment_path,
    whole_entries_length,
)

__all__ = [
    "HEADER_SIZE",
    "MAX_PAYLOAD",
    "Entry",
    "EntryType",
    "FsyncPolicy",
    "Journal",
    "JournalError",
    "JournalLockedError",
    "JournalReader",
    "JournalWriteError",
    "RecoveryReport",
    "iter_entries",
]

# Appends are kept in user space until commit(); past this many bytes they are
# written to the OS early, so that a long burst between commits stays bounded in memory.
WRITE_THROUGH_BYTES = 8 << 20

_SEED = {t: zlib.crc32(bytes([t])) for t in EntryType}
_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


class Journal(JournalOpening):
    """The single writer of a journal directory (an advisory lock keeps it single).

    ``open()`` never writes a SNAPSHOT itself: it creates an empty first segment for a
    new journal and reports ``has_snapshot``; the collector, which owns the snapshot
    content, then calls :meth:`rotate`.  ``rotate()`` on an empty segment writes the
    snapshot into it instead of starting another file.
    """

    def __init__(
        self,
        directory: str,
        *,
        segment_bytes: int = 64 << 20,
        fsync: FsyncPolicy = FsyncPolicy.INTERVAL,
        fsync_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if segment_bytes < HEADER_SIZE:
            raise JournalError(f"segment_bytes must be >= {HEADER_SIZE}, got {segment_bytes}")
        if fsync_interval < 0:
            raise JournalError(f"fsync_interval must be >= 0, got {fsync_interval}")
        self._dir = directory
        self._segment_bytes = segment_bytes
        self._policy = FsyncPolicy(fsync)
        self._interval = fsync_interval
        self._clock = clock
        self._fd = -1
        self._lock_fd = -1
        self._bases: List[int] = []
        self._sizes: Dict[int, int] = {}  # finished segments: base -> file size
        self._base = 0  # current segment
        self._written = 0  # bytes of the current segment handed to the OS
        self._buf = bytearray()
        self._end = 0
        self._dirty = False  # written since the last fsync
        self._last_fsync = 0.0
        self._has_snapshot = False
        self._dir_unsynced = False
        self.write_error: Optional[JournalWriteError] = None
        """The last write/sync failure, until a commit() succeeds."""
        self.fsync_count = 0
        self.commit_count = 0
        self.recovery: Optional[RecoveryReport] = None

    # -- the hot path ----------------------------------------------------------------

    def append(self, type: EntryType, payload: bytes) -> int:
        """Buffer one entry; return its position.  Readers see it after :meth:`commit`."""
        if self._fd < 0:
            raise JournalError("append() on a journal that is not open")
        length = len(payload)
        if length > MAX_PAYLOAD:
            raise JournalError(f"entry payload of {length} bytes exceeds MAX_PAYLOAD ({MAX_PAYLOAD})")
        try:
            seed = _SEED[type]
        except KeyError:
            raise JournalError(f"unknown entry type {type!r}") from None
        position = self._end
        buf = self._buf
        buf += HEADER.pack(length, zlib.crc32(payload, seed), type)
        buf += payload
        self._end = position + HEADER_SIZE + length
        if len(buf) >= WRITE_THROUGH_BYTES and self.write_error is None:
            try:
                self._write_buffer()
            except JournalWriteError:
                pass  # kept buffered; commit() retries and reports it
        return position

    def _write_buffer(self) -> None:
        if not self._buf:
            return
        data, self._buf = self._buf, bytearray()
        done = 0
        with memoryview(data) as view:
            try:
                while done < len(data):
                    done += os.pwrite(self._fd, view[done:], self._written + done)
            except OSError as exc:
                # Whole entries that reached the file stay (a reader may have seen them);
                # a torn one is cut back, and the rest waits for a later commit(), which
                # writes the same bytes at the same offsets: positions handed out stay true.
                kept = whole_entries_length(view, done)
                self._written += kept
                self._dirty = self._dirty or kept > 0
                if done > kept:
                    try:
                        os.ftruncate(self._fd, self._written)
                    except OSError:
                        pass  # the retry overwrites the torn bytes; readers stop at them meanwhile
                self._buf = data[kept:]
                raise self._failed("write", exc) from exc
        self._written += done
        self._dirty = True

    def _failed(self, what: str, exc: OSError) -> JournalWriteError:
        reason = f"{what} failed: {exc.strerror or exc}"
        error = JournalWriteError(f"journal {self._dir}: {reason}", exc.errno, len(self._buf), reason)
        self.write_error = error
        return error

    @property
    def pending_bytes(self) -> int:
        """Appended bytes not yet handed to the OS (all of it waits for the disk after a write error)."""
        return len(self._buf)

    def commit(self) -> None:
        """Hand buffered entries to the OS (visible to readers) and fsync per policy.

        Call before acknowledging anything that was appended.
        """
        if self._fd < 0:
            raise JournalError("commit() on a journal that is not open")
        self._write_buffer()
        self.commit_count += 1
        if self._policy is FsyncPolicy.ALWAYS:
            self._fsync()
        elif self._policy is FsyncPolicy.INTERVAL:
            self._fsync_if_due()
        self.write_error = None

    @property
    def sync_due(self) -> bool:
        """Written since the last fsync, which a later :meth:`tick` makes (the interval policy)."""
        return self._dirty and self._fd >= 0 and self._policy is FsyncPolicy.INTERVAL

    def tick(self) -> None:
        """Interval fsync of what commit() already wrote; cheap when nothing is due."""
        if self._fd >= 0 and self._policy is FsyncPolicy.INTERVAL:
            self._fsync_if_due()

    def _fsync_if_due(self) -> None:
        if self._dirty and self._clock() - self._last_fsync >= self._interval:
            self._fsync()

    def _sync_directory(self) -> None:
        """fsync the directory after a segment was created; retried with the next fsync until it succeeds."""
        try:
            fsync_directory(self._dir)
        except OSError as exc:
            self._failed("syncing the directory", exc)
            return
        self._dir_unsynced = False

    def _fsync(self) -> None:
        if self._dir_unsynced:
            self._sync_directory()
            if self._dir_unsynced:
                raise self.write_error  # type: ignore[misc]
        if not self._dirty:
            return
        try:
            _fdatasync(self._fd)
        except OSError as exc:
            raise self._failed("fsync", exc) from exc
        self._dirty = False
        self._last_fsync = self._clock()
        self.fsync_count += 1

    # -- segments ----------------------------------------------------------------------

    def needs_rotation(self) -> bool:
        return self._end - self._base >= self._segment_bytes

    def rotate(self, snapshot_payload: bytes) -> int:
        """Commit, then start a segment whose first entry is this SNAPSHOT; return its position.

        The finished segment is fsynced before the new file exists (unless the policy is
        NEVER), so recovery, which scans only the newest segment, never needs an older one's tail.
        """
        if self._fd < 0:
            raise JournalError("rotate() on a journal that is not open")
        self.commit()
        if self._end > self._base:
            if self._policy is not FsyncPolicy.NEVER:
                self._fsync()
            base = self._end
            try:
                fd = os.open(segment_path(self._dir, base), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except OSError as exc:
                raise self._failed("creating a segment", exc) from exc
            os.close(self._fd)
            self._sizes[self._base] = self._written
            self._fd, self._base, self._written = fd, base, 0
            self._bases.append(base)
            if self._policy is not FsyncPolicy.NEVER:
                self._dir_unsynced = True
                self._sync_directory()
        position = self.append(EntryType.SNAPSHOT, snapshot_payload)
        self._has_snapshot = True
        try:
            self._write_buffer()
            self.commit_count += 1
            if self._policy is not FsyncPolicy.NEVER:
                self._fsync()
        except JournalWriteError:
            # The new segment is current and its snapshot is first in the buffer:
            # the next commit() writes it, and a crash before that finds an empty
            # newest segment, which recovery already handles (replay from the previous one).
            pass
        return position

    def delete_before(self, position: int) -> int:
        """Delete whole segments that end at or before ``position`` (never the newest).

        Returns the bytes freed.  The caller passes the lowest cursor of all consumers.
        While the newest segment's SNAPSHOT waits for the disk, the segment before it
        stays: recovery would need its snapshot.
        """
        freed = 0
        while len(self._bases) > 1 and self._bases[1] <= position:
            if len(self._bases) == 2 and self._written == 0:
                break
            base = self._bases.pop(0)
            freed += self._sizes.pop(base, 0)
            try:
                os.unlink(segment_path(self._dir, base))
            except FileNotFoundError:
                pass
        if freed and self._fd >= 0 and self._policy is not FsyncPolicy.NEVER:
            self._dir_unsynced = True
            self._sync_directory()  # on failure retried with the next fsync
        return freed

    def status(self) -> Dict[str, Any]:
        """The journal's part of the ``journal`` section of ``statbus status``."""
        return {
            "directory": self._dir,
            "start": self.start_position,
            "head": self.end_position,
            "size_bytes": self.size_bytes(),
            "segments": len(self._bases),
            "fsync": self._policy.value,
        }

    def segment_starts(self) -> List[int]:
        return list(self._bases)

    def size_bytes(self) -> int:
        """Bytes on disk or buffered, over all retained segments."""
        return sum(self._sizes.values()) + (self._end - self._base)

    @property
    def end_position(self) -> int:
        """Where the next append goes (buffered entries included)."""
        return self._end

    @property
    def committed_position(self) -> int:
        """End of what readers can see."""
        return self._base + self._written

    @property
    def start_position(self) -> int:
        """Oldest retained byte."""
        return self._bases[0] if self._bases else 0

    @property
    def has_snapshot(self) -> bool:
        """The newest segment starts with a SNAPSHOT entry."""
        return self._has_snapshot

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Commit, fsync (unless NEVER) and release the files; safe to call twice."""
        if self._fd < 0:
            return
        try:
            self._write_buffer()
            if self._policy is not FsyncPolicy.NEVER:
                self._fsync()
        finally:
            # After a write error the unwritten entries go: nothing of them was acknowledged.
            self._buf = bytearray()
            self._close_files()

    def _close_files(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def __enter__(self) -> "Journal":
        if self._fd < 0:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
