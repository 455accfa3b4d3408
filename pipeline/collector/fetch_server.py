"""Serving worker fetches from the journal (docs/internals.md, "Worker fetch protocol").

A worker host asks ``[1, plugin, after, max_bytes]`` on the collector's ``work``
ROUTER and gets ``[2, entries, next_after, head, skipped]`` back (the messages and
their codec: :mod:`statbus.workers.fetch_protocol`), where an entry is
``[position, kind, data]``: kind 0 = BATCH (the ``records`` array of a journaled
frame, sliced out of the raw frame without decoding it), kind 1 = SUMMARY.  A
fetch with nothing new is parked up to :data:`PARK_SECONDS` and answered as
soon as something is committed.

Per consumer the server applies a *quota position* (the oldest position the consumer may
still read: its journal quota) and a *skip set* (poison records the supervisor
set aside); both are counted in ``skipped``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

import zmq

from ...workers.fetch_protocol import EntryKind, FetchProtocolError, decode_fetch, encode_reply
from ..journal.writer import EntryType, JournalReader
from ..wire import frame_records_bytes

logger = logging.getLogger(__name__)

_BATCH = EntryKind.BATCH.value
_SUMMARY = EntryKind.SUMMARY.value

PARK_SECONDS = 2.0
"""Longest a fetch with nothing new waits before an empty reply (the worker's liveness signal: it
gives up on the collector after :data:`statbus.workers.host.fetch_client.REPLY_TIMEOUT`, 5 s)."""
MAX_FETCH_ENTRIES = 10_000
MAX_CACHED_READS = 8
MAX_CACHED_READ_BYTES = 2 << 20
"""Reads kept for plugins asking for the same positions: at most 8 of at most 2 MiB each."""


@dataclasses.dataclass
class ConsumerView:
    """What the fetch server knows of one plugin's worker (for status and retention)."""

    plugin: str
    read_to: int = 0
    """The ``after`` of its latest fetch: it has read (not necessarily committed) up to here."""
    last_fetch: float = 0.0
    fetches: int = 0
    entries_sent: int = 0
    skipped_quota: int = 0
    skipped_poison: int = 0
    warned_ahead: bool = False


@dataclasses.dataclass
class _Parked:
    envelope: List[bytes]
    plugin: str
    after: int
    max_bytes: int
    deadline: float


