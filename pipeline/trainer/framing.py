"""Trainer side: queued events → frames (what a frame holds, in which order).

Apart from the sender (:mod:`.sender`) so that the grouping rules can be tested
without sockets or threads; the frames then wait in :mod:`.resend_buffer`.

The queue's events are the NamedTuples below (:data:`Event`), appended by
:class:`.handoff.Handoff` under its lock.
"""

from __future__ import annotations

import struct
import threading
from itertools import chain
from typing import Any, Callable, Deque, Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

from ...plugins.records import MediaRecord, RecordKind, StatOp, pack_values
from ...plugins.stats import StatsAggregationMethod
from ..wire import MAX_RECORDS_PER_FRAME, MarkerKind, property_record

BATCH_VALUES = 65536
"""Values after which a frame is closed and the sender woken (a frame stays ~512 KiB)."""
MAX_FRAME_RECORDS = MAX_RECORDS_PER_FRAME // 4
"""Entries, writes, properties and markers after which a frame is closed (a key's entry may
become a SET and an ADD record: the margin to the wire's limit covers it)."""
MAX_FRAME_BYTES_SOFT = 2 << 20
"""Estimated bytes after which a frame is closed: far below the wire's 8 MiB limit, which
a frame must never pass (the collector would refuse it, and every frame after it would wait)."""



class Ticket:
    """One ``flush()``: done once every frame up to ``target`` is acked (``ok``) or the sender stops."""

    __slots__ = ("event", "target", "ok")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.target: Optional[int] = None
        self.ok = False


class StatsEvent(NamedTuple):
    """Values of ``add_stat``, sealed: ``{(category, key): [aggregation, v1, v2, ...]}``, keys in
    first-seen order (see :meth:`.handoff.Handoff.open_entry_locked`)."""

    sealed: Dict[Tuple[str, str], list]


class SetStatEvent(NamedTuple):
    """``set_stat``: the period's values of the key become ``[value]`` (MOST_RECENT)."""

    category: str
    key: str
    value: float


class PropertyEvent(NamedTuple):
    """``add_property``: ``value`` already made msgpack-safe, ``nbytes`` its packed size."""

    category: str
    property_type: str
    value: Any
    nbytes: int


class WriteEvent(NamedTuple):
    """``write_stats(step)``: closes the category's period."""

    category: str
    step: int


class MediaEvent(NamedTuple):
    """``reporter.add_media``: one media value, checked; it goes out in a frame of its own."""

    record: MediaRecord
    nbytes: int
    """Its raw bytes (``Media.nbytes``): what it counts against the trainer's media bound."""


class FlushEvent(NamedTuple):
    """``flush()``/``shutdown()``: the ticket is settled once every frame before it is acked."""

    ticket: Ticket


class ByeEvent(NamedTuple):
    """The process says goodbye (``shutdown()``): a BYE record after everything else."""


BYE = ByeEvent()

Event = Union[StatsEvent, SetStatEvent, PropertyEvent, WriteEvent, MediaEvent, FlushEvent, ByeEvent]

# Enum attribute and .value look-ups cost ~0.1 µs each on Python 3.11 (and hashing a
# member runs Python code); a frame of a summary-heavy trainer does a few per record, so
# constants are looked up once here and a member's wire value is read as ``_value_``.
_MOST_RECENT = StatsAggregationMethod.MOST_RECENT.value
STAT_KIND = RecordKind.STAT.value
"""A stat record's kind code on the wire."""
_ADD = StatOp.ADD.value
_SET = StatOp.SET.value
_WRITE = MarkerKind.WRITE.value
WRITE_KIND = _WRITE
_pack_one = struct.Struct("<d").pack


