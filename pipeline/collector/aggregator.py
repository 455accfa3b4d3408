"""Open summary periods per category, closed into summaries by ``write`` markers.

ML-Agents keeps one process-global dict of values per (category, key) and
empties a category when its ``write_stats`` runs.  The collector does the same
for the whole fleet of trainer processes: every stat record of every trainer
lands here in journal order, and a ``write(category, step)`` marker from any
trainer closes that category's period.

Values stay packed float64 from the wire to the summary: adding a record is a
bytes concatenation, never per-value Python work, which is what lets intake
keep up with millions of values per second.

Open periods are bounded (:data:`MAX_OPEN_CATEGORIES`, :data:`MAX_OPEN_BYTES`): a
category whose ``write_stats`` never comes (a typo, a key recorded under a
category no learner writes) cannot grow the collector without end.  Past a bound
the period open longest — the category unwritten the longest — is dropped whole,
counted and logged.  Live intake and recovery replay go through the same code,
so they drop the same periods.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Mapping

from ...plugins import StatbusError
from ...plugins.records import STEPPED_MARK as MARK
from ...plugins.records import MediaRecord, PropertyRecord, StatOp, StatRecord, SummaryRecord, check_name, check_packed
from ...plugins.stats import StatsAggregationMethod
from ..wire import Bye, Hello, MediaDrops, WriteMarker
from .step_merge import StepMerger

logger = logging.getLogger(__name__)

MAX_OPEN_CATEGORIES = 10_000
"""Categories with an open period at once."""
MAX_OPEN_BYTES = 128 << 20
"""Bytes held by open periods: 8 per value, plus each key's and category's name and bookkeeping."""
KEY_OVERHEAD = 120
"""Bytes counted per open key beside its name and values (its dict slot, list and bytes object)."""
CATEGORY_OVERHEAD = 300
"""Bytes counted per open category beside its name (its period dict)."""

_AGGREGATIONS = {m.value: m for m in StatsAggregationMethod}
# Enum attribute look-ups cost ~0.1 µs each on Python 3.11: the hot path uses these.
_SET = StatOp.SET
_MOST_RECENT = StatsAggregationMethod.MOST_RECENT

Snapshot = Dict[str, List[List[Any]]]
"""``{category: [[key, aggregation value, packed values], ...]}`` — msgpack-able, keys in order."""


class SnapshotError(StatbusError):
    """A period snapshot read back from the journal is malformed."""


class Aggregator:
    """The open period of every category: key → (aggregation, packed values).

    Not thread-safe: the collector's single event loop owns it.
    """

    __slots__ = ("_periods", "_values", "_bytes", "max_categories", "max_bytes",
                 "dropped_periods", "dropped_values", "_steps")

    def __init__(self, max_categories: int = MAX_OPEN_CATEGORIES, max_bytes: int = MAX_OPEN_BYTES) -> None:
        # category -> {key: [aggregation, bytearray]}; dicts keep first-seen key order,
        # and re-assigning an existing key (set_stat) keeps its place, as in ML-Agents.
        # Categories are in the order their periods opened: the first is open the longest.
        self._periods: Dict[str, Dict[str, List[Any]]] = {}
        self._values = 0
        self._bytes = 0
        """Bytes counted against :data:`MAX_OPEN_BYTES`, kept as records come (a period's own is
        :meth:`_period_bytes`, computed when it closes or is dropped)."""
        self.max_categories = max_categories
        self.max_bytes = max_bytes
        self.dropped_periods = 0
        self.dropped_values = 0
        self._steps = StepMerger()
        """Stepped categories (``SummaryWriter``): see :mod:`.step_merge`."""

    # --- the hot path ---------------------------------------------------------

    def add(self, record: StatRecord) -> None:
        """Apply one stat record: ADD appends its values, SET replaces them."""
        category, key, aggregation, op, packed = record
        period = self._periods.get(category)
        full = False
        if period is None:
            period = self._periods[category] = {}
            self._bytes += len(category) + CATEGORY_OVERHEAD
            full = len(self._periods) > self.max_categories
        size = len(packed)
        self._values += size >> 3
        if op is _SET:
            # set_stat: the key now holds exactly this value and reports the most recent one.
            old = period.get(key)
            if old is None:
                self._bytes += size + len(key) + KEY_OVERHEAD
            else:
                self._values -= len(old[1]) >> 3
                self._bytes += size - len(old[1])
            period[key] = [_MOST_RECENT, packed]
        else:
            slot = period.get(key)
            if slot is None:
                # The record's own bytes until a second record comes: most keys get one
                # record per period, and then nothing is copied here or in write().
                period[key] = [aggregation, packed]
                self._bytes += size + len(key) + KEY_OVERHEAD
            else:
                slot[0] = aggregation  # the last aggregation given wins
                held = slot[1]
                if type(held) is bytes:
                    slot[1] = held = bytearray(held)
                held += packed
                self._bytes += size
        if full or self._bytes > self.max_bytes:
            self._drop_oldest()

    @staticmethod
    def _period_bytes(category: str, period: Dict[str, List[Any]]) -> int:
        """What a period counts against :data:`MAX_OPEN_BYTES` (as :meth:`add` counted it)."""
        return len(category) + CATEGORY_OVERHEAD + sum([len(key) + KEY_OVERHEAD + len(slot[1]) for key, slot in period.items()])

    def _drop_oldest(self) -> None:
        """Drop whole periods, open longest first, until both bounds hold again."""
        while self._periods and (self._bytes > self.max_bytes or len(self._periods) > self.max_categories):
            category = next(iter(self._periods))
            period = self._periods.pop(category)
            self._bytes -= self._period_bytes(category, period)
            values = sum([len(slot[1]) for slot in period.values()]) >> 3
            self._values -= values
            self.dropped_periods += 1
            self.dropped_values += values
            if self.dropped_periods == 1 or self.dropped_periods % 1000 == 0:
                logger.warning(
                    "open periods over their bound (%s categories, %s MiB): dropped the period of %r, open the "
                    "longest (%s values never written); %s periods, %s values dropped so far",
                    self.max_categories, self.max_bytes >> 20, category, values,
                    self.dropped_periods, self.dropped_values,
                )

    def write(self, category: str, step: int) -> SummaryRecord:
        """Close ``category``'s period; an empty summary when nothing was added."""
        period = self._periods.pop(category, None)
        if period is None:
            return SummaryRecord(category, step, ())
        self._bytes -= self._period_bytes(category, period)
        # bytes() of a bytes object is that object: only grown keys are copied.
        entries = tuple([(key, slot[0], bytes(slot[1])) for key, slot in period.items()])
        self._values -= sum([len(slot[1]) for slot in period.values()]) >> 3
        return SummaryRecord(category, step, entries)

    def apply(self, records: Iterable[Any], sender: str = "") -> List[SummaryRecord]:
        """Apply a decoded frame's records in order; the summaries its writes closed.

        The one code path for live intake and for journal replay at recovery,
        so a replay cannot disagree with what the live run computed.
        """
        summaries: List[SummaryRecord] = []
        add = self.add
        for record in records:
            kind = type(record)
            if kind is StatRecord:
                if record.category[0] == MARK:
                    self._steps.add(sender, record)
                else:
                    add(record)
            elif kind is WriteMarker:
                if record.category[0] == MARK:
                    summaries += self._steps.marker(sender, record.category, record.step)
                else:
                    summaries.append(self.write(record.category, record.step))
            elif kind is Bye:
                summaries += self._steps.leave_all(sender)
            elif kind in (PropertyRecord, MediaRecord, Hello, MediaDrops):
                continue  # properties and media go to writers through the journaled batch, not a period
            else:
                raise TypeError(f"cannot aggregate a {kind.__name__}")
        return summaries

    # --- inspection -------------------------------------------------------------

    @property
    def open_values(self) -> int:
        """Values waiting in open periods, over all categories (stepped ones included)."""
        return self._values + self._steps.values

    def open_categories(self) -> List[str]:
        return list(self._periods)

    @property
    def open_bytes(self) -> int:
        """Bytes counted against :data:`MAX_OPEN_BYTES`."""
        return self._bytes

    def status(self) -> Dict[str, Any]:
        """The aggregator's part of the ``intake`` section of ``statbus status``."""
        return {
            "open_values": self._values,
            "open_categories": self.open_categories(),
            "open_periods": {
                "categories": len(self._periods),
                "values": self._values,
                "bytes": self._bytes,
                "max_categories": self.max_categories,
                "max_bytes": self.max_bytes,
                "dropped_periods": self.dropped_periods,
                "dropped_values": self.dropped_values,
            },
        }

    # --- snapshot / restore -------------------------------------------------------

    def snapshot(self) -> Snapshot:
        snapshot: Dict[str, Any] = {
            category: [[key, slot[0].value, bytes(slot[1])] for key, slot in period.items()]
            for category, period in self._periods.items()
        }
        steps = self._steps.snapshot()
        if steps:
            snapshot[MARK] = steps  # no category is named NUL alone
        return snapshot

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> "Aggregator":
        aggregator = cls()
        aggregator.restore(snapshot)
        return aggregator

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace every open period with ``snapshot``'s (validated: it comes from disk)."""
        if not isinstance(snapshot, Mapping):
            raise SnapshotError(f"periods snapshot must be a map, got {type(snapshot).__name__}")
        periods: Dict[str, Dict[str, List[Any]]] = {}
        values = 0
        steps = StepMerger()
        try:
            steps.restore(snapshot.get(MARK) or {})
            for category, entries in snapshot.items():
                if category == MARK:
                    continue
                period: Dict[str, List[Any]] = {}
                for key, aggregation, packed in entries:
                    if type(aggregation) is not int or aggregation not in _AGGREGATIONS:
                        raise SnapshotError(f"unknown aggregation {aggregation!r}")
                    period[check_name(key, "key")] = [_AGGREGATIONS[aggregation], bytearray(check_packed(packed, key))]
                    values += len(packed) >> 3
                periods[check_name(category, "category")] = period
        except (AttributeError, TypeError, ValueError, StatbusError) as exc:
            raise SnapshotError(f"malformed periods snapshot: {exc}") from None
        self._periods = periods
        self._values = values
        self._bytes = sum([self._period_bytes(category, period) for category, period in periods.items()])
        self._steps = steps
        self._drop_oldest()
