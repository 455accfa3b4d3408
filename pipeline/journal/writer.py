"""The journal: the collector's append-only, CRC-checked log of frames and summaries.

Format and scan live in :mod:`.segments`, the read side in :mod:`.reader`; this module is
the single writer, top to bottom — opening (the lock, the newest segment's repair, what
recovery replays), appends, commits, fsync policy, rotation and retention — and re-exports
the names the rest of the pipeline uses.

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

import dataclasses
import errno
import fcntl
import logging
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

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
    Region,
    entry_crc,
    entry_from,
    fsync_directory,
    list_segments,
    read_file,
    repair_segment,
    scan,
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

_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)
logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"


@dataclasses.dataclass(frozen=True)
class RecoveryReport:
    """What :meth:`Journal.open` found and repaired in the newest segment."""

    segments: int  # segment files present after open
    entries: int  # intact entries in the newest segment (PADs included)
    truncated_bytes: int  # torn or damaged tail cut off
    padded_regions: int  # damaged regions in the middle, overwritten with PAD entries
    padded_bytes: int
    newest_base: int  # position where the newest segment starts
    end_position: int  # where the next append goes
    has_snapshot: bool  # the newest segment starts with an intact SNAPSHOT

    @property
    def damaged(self) -> bool:
        return bool(self.truncated_bytes or self.padded_regions)


class Journal:
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

    # -- opening ------------------------------------------------------------------------

    def open(self) -> RecoveryReport:
        """Create the directory, lock it, repair the newest segment, position at its end."""
        if self._fd >= 0:
            raise JournalError(f"journal {self._dir} is already open")
        os.makedirs(self._dir, exist_ok=True)
        self._lock()
        try:
            report = self._recover()
        except BaseException:
            self._close_files()
            raise
        self._last_fsync = self._clock()
        self.recovery = report
        if report.damaged:
            logger.warning(
                "journal %s repaired: %s bytes of torn tail cut, %s damaged regions (%s bytes) padded",
                self._dir, report.truncated_bytes, report.padded_regions, report.padded_bytes,
            )
        return report

    def _lock(self) -> None:
        fd = os.open(os.path.join(self._dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise JournalLockedError(f"journal {self._dir} is open in another writer") from None
            raise
        self._lock_fd = fd

    def _recover(self) -> RecoveryReport:
        bases = list_segments(self._dir)
        if not bases:
            self._fd = os.open(segment_path(self._dir, 0), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            if self._policy is not FsyncPolicy.NEVER:
                fsync_directory(self._dir)
            self._bases, self._sizes, self._base, self._written, self._end = [0], {}, 0, 0, 0
            return RecoveryReport(1, 0, 0, 0, 0, 0, 0, False)
        newest = bases[-1]
        self._fd = os.open(segment_path(self._dir, newest), os.O_RDWR)
        repair = repair_segment(self._fd)
        if repair.padded_regions:
            logger.warning("journal %s: %s damaged regions in segment %s padded", self._dir, repair.padded_regions, newest)
        if repair.kept < repair.size:
            logger.warning("journal %s: torn tail at %s, %s bytes cut", self._dir, newest + repair.kept, repair.size - repair.kept)
        written = repair.kept
        self._bases = bases
        self._sizes = {base: os.stat(segment_path(self._dir, base)).st_size for base in bases[:-1]}
        self._base, self._written, self._end = newest, written, newest + written
        self._has_snapshot = repair.first_type is EntryType.SNAPSHOT
        return RecoveryReport(
            segments=len(bases),
            entries=repair.entries,
            truncated_bytes=repair.size - written,
            padded_regions=repair.padded_regions,
            padded_bytes=repair.padded_bytes,
            newest_base=newest,
            end_position=self._end,
            has_snapshot=self._has_snapshot,
        )

    # -- recovery reads ------------------------------------------------------------------

    def newest_segment_entries(self) -> Iterator[Entry]:
        """Every intact, written entry of the newest segment, oldest first.

        After open() that is the whole repaired segment; the first entry is its
        SNAPSHOT when :attr:`has_snapshot`.
        """
        if self._fd < 0:
            raise JournalError("newest_segment_entries() on a journal that is not open")
        data = read_file(self._fd, self._written)
        view = memoryview(data)
        for region, begin, end in scan(view):
            if region is Region.ENTRY:
                yield entry_from(view, begin, end - begin, self._base + begin)

    def recovery_entries(self) -> Iterator[Entry]:
        """Entries from the newest segment that starts with a SNAPSHOT to the end.

        The newest segment has none when a crash tore it off (or it is empty after
        a crash during rotation); then replay starts from an older segment's
        snapshot, and later segments' snapshots come along in order.  Without any
        snapshot, everything retained is yielded.
        """
        with JournalReader(self._dir) as reader:
            start = self.start_position
            for base in reversed(self._bases):
                entry = reader.entry_at(base)
                if entry is not None and entry.type is EntryType.SNAPSHOT:
                    start = base
                    break
        yield from iter_entries(self._dir, start)

    # -- the hot path ----------------------------------------------------------------

    def append(self, type: EntryType, payload: bytes) -> int:
        """Buffer one entry; return its position.  Readers see it after :meth:`commit`."""
        if self._fd < 0:
            raise JournalError("append() on a journal that is not open")
        length = len(payload)
        if length > MAX_PAYLOAD:
            raise JournalError(f"entry payload of {length} bytes exceeds MAX_PAYLOAD ({MAX_PAYLOAD})")
        crc = entry_crc(type, payload)  # raises JournalError for an unknown type
        position = self._end
        buf = self._buf
        buf += HEADER.pack(length, crc, type)
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

    def sync(self) -> None:
        """fsync now what :meth:`commit` wrote (unless the policy is NEVER): before deleting
        what the entries replace (a spool file)."""
        if self._fd >= 0 and self._policy is not FsyncPolicy.NEVER:
            self._fsync()

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