class FrameBuilder:
    """Collects one frame's events; record order: hello, properties, then periods, bye.

    A period is the stats recorded before a WRITE, then that WRITE: a frame may
    carry several, in order, so the collector closes each period with exactly
    the values added before its ``write_stats`` — and a trainer writing
    summaries fast pays one frame for many of them.  Within a period stats are
    grouped per (category, key) in first-seen order.  ``set_stat`` replaces the
    key's pending values with a SET record of ``[v]`` (MOST_RECENT); values added
    after it in the same period follow as an ADD record, so the collector sees
    exactly what ML-Agents' reporter would have done.

    An entry is laid out as the trainer's sealed entries are, ``[aggregation, v1,
    v2, ...]``, so that a sealed dict arriving while no period is open becomes
    the frame's open period as it is, with no per-key work.
    """

    def __init__(self) -> None:
        self.hello: Optional[list] = None
        self.properties: List[list] = []
        self.body: List[list] = []
        """Closed periods: their stat records, each followed by its WRITE."""
        self.stats: Dict[Tuple[str, str], list] = {}
        """The open period: (category, key) → ``[aggregation, values...]``, first-seen order."""
        self.set_values: Dict[Tuple[str, str], float] = {}
        """``set_stat`` values of the open period (its SET record goes before the key's ADD)."""
        self.markers: List[list] = []
        """Records after every period (BYE)."""
        self.media: Optional[MediaEvent] = None
        """The one media value of a media frame (which then holds nothing else but a HELLO)."""
        self.nvalues = 0
        self.nbytes = 0
        self.nrecords = 0
        """Entries opened, writes, properties and markers so far: counted as they come,
        not recounted per check (a summary-heavy trainer checks on every key)."""

    @property
    def empty(self) -> bool:
        return not (self.properties or self.body or self.stats or self.markers or self.media)

    def add(self, category: str, key: str, value: float, aggregation: Optional[StatsAggregationMethod]) -> bool:
        """Add one value (aggregation ``None``: ``set_stat``); True when it opened a new (category, key) entry."""
        ident = (category, key)
        entry = self.stats.get(ident)
        opened = entry is None
        if opened:
            self.nbytes += 4 * (len(category) + len(key)) + 48  # UTF-8 worst case, both records
            self.nrecords += 1
        self.nbytes += 8
        if aggregation is None:  # set_stat: the key's pending values are replaced
            self.set_values[ident] = value
            self.stats[ident] = [StatsAggregationMethod.MOST_RECENT]
        elif opened:
            self.stats[ident] = [aggregation, value]
        else:
            entry.append(value)
            entry[0] = aggregation
        self.nvalues += 1
        return opened

    def add_values(self, category: str, key: str, entry: list) -> bool:
        """Add a sealed entry ``[aggregation, values...]`` (owned from now on); True when it opened a new entry."""
        ident = (category, key)
        held = self.stats.get(ident)
        count = len(entry) - 1
        self.nvalues += count
        if held is None:
            self.stats[ident] = entry
            self.nbytes += 4 * (len(category) + len(key)) + 48 + 8 * count
            self.nrecords += 1
            return True
        held[0] = entry[0]
        held += entry[1:]
        self.nbytes += 8 * count
        return False

    def adopt(self, sealed: Dict[Tuple[str, str], list], nvalues: int, nbytes: int) -> None:
        """Make ``sealed`` the open period as it is (no period may be open)."""
        self.stats = sealed
        self.nvalues += nvalues
        self.nbytes += nbytes
        self.nrecords += len(sealed)

    def property(self, category: str, property_type: str, value: Any, nbytes: int) -> None:
        self.properties.append(property_record(category, property_type, value))
        self.nbytes += nbytes
        self.nrecords += 1

    def write(self, category: str, step: int) -> None:
        body = self.body
        if self.stats:
            self._stat_records(body)
            self.stats = {}
            if self.set_values:
                self.set_values = {}
        body.append([_WRITE, category, step])
        self.nrecords += 1

    def records(self) -> List[list]:
        out: List[list] = []
        if self.hello is not None:
            out.append(self.hello)
        if self.media is not None:
            out.append(self.media.record.to_msgpack())
        out.extend(self.properties)
        out.extend(self.body)
        self._stat_records(out)
        out.extend(self.markers)
        return out

    def _stat_records(self, out: List[list]) -> None:
        append = out.append
        set_values = self.set_values
        for ident, entry in self.stats.items():
            category, key = ident
            if set_values and ident in set_values:
                append([STAT_KIND, category, key, _MOST_RECENT, _SET, pack_values((set_values[ident],))])
            count = len(entry)
            if count == 2:  # one value, the common case of a summary-heavy trainer
                append([STAT_KIND, category, key, entry[0]._value_, _ADD, _pack_one(entry[1])])
            elif count > 2:
                append([STAT_KIND, category, key, entry[0]._value_, _ADD, pack_values(entry[1:])])


def drain_events(queue: Deque[Event], bye: Callable[[], list]) -> Iterator[Union[FrameBuilder, Ticket]]:
    """Pop the events queued now; yield closed frames and, in their place, flush tickets.

    A WRITE closes a period within the frame (values added after it belong to
    the next period); a flush closes the frame.  A media value closes the frame and
    goes alone in the next (its journal entry then identifies it).  A frame is also closed at
    ``BATCH_VALUES`` values (a sealed entry's values are split across frames),
    when its records or estimated bytes grow large, and when the queue is
    empty: everything queued goes out at once.
    """
    builder = FrameBuilder()
    for _ in range(len(queue)):
        event = queue.popleft()
        kind = type(event)
        if kind is StatsEvent:
            sealed = event.sealed
            if not builder.stats:
                # No period open: the sealed dict becomes it as it is, when it fits.
                nvalues = sum(map(len, sealed.values())) - len(sealed)
                nbytes = 4 * sum(map(len, chain.from_iterable(sealed))) + 48 * len(sealed) + 8 * nvalues
                if (builder.nvalues + nvalues < BATCH_VALUES
                        and builder.nrecords + len(sealed) < MAX_FRAME_RECORDS
                        and builder.nbytes + nbytes < MAX_FRAME_BYTES_SOFT):
                    builder.adopt(sealed, nvalues, nbytes)
                    continue
            # Per key, not per value: a run of values is one list extend.
            for (category, key), entry in sealed.items():
                start, end = 1, len(entry)
                if end - 1 + builder.nvalues < BATCH_VALUES:
                    # The whole entry fits.
                    opened = builder.add_values(category, key, entry)
                    if opened and (builder.nrecords >= MAX_FRAME_RECORDS or builder.nbytes >= MAX_FRAME_BYTES_SOFT):
                        yield builder
                        builder = FrameBuilder()
                    continue
                aggregation = entry[0]
                while start < end:
                    stop = min(end, start + BATCH_VALUES - builder.nvalues)
                    opened = builder.add_values(category, key, [aggregation, *entry[start:stop]])
                    start = stop
                    if (builder.nvalues >= BATCH_VALUES
                            or opened and (builder.nrecords >= MAX_FRAME_RECORDS
                                           or builder.nbytes >= MAX_FRAME_BYTES_SOFT)):
                        yield builder
                        builder = FrameBuilder()
        elif kind is SetStatEvent:
            # One value: records and bytes grow by much only when a new key
            # opens, so only then are they checked.
            if builder.add(event.category, event.key, event.value, None):
                full = (builder.nvalues >= BATCH_VALUES or builder.nrecords >= MAX_FRAME_RECORDS
                        or builder.nbytes >= MAX_FRAME_BYTES_SOFT)
            else:
                full = builder.nvalues >= BATCH_VALUES
            if full:
                yield builder
                builder = FrameBuilder()
        elif kind is WriteEvent:
            builder.write(event.category, event.step)
            if builder.nrecords >= MAX_FRAME_RECORDS or builder.nbytes >= MAX_FRAME_BYTES_SOFT:
                yield builder
                builder = FrameBuilder()
        elif kind is PropertyEvent:
            builder.property(event.category, event.property_type, event.value, event.nbytes)
            if builder.nbytes >= MAX_FRAME_BYTES_SOFT or builder.nrecords >= MAX_FRAME_RECORDS:
                yield builder
                builder = FrameBuilder()
        elif kind is MediaEvent:
            if not builder.empty:
                yield builder
            builder = FrameBuilder()
            builder.media = event
            builder.nrecords = 1
            yield builder
            builder = FrameBuilder()
        elif kind is FlushEvent:
            if not builder.empty:
                yield builder
                builder = FrameBuilder()
            yield event.ticket
        elif kind is ByeEvent:
            builder.markers.append(bye())
            builder.nrecords += 1
    if not builder.empty:
        yield builder