class FetchServer:
    """Answers fetches on the ``work`` socket; owned by the collector's loop."""

    def __init__(
        self,
        socket: zmq.Socket,
        reader: JournalReader,
        *,
        head: Callable[[], int],
        quota_position: Callable[[str], int] = lambda plugin: 0,
        skip: Callable[[str], FrozenSet[int]] = lambda plugin: frozenset(),
        count_between: Callable[[int, int], int] = lambda start, end: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._socket = socket
        self._reader = reader
        self._head = head
        self._quota_position = quota_position
        self._skip = skip
        self._count_between = count_between
        self._clock = clock
        self._parked: List[_Parked] = []
        self._recent: "collections.OrderedDict[Tuple[int, int], Tuple[List[list], int]]" = collections.OrderedDict()
        self.consumers: Dict[str, ConsumerView] = {}
        self.bad_requests = 0

    # --- the loop's entry points -------------------------------------------------------

    def on_readable(self, budget: int = 256) -> None:
        """Handle up to ``budget`` requests waiting on the socket."""
        for _ in range(budget):
            try:
                message = self._socket.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            self._handle(message)

    def on_committed(self) -> None:
        """New data is visible in the journal: answer every parked fetch that now has some."""
        if not self._parked:
            return
        head = self._head()
        still: List[_Parked] = []
        for parked in self._parked:
            if parked.after < head and self._serve(parked.envelope, parked.plugin, parked.after, parked.max_bytes, park=None):
                continue
            still.append(parked)
        self._parked = still

    def tick(self) -> None:
        """Answer parked fetches whose wait is over, with whatever there is (maybe nothing)."""
        if not self._parked:
            return
        now = self._clock()
        due = [p for p in self._parked if p.deadline <= now]
        if not due:
            return
        self._parked = [p for p in self._parked if p.deadline > now]
        for parked in due:
            self._serve(parked.envelope, parked.plugin, parked.after, parked.max_bytes, park=None, force=True)

    def flush_parked(self) -> None:
        """Answer every parked fetch now (the collector is stopping)."""
        parked, self._parked = self._parked, []
        for p in parked:
            self._serve(p.envelope, p.plugin, p.after, p.max_bytes, park=None, force=True)

    def status(self, now: float) -> Dict[str, Any]:
        """The ``consumers`` section of ``statbus status`` (one entry per plugin that fetched) and bad fetches."""
        consumers = [
            {
                "plugin": view.plugin,
                "read_to": view.read_to,
                "last_fetch_ago": max(0.0, now - view.last_fetch) if view.last_fetch else None,
                "fetches": view.fetches,
                "entries_sent": view.entries_sent,
                "skipped_quota": view.skipped_quota,
                "skipped_poison": view.skipped_poison,
                "quota_position": self._quota_position(view.plugin),
            }
            for view in self.consumers.values()
        ]
        return {"consumers": consumers, "bad_fetches": self.bad_requests}

    # --- internals ------------------------------------------------------------------------

    def _readable(self, start: int, max_bytes: int, head: int) -> Tuple[List[list], int]:
        """The sendable entries ``[position, kind, data]`` from ``start`` and where the next read starts.

        Plugins catching up ask for the same positions one after the other (their
        cursors move by whole replies); a journaled entry never changes, so a read
        that stopped at its limits, not at the head, is kept for the next asker:
        one file read, CRC check and batch slicing per position, not one per plugin.
        """
        key = (start, max_bytes)
        cached = self._recent.get(key)
        if cached is not None:
            self._recent.move_to_end(key)
            return cached
        raw, next_after = self._reader.read(start, max_bytes=max_bytes, max_entries=MAX_FETCH_ENTRIES)
        readable: List[list] = []
        nbytes = 0
        for entry in raw:
            if entry.type == EntryType.FRAME:
                data = frame_records_bytes(entry.payload)
                readable.append([entry.position, _BATCH, data])
            elif entry.type == EntryType.SUMMARY:
                data = entry.payload
                readable.append([entry.position, _SUMMARY, data])
            else:
                continue  # PAD and SNAPSHOT: never sent, next_after moves past them
            nbytes += len(data)
        if next_after < head and nbytes <= MAX_CACHED_READ_BYTES:
            self._recent[key] = (readable, next_after)
            while len(self._recent) > MAX_CACHED_READS:
                self._recent.popitem(last=False)
        return readable, next_after

    def _handle(self, message: List[bytes]) -> None:
        if len(message) < 2:
            self.bad_requests += 1
            return
        envelope, data = message[:-1], message[-1]
        try:
            plugin, after, max_bytes = decode_fetch(data)
        except FetchProtocolError as exc:
            self.bad_requests += 1
            logger.warning("bad fetch request from %s: %s", envelope[0].hex(), exc)
            return
        view = self.consumers.get(plugin)
        if view is None:
            view = self.consumers[plugin] = ConsumerView(plugin)
        view.read_to = after
        view.last_fetch = self._clock()
        view.fetches += 1
        # A worker has at most one fetch outstanding: a new one replaces a parked one.
        self._parked = [p for p in self._parked if p.plugin != plugin]
        self._serve(envelope, plugin, after, max_bytes, park=self._clock() + PARK_SECONDS)

    def _serve(self, envelope: List[bytes], plugin: str, after: int, max_bytes: int, **how: Any) -> bool:
        try:
            return self._answer(envelope, plugin, after, max_bytes, **how)
        except Exception:  # noqa: BLE001 — one bad fetch must not take intake down with it
            self.bad_requests += 1
            logger.exception("serving a fetch of plugin %s after %d failed", plugin, after)
            return True

    def _answer(
        self,
        envelope: List[bytes],
        plugin: str,
        after: int,
        max_bytes: int,
        *,
        park: Optional[float],
        force: bool = False,
    ) -> bool:
        """Reply to one fetch; or park it (when ``park`` is a deadline and there is nothing new)."""
        view = self.consumers.setdefault(plugin, ConsumerView(plugin))
        skipped = 0
        quota_position = self._quota_position(plugin)
        start = after
        if after < quota_position:
            lost = self._count_between(after, quota_position)
            logger.warning(
                "plugin %s is %d bytes behind its quota position: it skips to position %d (%d entries)",
                plugin, quota_position - after, quota_position, lost,
            )
            skipped += lost
            view.skipped_quota += lost
            start = quota_position
        head = self._head()
        if start > head and not view.warned_ahead:
            # A cursor from another journal (the journal was deleted, the state page kept):
            # nothing will ever come; say so once instead of parking silently forever.
            view.warned_ahead = True
            logger.warning("plugin %s asks for position %d, past the journal head %d", plugin, start, head)
        entries: List[list] = []
        next_after = start
        if start < head:
            poison = self._skip(plugin)
            readable, next_after = self._readable(start, max_bytes, head)
            if poison:
                for entry in readable:
                    if entry[0] in poison:
                        skipped += 1
                        view.skipped_poison += 1
                    else:
                        entries.append(entry)
            else:
                entries = readable
            next_after = max(next_after, start)
        if not entries and not skipped and next_after == after and park is not None and not force:
            self._parked.append(_Parked(envelope, plugin, after, max_bytes, park))
            return False
        view.entries_sent += len(entries)
        reply = encode_reply(entries, next_after, head, skipped)
        try:
            self._socket.send_multipart([*envelope, reply], zmq.NOBLOCK)
        except zmq.Again:
            logger.warning("fetch reply to plugin %s dropped: its worker is not reading", plugin)
        except zmq.ZMQError as exc:
            logger.warning("fetch reply to plugin %s failed: %s", plugin, exc)
        return True
