"""Journal retention and per-consumer quotas (docs/internals.md, "Journal").

A segment is deleted once every consumer's committed cursor is past its end
(the journal itself never deletes the newest).  A consumer more than
``quota_bytes`` behind the head gets a *floor*: the oldest segment start that
brings it back under quota.  The fetch server moves it up to its floor and
counts what it skipped, and retention treats the floor as its cursor, so one
stuck plugin bounds neither the disk nor the others.

With no consumers at all nothing is deleted: a plugin enabled later may be
back-filled from the start of the journal.
"""

from __future__ import annotations

import bisect
import logging
from typing import Any, Dict, List, Optional

from .journal import Journal

logger = logging.getLogger(__name__)

RETENTION_INTERVAL = 1.0
"""Seconds between two retention passes (each reads every consumer's state page)."""


def quota_floor(committed: int, head: int, segment_starts: List[int], quota_bytes: int) -> int:
    """The lowest position a consumer at ``committed`` may still read (0: no floor)."""
    if head - committed <= quota_bytes or not segment_starts:
        return 0
    index = bisect.bisect_left(segment_starts, head - quota_bytes)
    if index >= len(segment_starts):
        return segment_starts[-1]  # the newest segment alone is over quota: never skip into it
    return max(segment_starts[index], 0)


class Retention:
    def __init__(self, journal: Journal, quota_bytes: int) -> None:
        self._journal = journal
        self.quota_bytes = quota_bytes
        self.supervisor: Optional[Any] = None
        self._floors: Dict[str, int] = {}
        self._counts: Dict[int, int] = {}
        """Entries per segment start, where this collector knows them (appended since it started,
        or found by recovery in the newest segment); segments older than this collector count 0."""
        self._current = 0
        self._next_pass = 0.0
        self.deleted_bytes = 0

    # --- bookkeeping from the loop ------------------------------------------------------

    def note_recovered(self, newest_segment_entries: int) -> None:
        starts = self._journal.segment_starts()
        self._current = starts[-1] if starts else 0
        self._counts[self._current] = newest_segment_entries

    def note_appended(self, entries: int) -> None:
        self._counts[self._current] = self._counts.get(self._current, 0) + entries

    def note_rotated(self) -> None:
        starts = self._journal.segment_starts()
        self._current = starts[-1] if starts else self._journal.end_position
        self._counts[self._current] = 1  # its snapshot

    # --- queries -------------------------------------------------------------------------------

    def floor(self, plugin: str) -> int:
        return self._floors.get(plugin, 0)

    def count_between(self, start: int, end: int) -> int:
        """Entries in the segments that begin in ``[start, end)`` (those this collector knows)."""
        return sum(count for base, count in self._counts.items() if start <= base < end)

    def floors(self) -> Dict[str, int]:
        return dict(self._floors)

    # --- the pass ---------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if now < self._next_pass:
            return
        self._next_pass = now + RETENTION_INTERVAL
        supervisor = self.supervisor
        if supervisor is None:
            return
        consumers = supervisor.consumers()
        if not consumers:
            self._floors = {}
            return
        head = self._journal.end_position
        starts = self._journal.segment_starts()
        floors: Dict[str, int] = {}
        cut = head
        for plugin in consumers:
            committed = supervisor.committed(plugin)
            floor = quota_floor(committed, head, starts, self.quota_bytes)
            if floor:
                if floor != self._floors.get(plugin):
                    logger.warning(
                        "plugin %s is %d bytes behind (quota %d): its floor moves to %d",
                        plugin, head - committed, self.quota_bytes, floor,
                    )
                floors[plugin] = floor
            cut = min(cut, max(committed, floor))
        self._floors = floors
        freed = self._journal.delete_before(cut)
        if freed:
            self.deleted_bytes += freed
            # Counts of deleted segments stay (a few ints per GiB): a consumer behind them
            # learns how many entries it lost.
            logger.info("retention: deleted %d bytes of journal before %d", freed, self._journal.start_position)
