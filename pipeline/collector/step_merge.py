"""Stepped categories: one summary per step, merged over every process that logs it.

``write_stats`` closes a category's period for every process at once (ML-Agents'
semantics), which is right when one learner closes what env workers add.  Code
written for torch's ``SummaryWriter`` has no such learner: each process logs its
values *with a step*, and several processes under one ``log_dir`` log the same
steps.  Their frames arrive in any order, so the values of step 5 of one process
may come after another process already moved on to step 6.  The trainer-side
:class:`~statbus.pipeline.summary_writer.SummaryWriter` therefore speaks a small
protocol over ordinary records, in wire categories that start with NUL (a
category derived from a path never holds one; writers never see these names):

* stat records of category ``\0C``: values of ``C``, each run of one step's values
  led by a step marker (``plugins.records.step_marker``, a NaN carrying the step), so
  a record holds many steps and a run may go on in the sender's next record;
* ``write("\0C", s)``: the sender has finished every step up to ``s`` it will log;
* ``write("\0C\0+", 0)`` / ``write("\0C\0-", 0)``: the sender joins / leaves ``C``
  (a ``bye`` leaves every category of the sender).

A step is closed into one summary of category ``C`` once every member of ``C`` has
finished it (or has left), oldest step first; its values are every member's, in
arrival order.  A member that never comes back (killed without a bye) holds ``C``
back by at most :data:`MAX_PENDING_STEPS` steps.  Values of a step already closed
(from a process that joined late) make a second summary at that step, which the
writers write like any other (they tell a replay by its journal position, not its step).

Deterministic in the records' order, so journal replay rebuilds the same
summaries; the state rides in the aggregator's snapshot.
"""

from __future__ import annotations

import array
import logging
import sys
from typing import Any, Dict, List, Mapping

from ...plugins.records import MAX_MARKED_STEP, STEP_MARKER_TAG, StatRecord, SummaryRecord, check_name, check_packed
from ...plugins.stats import StatsAggregationMethod

logger = logging.getLogger(__name__)

JOIN = "\x00+"
LEAVE = "\x00-"
MAX_PENDING_STEPS = 256
"""Steps of one category waiting for a member past which the oldest is closed anyway."""
_INFINITY = 2**63
_AGGREGATIONS = {m.value: m for m in StatsAggregationMethod}

Period = Dict[str, List[Any]]
"""key → [aggregation, bytearray of packed float64], keys in first-seen order."""


def _merge(into: Period, period: Period) -> None:
    for key, (aggregation, packed) in period.items():
        slot = into.get(key)
        if slot is None:
            into[key] = [aggregation, bytearray(packed)]
        else:
            slot[0] = aggregation  # the last aggregation given wins, as in a period
            slot[1] += packed


