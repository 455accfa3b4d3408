"""Reading the journal: the collector serves worker fetches with it, tools dump with it.

The reader needs nothing from the writer: it lists the segment files and reads what
the OS holds.  So it sees exactly what the writer has committed (buffered appends
are not in the file yet), whether it runs in the collector or in another process.

What a reader does at each irregularity, so that a consumer never stalls on damage
and never sees half an entry:

* position before the oldest segment (segments deleted by retention): jump to the
  oldest segment's start;
* end of a segment that has a successor: continue at the successor's base (a gap
  between them, only possible after data loss, is jumped);
* damaged bytes: resync forward to the next intact entry; at the very end of a
  finished segment, jump to the successor;
* an entry that runs past the end of the newest segment: stop before it — the
  writer may be writing it right now.  A damaged entry at the end of the newest
  segment with nothing intact after it is treated the same way.

Jumped bytes are added to :attr:`JournalReader.skipped_bytes`.  A caller sees a jump
as the first returned position (or the continuation position, when nothing is
returned) being greater than the position it asked for.
"""

from __future__ import annotations

import bisect
import collections
import logging
import os
from typing import Iterator, List, Optional, Tuple

from .segments import (
    HEADER,
    HEADER_SIZE,
    MAX_PAYLOAD,
    Entry,
    check_entry,
    entry_from,
    find_next_intact,
    list_segments,
    read_file,
    segment_path,
)

log = logging.getLogger(__name__)

_MIN_CHUNK = 64 << 10


