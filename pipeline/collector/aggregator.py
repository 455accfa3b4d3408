"""Open summary periods per category, closed into summaries by ``write`` markers.

ML-Agents keeps one process-global dict of values per (category, key) and
empties a category when its ``write_stats`` runs.  The collector does the same
for the whole fleet of trainer processes: every stat record of every trainer
lands here in journal order, and a ``write(category, step)`` marker from any
trainer closes that category's period.

Values stay packed float64 from the wire to the summary: adding a record is a
bytes concatenation, never per-value Python work, which is what lets intake
keep up with millions of values per second.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Mapping

import msgpack

from ...plugins import StatbusError
from ...plugins.records import PropertyRecord, StatOp, StatRecord, SummaryRecord, check_name, check_packed
from ...plugins.stats import StatsAggregationMethod
from ..wire import Bye, Hello, WriteMarker

logger = logging.getLogger(__name__)

_AGGREGATIONS = {m.value: m for m in StatsAggregationMethod}
# Enum attribute look-ups cost ~0.1 µs each on Python 3.11: the hot path uses these.
_SET = StatOp.SET
_MOST_RECENT = StatsAggregationMethod.MOST_RECENT

Snapshot = Dict[str, List[List[Any]]]
"""``{category: [[key, aggregation value, packed values], ...]}`` — msgpack-able, keys in order."""


class SnapshotError(StatbusError):
    """A period snapshot read back from the journal is malformed."""


def encode_summary(summary: SummaryRecord) -> bytes:
    """A SUMMARY entry's payload, as journaled live and by recovery; deterministic, so
    replayed summaries compare byte for byte."""
    return msgpack.packb(summary.to_msgpack(), use_bin_type=True)


class Aggregator:
    """The open period of every category: key → (aggregation, packed values).

    Not thread-safe: the collector's single event loop owns it.
    """

    __slots__ = ("_periods", "_values")

    def __init__(self) -> None:
        # category -> {key: [aggregation, bytearray]}; dicts keep first-seen key order,
        # and re-assigning an existing key (set_stat) keeps its place, as in ML-Agents.
        self._periods: Dict[str, Dict[str, List[Any]]] = {}
        self._values = 0

    # --- the hot path ---------------------------------------------------------

    def add(self, record: StatRecord) -> None:
        """Apply one stat record: ADD appends its values, SET replaces them."""
        category, key, aggregation, op, packed = record
        period = self._periods.get(category)
        if period is None:
            period = self._periods[category] = {}
        self._values += len(packed) >> 3
        if op is _SET:
            # set_stat: the key now holds exactly this value and reports the most recent one.
            old = period.get(key)
            if old is not None:
                self._values -= len(old[1]) >> 3
            period[key] = [_MOST_RECENT, packed]
            return
        slot = period.get(key)
        if slot is None:
            # The record's own bytes until a second record comes: most keys get one
            # record per period, and then nothing is copied here or in write().
            period[key] = [aggregation, packed]
        else:
            slot[0] = aggregation  # the last aggregation given wins
            held = slot[1]
            if type(held) is bytes:
                slot[1] = held = bytearray(held)
            held += packed

    def write(self, category: str, step: int) -> SummaryRecord:
        """Close ``category``'s period; an empty summary when nothing was added."""
        period = self._periods.pop(category, None)
        if not period:
            return SummaryRecord(category, step, ())
        # bytes() of a bytes object is that object: only grown keys are copied.
        entries = tuple([(key, slot[0], bytes(slot[1])) for key, slot in period.items()])
        self._values -= sum([len(slot[1]) for slot in period.values()]) >> 3
        return SummaryRecord(category, step, entries)

    def apply(self, records: Iterable[Any]) -> List[SummaryRecord]:
        """Apply a decoded frame's records in order; the summaries its writes closed.

        The one code path for live intake and for journal replay at recovery,
        so a replay cannot disagree with what the live run computed.
        """
        summaries: List[SummaryRecord] = []
        add = self.add
        for record in records:
            kind = type(record)
            if kind is StatRecord:
                add(record)
            elif kind is WriteMarker:
                summaries.append(self.write(record.category, record.step))
            elif kind in (PropertyRecord, Hello, Bye):
                continue  # properties go to writers through the journaled batch, not a period
            else:
                raise TypeError(f"cannot aggregate a {kind.__name__}")
        return summaries

    # --- inspection -------------------------------------------------------------

    @property
    def open_values(self) -> int:
        """Values waiting in open periods, over all categories."""
        return self._values

    def open_categories(self) -> List[str]:
        return list(self._periods)

    def status(self) -> Dict[str, Any]:
        """The aggregator's part of the ``intake`` section of ``statbus status``."""
        return {"open_values": self._values, "open_categories": self.open_categories()}

    # --- snapshot / restore -------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return {
            category: [[key, slot[0].value, bytes(slot[1])] for key, slot in period.items()]
            for category, period in self._periods.items()
        }

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
        try:
            for category, entries in snapshot.items():
                period: Dict[str, List[Any]] = {}
                for key, aggregation, packed in entries:
                    if type(aggregation) is not int or aggregation not in _AGGREGATIONS:
                        raise SnapshotError(f"unknown aggregation {aggregation!r}")
                    period[check_name(key, "key")] = [_AGGREGATIONS[aggregation], bytearray(check_packed(packed, key))]
                    values += len(packed) >> 3
                periods[check_name(category, "category")] = period
        except (TypeError, ValueError, StatbusError) as exc:
            raise SnapshotError(f"malformed periods snapshot: {exc}") from None
        self._periods = periods
        self._values = values