class StepMerger:
    """Open values, membership and pending steps of every stepped category (owned by the Aggregator)."""

    __slots__ = ("_open", "_cursor", "_members", "_pending", "values")

    def __init__(self) -> None:
        self._open: Dict[str, Dict[str, Dict[int, Period]]] = {}
        """category → sender → step → the sender's values of that step it has not finished yet."""
        self._cursor: Dict[str, Dict[str, Dict[str, int]]] = {}
        """category → sender → key → the step of the key's last marker (a run goes on across records)."""
        self._members: Dict[str, Dict[str, List[int]]] = {}
        """category → sender → [writers of that sender in the category, last step it finished]."""
        self._pending: Dict[str, Dict[int, Period]] = {}
        """category → step → the values of every member that finished that step (not closed yet)."""
        self.values = 0
        """Values held here (open and pending)."""

    def add(self, sender: str, record: StatRecord) -> None:
        category, key, aggregation = record.category[1:], record.key, record.aggregation
        steps = self._open.setdefault(category, {}).setdefault(sender, {})
        cursor = self._cursor.setdefault(category, {}).setdefault(sender, {})
        step = cursor.get(key, -1)
        bits = array.array("Q")
        bits.frombytes(record.packed)
        if sys.byteorder != "little":
            bits.byteswap()
        packed = record.packed
        run_start = 0
        for index, word in enumerate(bits):
            if word >> 48 == STEP_MARKER_TAG:
                self._add_run(steps, step, key, aggregation, packed[run_start * 8:index * 8])
                step, run_start = word & MAX_MARKED_STEP, index + 1
        self._add_run(steps, step, key, aggregation, packed[run_start * 8:])
        cursor[key] = step

    def _add_run(self, steps: Dict[int, Period], step: int, key: str, aggregation: Any, packed: bytes) -> None:
        if not packed or step < 0:
            return  # nothing, or values before any marker (not what a SummaryWriter sends)
        period = steps.setdefault(step, {})
        slot = period.get(key)
        self.values += len(packed) >> 3
        if slot is None:
            period[key] = [aggregation, bytearray(packed)]
        else:
            slot[0] = aggregation  # the last aggregation given wins, as in a period
            slot[1] += packed

    def marker(self, sender: str, name: str, step: int) -> List[SummaryRecord]:
        """Apply one ``write`` marker of a stepped wire category (``name`` starts with NUL)."""
        body = name[1:]
        if body.endswith(JOIN):
            slot = self._members.setdefault(body[: -len(JOIN)], {}).setdefault(sender, [0, -1])
            slot[0] += 1
            return []
        if body.endswith(LEAVE):
            category = body[: -len(LEAVE)]
            members = self._members.get(category, {})
            slot = members.get(sender)
            if slot is not None:
                slot[0] -= 1
                if slot[0] <= 0:
                    del members[sender]
            return self._release(category)
        members = self._members.setdefault(body, {})
        slot = members.get(sender)
        if slot is None:
            slot = members[sender] = [1, -1]  # a write without a join: a member from now on
        slot[1] = max(slot[1], step)
        steps = self._open.get(body, {}).get(sender)
        if steps:
            pending = self._pending.setdefault(body, {})
            for finished in [s for s in steps if s <= step]:
                _merge(pending.setdefault(finished, {}), steps.pop(finished))
        return self._release(body)

    def leave_all(self, sender: str) -> List[SummaryRecord]:
        """The sender said goodbye: it is a member of nothing any more (values it never wrote are dropped)."""
        out: List[SummaryRecord] = []
        for category in list(self._members):
            if self._members[category].pop(sender, None) is not None:
                out += self._release(category)
        for category, senders in list(self._open.items()):
            dropped = senders.pop(sender, None)
            if dropped:
                self.values -= sum(len(slot[1]) >> 3 for period in dropped.values() for slot in period.values())
            if not senders:
                del self._open[category]
        for category, senders in list(self._cursor.items()):
            senders.pop(sender, None)
            if not senders:
                del self._cursor[category]
        return out

    def _release(self, category: str) -> List[SummaryRecord]:
        members = self._members.get(category)
        if not members:
            self._members.pop(category, None)
        pending = self._pending.get(category)
        if not pending:
            return []
        mark = min(slot[1] for slot in members.values()) if members else _INFINITY
        out: List[SummaryRecord] = []
        for step in sorted(pending):
            if step > mark and len(pending) <= MAX_PENDING_STEPS:
                break
            if step > mark:
                logger.warning("stepped category %r: closing step %d before every member wrote it "
                               "(%d steps waiting)", category, step, len(pending))
            period = pending.pop(step)
            self.values -= sum(len(slot[1]) >> 3 for slot in period.values())
            out.append(SummaryRecord(category, step, tuple((key, slot[0], bytes(slot[1]))
                                                           for key, slot in period.items())))
        if not pending:
            del self._pending[category]
        return out

    # --- snapshot / restore (inside the aggregator's) ---------------------------

    def snapshot(self) -> Dict[str, Any]:
        if not (self._open or self._members or self._pending):
            return {}

        def plain(period: Period) -> List[List[Any]]:
            return [[key, slot[0].value, bytes(slot[1])] for key, slot in period.items()]

        return {"open": {c: {s: [[step, plain(p)] for step, p in steps.items()] for s, steps in senders.items()}
                         for c, senders in self._open.items()},
                "cursor": {c: {s: dict(keys) for s, keys in senders.items()} for c, senders in self._cursor.items()},
                "members": {c: {s: list(v) for s, v in m.items()} for c, m in self._members.items()},
                "pending": {c: [[step, plain(p)] for step, p in steps.items()] for c, steps in self._pending.items()}}

    def restore(self, data: Mapping[str, Any]) -> None:
        """Raises TypeError/ValueError/AttributeError/RecordError on a malformed snapshot."""

        def period(entries: Any) -> Period:
            out: Period = {}
            for key, aggregation, packed in entries:
                if type(aggregation) is not int or aggregation not in _AGGREGATIONS:
                    raise ValueError(f"unknown aggregation {aggregation!r}")
                out[check_name(key, "key")] = [_AGGREGATIONS[aggregation], bytearray(check_packed(packed, key))]
            return out

        def by_step(steps: Any) -> Dict[int, Period]:
            return {int(step): period(p) for step, p in steps}

        def named(data: Any, what: str) -> Dict[str, Any]:
            return {check_name(name, what): value for name, value in dict(data or {}).items()}

        self._open = {c: {s: by_step(steps) for s, steps in named(senders, "sender").items()}
                      for c, senders in named(data.get("open"), "category").items()}
        self._cursor = {c: {s: {check_name(k, "key"): int(v) for k, v in dict(keys).items()}
                            for s, keys in named(senders, "sender").items()}
                        for c, senders in named(data.get("cursor"), "category").items()}
        self._members = {c: {s: [int(n), int(d)] for s, (n, d) in named(senders, "sender").items()}
                         for c, senders in named(data.get("members"), "category").items()}
        self._pending = {c: by_step(steps) for c, steps in named(data.get("pending"), "category").items()}
        periods = [p for senders in self._open.values() for steps in senders.values() for p in steps.values()]
        periods += [p for steps in self._pending.values() for p in steps.values()]
        self.values = sum(len(slot[1]) >> 3 for p in periods for slot in p.values())