class JournalReader:
    """Reads entries by position.  Not thread-safe: one reader per thread."""

    def __init__(self, directory: str, *, max_open_files: int = 8) -> None:
        self._dir = directory
        self._bases: List[int] = []
        self._fds: "collections.OrderedDict[int, int]" = collections.OrderedDict()
        self._max_open = max(1, max_open_files)
        self._closed = False
        self.skipped_bytes = 0  # bytes jumped over: deleted segments, gaps, damage
        self.jumps = 0  # jumps over deleted segments or gaps
        self.corrupt_regions = 0  # damaged regions resynced past

    # -- segment files -------------------------------------------------------------

    def _refresh(self) -> None:
        self._bases = list_segments(self._dir)
        present = set(self._bases)
        for base in [b for b in self._fds if b not in present]:
            os.close(self._fds.pop(base))

    def _fd(self, base: int) -> Optional[int]:
        """An open descriptor of segment ``base``, or None if the file is gone."""
        fd = self._fds.get(base)
        if fd is not None:
            self._fds.move_to_end(base)
            if os.fstat(fd).st_nlink > 0:
                return fd
            del self._fds[base]  # deleted by retention while we held it open
            os.close(fd)
            return None
        try:
            fd = os.open(segment_path(self._dir, base), os.O_RDONLY)
        except FileNotFoundError:
            return None
        self._fds[base] = fd
        while len(self._fds) > self._max_open:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd

    def _segment(self, pos: int, refreshed: bool) -> Tuple[Optional[int], Optional[int], int, Optional[int], bool]:
        """Locate ``pos``: (base, fd, file size, successor's base, refreshed).

        ``base`` is None when there is no segment at all.  When ``pos`` lies before
        the oldest segment, ``base`` is that oldest segment, ``pos < base`` and ``fd``
        is None.  The listing is refreshed at most a few times per call: when
        ``pos`` is not in a known segment, a known file is gone, or ``pos`` is at the
        end of the newest known segment (a newer one may have appeared).
        """
        for _ in range(4):
            if not self._bases:
                if refreshed:
                    break
                self._refresh()
                refreshed = True
                continue
            index = bisect.bisect_right(self._bases, pos) - 1
            if index < 0:
                if not refreshed:
                    self._refresh()
                    refreshed = True
                    continue
                return self._bases[0], None, 0, None, refreshed
            base = self._bases[index]
            fd = self._fd(base)
            if fd is None:  # deleted since we listed it
                self._refresh()
                refreshed = True
                continue
            size = os.fstat(fd).st_size
            nxt = self._bases[index + 1] if index + 1 < len(self._bases) else None
            if nxt is None and pos >= base + size and not refreshed:
                self._refresh()
                refreshed = True
                continue
            return base, fd, size, nxt, refreshed
        return None, None, 0, None, refreshed

    def _skip(self, pos: int, to: int, why: str) -> int:
        log.warning("journal %s: skipping %s bytes at %s (%s)", self._dir, to - pos, pos, why)
        self.skipped_bytes += to - pos
        return to

    # -- reading ---------------------------------------------------------------------

    def read(self, after: int, max_bytes: int = 1 << 20, max_entries: int = 10_000) -> Tuple[List[Entry], int]:
        """Entries starting at or after ``after``, and the position to continue from.

        PAD and SNAPSHOT entries are included (the caller filters).  At most
        ``max_entries`` entries and about ``max_bytes`` bytes are returned, but always
        at least one entry when one is available, however large.  ``after`` should be
        where an entry starts (0, or an ``end``/continuation position returned
        earlier); a position inside an entry is resynced like damage.  A position
        past the end of the journal returns ``([], after)``.
        """
        if self._closed:
            raise ValueError("read() on a closed JournalReader")
        if after < 0:
            raise ValueError(f"position must be >= 0, got {after}")
        entries: List[Entry] = []
        pos = after
        budget = max(1, max_bytes)
        need = 0  # bytes the next chunk must hold: an entry longer than the last chunk
        refreshed = False
        while len(entries) < max_entries and budget > 0:
            base, fd, size, nxt, refreshed = self._segment(pos, refreshed)
            if base is None:
                break
            if pos < base:
                self.jumps += 1
                pos = self._skip(pos, base, "segments deleted")
                continue
            assert fd is not None
            off = pos - base
            if off >= size:
                if nxt is None:
                    break  # the head: nothing more yet
                self.jumps += 1
                pos = self._skip(pos, nxt, "gap between segments")
                continue
            chunk = read_file(fd, min(size - off, max(budget, need, _MIN_CHUNK)), off)
            need = 0
            if not chunk:
                break
            view = memoryview(chunk)
            limit = len(view)
            whole_rest = off + limit >= size
            i = 0
            while i < limit and len(entries) < max_entries and budget > 0:
                n = check_entry(view, i, limit)
                if n > 0:
                    entries.append(entry_from(view, i, n, pos))
                    i += n
                    pos += n
                    budget -= n
                    continue
                if n == 0 and not whole_rest:
                    # The entry runs past this chunk: read a chunk that holds it.
                    need = HEADER_SIZE
                    if limit - i >= HEADER_SIZE:
                        need += HEADER.unpack_from(view, i)[0]
                    if entries and need > budget:
                        return entries, pos
                    break
                if nxt is None and not refreshed:
                    # Before waiting here, make sure this really is the newest segment.
                    self._refresh()
                    refreshed = True
                    break
                if n == 0 and nxt is None:
                    return entries, pos  # partial entry at the head: being written
                found = self._resync(fd, off + i + HEADER_SIZE, size)
                if found is not None:
                    self.corrupt_regions += 1
                    pos = self._skip(pos, base + found, "damaged entry")
                elif nxt is not None:
                    self.corrupt_regions += 1
                    pos = self._skip(pos, nxt, "damaged end of segment")
                else:
                    return entries, pos  # damaged head: wait for what comes after it
                break
        return entries, pos

    def _resync(self, fd: int, start: int, size: int) -> Optional[int]:
        """Offset in the segment of the next intact entry at or after ``start``."""
        if start >= size:
            return None
        rest = memoryview(read_file(fd, size - start, start))
        found = find_next_intact(rest, 0, len(rest))
        return None if found is None else start + found

    def entry_at(self, position: int) -> Optional[Entry]:
        """The intact entry starting exactly at ``position``, or None."""
        if self._closed:
            raise ValueError("entry_at() on a closed JournalReader")
        base, fd, size, _, _ = self._segment(position, False)
        if base is None or fd is None or position < base:
            return None
        off = position - base
        header = read_file(fd, HEADER_SIZE, off)
        if len(header) < HEADER_SIZE:
            return None
        length = HEADER.unpack(header)[0]
        if length > MAX_PAYLOAD or off + HEADER_SIZE + length > size:
            return None
        view = memoryview(header + read_file(fd, length, off + HEADER_SIZE))
        n = check_entry(view, 0, len(view))
        return entry_from(view, 0, n, position) if n > 0 else None

    def close(self) -> None:
        self._closed = True
        while self._fds:
            _, fd = self._fds.popitem()
            os.close(fd)

    def __enter__(self) -> "JournalReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_entries(directory: str, after: int = 0) -> Iterator[Entry]:
    """Every entry from ``after`` to the current end of the journal (PAD and SNAPSHOT included)."""
    with JournalReader(directory) as reader:
        pos = after
        while True:
            entries, nxt = reader.read(pos)
            yield from entries
            if not entries and nxt == pos:
                return
            pos = nxt
