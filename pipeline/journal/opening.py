"""Opening the journal: its lock, the newest segment's repair, and reading back what recovery replays.

A mixin of :class:`.writer.Journal` (the positions and files it sets up are the writer's):
``open()`` locks the directory, repairs the newest segment's tail in place and
positions the writer at its end; the collector then replays
:meth:`JournalOpening.recovery_entries`.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
from typing import Iterator

from .reader import JournalReader, iter_entries
from .segments import (
    Entry,
    EntryType,
    FsyncPolicy,
    JournalError,
    JournalLockedError,
    Region,
    entry_from,
    fsync_directory,
    list_segments,
    read_file,
    repair_segment,
    scan,
    segment_path,
)

log = logging.getLogger(__name__)

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


class JournalOpening:
    """Open and recovery; mixed into :class:`.writer.Journal`."""

    # -- open / recovery -------------------------------------------------------------

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
            log.warning(
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
            log.warning("journal %s: %s damaged regions in segment %s padded", self._dir, repair.padded_regions, newest)
        if repair.kept < repair.size:
            log.warning("journal %s: torn tail at %s, %s bytes cut", self._dir, newest + repair.kept, repair.size - repair.kept)
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
