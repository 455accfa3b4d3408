"""The hand-off between training threads and the sender thread of a trainer process.

Training threads append a value to the current per-(category, key) entry without a
lock (a dict get and a list append, each atomic under the GIL; see
:meth:`Handoff.settle_late` for the one race and how it is settled); any other call
first *seals* the current entries into the event queue under a short lock, then
queues itself, so the order of calls is kept.  Rarely, they wake the sender
through a pipe.  The sender (:mod:`.sender`) takes everything queued at once
with :meth:`Handoff.take_all`.

The queue's events are described in :mod:`.framing`.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import Any, Deque, Dict, Optional, Tuple

from .framing import BATCH_VALUES, Event, MediaEvent, SetStatEvent, StatsEvent, WriteEvent
from .rate_log import RateLimitedLog

logger = logging.getLogger(__name__)
_rlog = RateLimitedLog(logger)

MAX_PENDING_EVENTS = 2 * BATCH_VALUES
"""Events queued with no live sender past which they are dropped (a dead sender must not eat memory)."""
ENTRY_VALUES = 1024
"""Values of one key in the current entries past which they are sealed (a slow path every 1024 adds)."""
MAX_CURRENT_ENTRIES = 128
"""Keys in the current entries past which they are sealed: the current values stay ≤ 128 × 1024."""
MAX_PENDING_VALUES = 16 * BATCH_VALUES
"""Sealed values not yet taken by the sender past which new ones are dropped (a slow sender must
not eat memory either; markers and properties are kept)."""
TAKEN = object()
"""Key under which a sealed dict holds ``{ident: length}`` of the copy the sender took (see Handoff.settle_late)."""
_CLAIMS = object()


def _take(event: StatsEvent) -> StatsEvent:
    """The sender's copy of a sealed dict's event; the dict is marked with the lengths it
    was copied at (the client's lock held).  Lengths, not the copies: the sender goes
    on to merge into its copies."""
    sealed = event.sealed
    taken = {ident: entry[:] for ident, entry in sealed.items()}
    sealed[TAKEN] = {ident: len(entry) for ident, entry in taken.items()}
    return StatsEvent(taken)


class Handoff:
    """The queue, the current entries and the wake-up pipe, shared by training threads and the sender."""

    def __init__(self, counters: Dict[str, Any]) -> None:
        self.counters = counters
        self.queue: Deque[Event] = collections.deque()
        self.lock = threading.Lock()
        """Guards replacing ``current``, ``queue`` and ``_queued``, and the sender's take.
        ``add_stat``'s append to an existing entry does not take it."""
        self.current: Dict[Tuple[str, str], list] = {}
        """The values added since the last seal: ``(category, key) → [aggregation, v1, v2, ...]``."""
        self._queued = 0          # sealed values + other events in ``queue``
        self.media_queued = 0
        """Raw bytes of the media values in ``queue`` (and being framed): guarded by ``lock``."""
        self._wake_lock = threading.Lock()
        self._wake_flag = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._wfd, False)
        os.set_blocking(self._rfd, False)
        self._pipe_open = True

    # --- called from training threads ---------------------------------------

    def open_entry_locked(self, ident: Tuple[str, str], value: float, aggregation: Any) -> bool:
        """``add_stat``'s slow path, with ``self.lock`` held by the caller: open an entry, or
        seal the current ones first when the key's entry is full or its aggregation changed
        (so values stay in order).  True: call :meth:`wake` once the lock is released."""
        wake = False
        values = self.current.get(ident)
        if values is None:
            if len(self.current) >= MAX_CURRENT_ENTRIES:
                wake = self._seal_locked()
        elif values[0] is aggregation and len(values) <= ENTRY_VALUES:
            values.append(value)  # another thread sealed or opened it meanwhile
            return False
        else:
            wake = self._seal_locked()
        self.current[ident] = [aggregation, value]
        return wake

    def settle_late(self, sealed: Dict[Any, Any], ident: Tuple[str, str]) -> None:
        """Called by an ``add_stat`` that appended to an entry of ``sealed`` after it stopped being current.

        Its value is in the entry's list; the sender has it if it copied the list
        after the append.  Under the lock: no copy yet means the sender will copy
        it with the value.  Otherwise the list's values past the copy were missed:
        each late caller re-adds one of them (whichever is next unclaimed, so
        every missed value is re-added exactly once, whoever appended it).
        """
        with self.lock:
            taken = sealed.get(TAKEN)
            if taken is None:
                return
            entry = sealed[ident]
            claims = sealed.setdefault(_CLAIMS, {})
            claimed = claims.get(ident, 0)
            index = taken[ident] + claimed
            if index >= len(entry):
                return  # every late value of this entry is claimed already
            claims[ident] = claimed + 1
            wake = self.open_entry_locked(ident, entry[index], entry[0])
        if wake:
            self.wake()

    def add_event(self, event: Event, wake: bool) -> None:
        """Queue a non-value event after the values added before it (sealed first)."""
        with self.lock:
            self._seal_locked()
            self.queue.append(event)
            self._queued += 1
            queued = len(self.queue)
        if wake or queued >= BATCH_VALUES:
            self.wake()

    def add_period(self, entries: Dict[Tuple[str, str], list], marker: Optional[Event]) -> None:
        """Queue values gathered elsewhere (``{ident: [aggregation, v1, ...]}``, owned by the hand-off
        from now on) and the event that closes them, under one lock, without waking the sender:
        ``SummaryWriter`` hands over each step's values like this."""
        nvalues = sum(map(len, entries.values())) - len(entries)
        with self.lock:
            self._seal_locked()
            if self._queued >= MAX_PENDING_VALUES or not self._pipe_open:
                self.counters["events_dropped"] += nvalues
            elif entries:
                self.queue.append(StatsEvent(entries))
                self._queued += nvalues
            if marker is not None:
                self.queue.append(marker)
                self._queued += 1
            queued = len(self.queue)
        if queued >= BATCH_VALUES:
            self.wake()

    def _seal_locked(self) -> bool:
        """Move the current entries into the queue as one event; True: wake the sender."""
        current = self.current
        if not current:
            return False
        self.current = {}
        nvalues = sum(map(len, current.values())) - len(current)
        if self._queued >= MAX_PENDING_VALUES or not self._pipe_open:
            self.counters["events_dropped"] += nvalues
            _rlog.warn("behind", "statbus: sender is not keeping up (or not running); %d values dropped so far",
                       self.counters["events_dropped"])
            return True
        self.queue.append(StatsEvent(current))
        self._queued += nvalues
        return self._queued >= BATCH_VALUES

    def wake(self) -> None:
        """Make the sender drain the queue now (a few µs; never blocks)."""
        # _pipe_open turns False as the sender thread ends; reading it takes no
        # lock, unlike Thread.is_alive(), which every add_stat paid once the
        # queue was long (the bench found it at 19% of a busy trainer's time).
        if len(self.queue) > MAX_PENDING_EVENTS and not self._pipe_open:
            self._discard_queue()
        if self._wake_flag:
            return
        with self._wake_lock:
            if not self._pipe_open:
                return
            self._wake_flag = True
            try:
                os.write(self._wfd, b"!")
            except (BlockingIOError, InterruptedError):
                pass  # the pipe is full, so the sender is awake already

    def _discard_queue(self) -> None:
        with self.lock:
            dropped = self._queued
            media = [event.nbytes for event in self.queue if type(event) is MediaEvent]
            self.queue.clear()
            self._queued = 0
            self.media_queued = 0
            if media:
                self.counters["media_dropped"] += len(media)
                self.counters["media_dropped_bytes"] += sum(media)
        self.counters["events_dropped"] += dropped - len(media)
        _rlog.warn("dead", "statbus: sender thread is not running; dropped %d queued events", dropped)

    def snapshot(self) -> Dict[str, Any]:
        with self.lock:
            current = sum(map(len, self.current.values())) - len(self.current)
            snap = dict(self.counters)
            snap["values_queued"] = self._queued + current
        return snap

    def pending(self) -> Tuple[int, int]:
        """``(values, summaries)`` recorded and not yet taken by the sender, or dropped before it."""
        values, summaries = self.counters["events_dropped"], 0
        for event in list(self.queue):
            kind = type(event)
            if kind is StatsEvent:
                values += sum(map(len, event.sealed.values())) - len(event.sealed)
            elif kind is WriteEvent:
                summaries += 1
            elif kind is SetStatEvent:
                values += 1
        return values + sum(map(len, self.current.values())) - len(self.current), summaries

    # --- called from the sender thread ----------------------------------------

    @property
    def wake_fd(self) -> int:
        """The pipe end the sender polls; readable once a training thread woke it."""
        return self._rfd

    def consume_wake(self) -> None:
        """Empty the pipe and re-arm :meth:`wake`; called before the drain, so a later append wakes again."""
        try:
            os.read(self._rfd, 4096)
        except BlockingIOError:
            pass
        self._wake_flag = False

    def take_all(self) -> Deque[Event]:
        """Everything queued so far, the current entries last, each sealed dict replaced by the sender's copy.

        Each sealed dict is copied (a list slice per key) and marked with the copied
        lengths, under the lock, so that an add_stat that appended to it after the
        copy finds its value missing and re-adds it (settle_late); the sender works
        on the copies only.
        """
        with self.lock:
            events, self.queue = self.queue, collections.deque()
            if self.current:
                events.append(StatsEvent(self.current))
                self.current = {}
            self._queued = 0
            return collections.deque([_take(event) if type(event) is StatsEvent else event for event in events])

    def close_pipe(self) -> None:
        """The sender is ending: no training thread writes to the pipe from now on."""
        with self._wake_lock:
            self._pipe_open = False
            os.close(self._rfd)
            os.close(self._wfd)

    def forget_in_child(self) -> None:
        """After fork, in the child: drop the parent's queue and pipe."""
        # No lock: another thread of the parent may have held it at the fork.
        self._pipe_open = False
        self.current = {}
        self.queue.clear()           # the parent sends these, not the child
        self.media_queued = 0
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass
