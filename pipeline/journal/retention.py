"""Journal retention and per-consumer quotas (docs/internals.md, "Journal").

A segment is deleted once every consumer's committed cursor is past its end
(the journal itself never deletes the newest).  A consumer more than
``quota_bytes`` behind the head gets a *quota position*: the oldest segment start that
brings it back under quota.  The fetch server moves it up to its quota position and
counts what it skipped, and retention treats that position as its cursor, so one
stuck plugin bounds neither the disk nor the others.

With no consumers at all nothing is deleted: a plugin enabled later may be
back-filled from the start of the journal.
"""

from __future__ import annotations

import array
import bisect
import logging
from typing import Dict, List, Optional, Protocol

from .writer import Journal

logger = logging.getLogger(__name__)

RETENTION_INTERVAL = 1.0
"""Seconds between two retention passes (each reads every consumer's state page)."""


class Cursors(Protocol):
    """Whose cursors hold the journal back, and where each stands (the collector's worker supervisor)."""

    def consumers(self) -> List[str]: ...

    def committed(self, plugin: str) -> int: ...


def quota_position(committed: int, head: int, segment_starts: List[int], quota_bytes: int) -> int:
    """The lowest position a consumer at ``committed`` may still read (0: within quota, no limit)."""
    if head - committed <= quota_bytes or not segment_starts:
        return 0
    index = bisect.bisect_left(segment_starts, head - quota_bytes)
    if index >= len(segment_starts):
        return segment_starts[-1]  # the newest segment alone is over quota: never skip into it
    return max(segment_starts[index], 0)


class EntryIndex:
    """A sparse map position → entry ordinal, to count entries between two positions cheaply.

    One sample per :data:`SAMPLE_ENTRIES` entries or :data:`SAMPLE_BYTES` bytes,
    whichever comes first, kept in two ``array('q')`` (16 bytes a sample) and
    pruned with retention.  Counts are exact at samples and low by less than a
    sample's span in between (segment starts, where quota positions fall, are always
    sampled); entries older than this collector (but for the
    newest segment, seeded at recovery) are not known and count as none.
    """

    SAMPLE_ENTRIES = 1024
    SAMPLE_BYTES = 1 << 20

    def __init__(self, start: int = 0, entries: int = 0, end: int = 0) -> None:
        # Sample i: ``_ordinals[i]`` entries come before position ``_positions[i]``.
        self._positions = array.array("q", [start])
        self._ordinals = array.array("q", [0])
        self._ordinal = entries
        self._end = end
        if entries and end > start:
            self._positions.append(end)
            self._ordinals.append(entries)

    def appended(self, position: int, end: int, anchor: bool = False) -> None:
        """One entry at ``position`` (ending at ``end``); ``anchor``: always sample here (a segment start)."""
        if (
            anchor
            or self._ordinal - self._ordinals[-1] >= self.SAMPLE_ENTRIES
            or position - self._positions[-1] >= self.SAMPLE_BYTES
        ):
            self._positions.append(position)
            self._ordinals.append(self._ordinal)
        self._ordinal += 1
        self._end = end

    def ordinal_at(self, position: int) -> int:
        if position >= self._end:
            return self._ordinal
        index = bisect.bisect_right(self._positions, position) - 1
        return self._ordinals[max(index, 0)]

    def count(self, start: int, end: int) -> int:
        return max(0, self.ordinal_at(end) - self.ordinal_at(start))

    def prune(self, before: int) -> None:
        """Forget samples older than ``before`` but the last of them (it still anchors counts)."""
        index = bisect.bisect_right(self._positions, before) - 1
        if index > 0:
            del self._positions[:index]
            del self._ordinals[:index]

    def __len__(self) -> int:
        return len(self._positions)


class Retention:
    def __init__(self, journal: Journal, quota_bytes: int) -> None:
        self._journal = journal
        self.quota_bytes = quota_bytes
        self.cursors: Optional[Cursors] = None
        self._quota_positions: Dict[str, int] = {}
        self.index = EntryIndex()
        self._next_pass = 0.0
        self.deleted_bytes = 0

    # --- bookkeeping from the loop ------------------------------------------------------

    def note_recovered(self, newest_base: int, newest_segment_entries: int) -> None:
        self.index = EntryIndex(newest_base, newest_segment_entries, self._journal.end_position)

    def note_appended(self, position: int, anchor: bool = False) -> None:
        self.index.appended(position, self._journal.end_position, anchor)

    # --- queries -------------------------------------------------------------------------------

    def quota_position(self, plugin: str) -> int:
        return self._quota_positions.get(plugin, 0)

    def count_between(self, start: int, end: int) -> int:
        """Entries in ``[start, end)``, as far as this collector knows (see :class:`EntryIndex`)."""
        return self.index.count(start, end)

    def quota_positions(self) -> Dict[str, int]:
        return dict(self._quota_positions)

    # --- the pass ---------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if now < self._next_pass:
            return
        self._next_pass = now + RETENTION_INTERVAL
        cursors = self.cursors
        if cursors is None:
            return
        consumers = cursors.consumers()
        if not consumers:
            self._quota_positions = {}
            return
        head = self._journal.end_position
        starts = self._journal.segment_starts()
        positions: Dict[str, int] = {}
        cut = head
        for plugin in consumers:
            committed = cursors.committed(plugin)
            position = quota_position(committed, head, starts, self.quota_bytes)
            if position:
                if position != self._quota_positions.get(plugin):
                    logger.warning(
                        "plugin %s is %d bytes behind (quota %d): its quota position moves to %d",
                        plugin, head - committed, self.quota_bytes, position,
                    )
                positions[plugin] = position
            cut = min(cut, max(committed, position))
        self._quota_positions = positions
        freed = self._journal.delete_before(cut)
        if freed:
            self.deleted_bytes += freed
            # Samples before the oldest consumer's cursor are no longer asked about.
            self.index.prune(min(min(cursors.committed(p) for p in consumers), cut))
            logger.info("retention: deleted %d bytes of journal before %d", freed, self._journal.start_position)
