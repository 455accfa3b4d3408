"""Rebuilding the collector's state from the journal after a restart (or a ``kill -9``).

Every segment starts with a SNAPSHOT of the sender table and the open periods,
so only the newest segment matters (or, when a crash tore its snapshot off, the
newest one that has one, and every entry after it): load the snapshot, replay the FRAME entries
through the very code the live intake uses (:meth:`Intake.replay` and
:meth:`Aggregator.apply`), and check each SUMMARY entry against the summary the
replay produces.  A ``write`` whose SUMMARY never reached the disk (the crash
came between the two) gets its summary appended now, so a consumer ends up
with exactly the summaries an undisturbed run would have produced.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, List, Optional, Tuple

import msgpack

from ...plugins.errors import RecordError
from ...plugins.records import pack_summary, unpack_summary
from ..journal.writer import EntryType, Journal
from ..wire import WireError, decode_frame
from .aggregator import Aggregator, SnapshotError
from .intake import Intake

logger = logging.getLogger(__name__)


def encode_snapshot(intake: Intake, aggregator: Aggregator) -> bytes:
    """The SNAPSHOT payload that starts every segment (docs/internals.md, "Journal"); read by :func:`_load_snapshot`."""
    return msgpack.packb({"senders": intake.snapshot(), "periods": aggregator.snapshot()}, use_bin_type=True)


@dataclasses.dataclass(frozen=True)
class ReplayReport:
    """What recovery found in the newest segment (shown by ``statbus status``)."""

    had_snapshot: bool
    frames_replayed: int
    frames_skipped: int
    summaries_matched: int
    summaries_reemitted: int
    summaries_unexpected: int
    summaries_differing: int
    entries_per_segment: int

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _load_snapshot(payload: bytes, intake: Intake, aggregator: Aggregator) -> bool:
    try:
        snapshot = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        if not isinstance(snapshot, dict):
            raise SnapshotError("snapshot is not a map")
        aggregator.restore(snapshot.get("periods") or {})
    except (SnapshotError, ValueError, msgpack.UnpackException) as exc:
        logger.error("recovery: the newest segment's snapshot is unreadable (%s); starting from empty periods", exc)
        return False
    intake.restore(snapshot.get("senders") or {})
    return True


def _find_pending(pending: List[Tuple[Tuple[str, int], bytes]], payload: bytes) -> Optional[int]:
    """Index of the replayed summary a journaled one stands for: same bytes, else same (category, step)."""
    for index, (_, expected) in enumerate(pending):
        if expected == payload:
            return index
    try:
        summary = unpack_summary(payload)
    except RecordError:  # CRC-valid but unreadable: matches nothing
        return None
    category, step = summary.category, summary.step
    for index, (key, _) in enumerate(pending):
        if key == (category, step):
            return index
    return None


def replay_newest_segment(journal: Journal, intake: Intake, aggregator: Aggregator) -> ReplayReport:
    """Restore ``intake`` and ``aggregator`` from ``journal`` (opened) and repair torn summaries.

    Appends the missing SUMMARY entries and, when the newest segment has no
    readable snapshot (a fresh journal, or its first entry was damaged), starts
    a new segment with one, so the next recovery has a base again.  The caller
    commits.
    """
    had_snapshot = False
    first = True
    pending: List[Tuple[Tuple[str, int], bytes]] = []
    replayed = skipped = matched = unexpected = differing = entries = 0
    for entry in journal.recovery_entries():
        entries += 1
        kind = entry.type
        if first:
            first = False
            if kind == EntryType.SNAPSHOT:
                had_snapshot = _load_snapshot(entry.payload, intake, aggregator)
                continue
            logger.error("recovery: no snapshot in the retained journal; replaying every entry from empty state")
        if kind == EntryType.FRAME:
            try:
                frame = decode_frame(entry.payload)
            except WireError as exc:
                # It was validated before it was journaled; a CRC-valid but unreadable
                # frame means a newer collector wrote it.  Say so and go on.
                logger.error("recovery: journaled frame at %d does not decode (%s); skipped", entry.position, exc)
                skipped += 1
                continue
            if not intake.replay(frame):
                skipped += 1
                continue
            replayed += 1
            pending.extend(((s.category, s.step), pack_summary(s)) for s in aggregator.apply(frame.records, frame.sender))
        elif kind == EntryType.SUMMARY:
            index = _find_pending(pending, entry.payload)
            if index is None:
                unexpected += 1
                logger.warning("recovery: summary at %d matches no write of the replay; kept", entry.position)
            else:
                if pending[index][1] != entry.payload:
                    # Same write, other values: a damaged frame before it was set aside.
                    # The journaled summary stands; the consumers have seen it.
                    differing += 1
                del pending[index]
                matched += 1
        # PAD and later SNAPSHOTs carry nothing to replay.
    reemitted = len(pending)
    for _, payload in pending:
        journal.append(EntryType.SUMMARY, payload)
    if reemitted:
        logger.warning("recovery: %d summaries were torn off by the crash; appended them again", reemitted)
    if not journal.has_snapshot:
        # A fresh journal, or the newest segment lost its snapshot: start one that
        # has it, so the next recovery has a base again.
        journal.rotate(encode_snapshot(intake, aggregator))
    report = ReplayReport(had_snapshot, replayed, skipped, matched, reemitted, unexpected, differing, entries)
    logger.info("recovery: %s", report)
    return report
