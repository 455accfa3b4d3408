"""Intake: decode trainer frames, apply the delivery rule, keep the sender table.

The delivery rule (docs/internals.md, "Wire"), per sender::

    expected = max(last_seq + 1, lowest_sendable)
    seq == expected  → accept (journal, aggregate, then ack seq)
    seq <  expected  → duplicate: drop, count, ack last_seq again
    seq >  expected  → gap: drop, ack last_seq (the trainer re-sends from its oldest unacked)

Everything here is bookkeeping with no I/O, so the live loop and the journal
replay at recovery share it.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter, OrderedDict
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

import msgpack

from ...plugins.records import StatRecord
from ..security.peer_bindings import PeerBindings
from ..wire import Bye, Frame, Hello, MediaDrops, Refusal, RejectReason, WireError, decode_frame, encode_frame
from .idle import trainer_gone
from .senders import INFO_FIELDS, SenderState, info_value

logger = logging.getLogger(__name__)

REJECT_LOG_INTERVAL = 10.0
"""Seconds between two log lines about rejects of one (sender, reason): a flood stays one line."""

REJECT_LOG_BURST = 20
"""Reject log lines per ``REJECT_LOG_INTERVAL`` over all senders: a flood under ever new sender
names or connections cannot fill the disk with log lines; the rest are counted in one line."""

MAX_REJECT_SOURCES = 10_000
"""Distinct rejected senders/connections counted before the table is cut to the worst tenth."""

MAX_SENDERS = 10_000
"""Senders tracked at once.  Past it, accepting a frame from a new sender forgets the one
heard from least recently (counted in ``evicted``): frames invented under ever new sender
names cannot grow the table, the snapshot or the status without end.  A forgotten trainer
that speaks again is accepted from its ``lowest_sendable`` on, like one the collector never knew."""

MAX_SENDER_BYTES = 16 << 20
"""Bytes the sender table may hold (each sender counted as :meth:`SenderState.measure` says);
past it the least recently heard senders are forgotten, as past ``MAX_SENDERS``."""
class Verdict(enum.Enum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"
    GAP = "gap"
    REJECT = "reject"


class Decision(NamedTuple):
    verdict: Verdict
    frame: Optional[Frame]
    ack: Optional[int]
    """Seq to acknowledge to the sender (None: nothing, e.g. an undecodable frame)."""
    reason: Optional[RejectReason] = None
    substitute: Optional[bytes] = None
    """For a refused frame that was consumed: an empty frame with its seq, to journal in its place."""
    refusal: Optional[Refusal] = None
    """Tell the sender its frames are refused, and why (in place of an ack)."""


def _envelope_position(data: bytes) -> Tuple[Optional[int], int]:
    """``(seq, lowest_sendable)`` of a frame whose envelope is valid but whose records are not."""
    try:
        unpacker = msgpack.Unpacker(max_buffer_size=len(data) + 1)
        unpacker.feed(data)
        unpacker.read_array_header()
        unpacker.skip()  # version
        unpacker.skip()  # sender
        seq = unpacker.unpack()
        lowest_sendable = unpacker.unpack()
    except Exception:  # noqa: BLE001 — the frame is already known to be bad
        return None, 0
    if type(seq) is not int or type(lowest_sendable) is not int:
        return None, 0
    return seq, lowest_sendable


class Intake:
    """The sender table and the counters of everything that came in."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_senders: int = MAX_SENDERS,
        max_sender_bytes: int = MAX_SENDER_BYTES,
    ) -> None:
        self._clock = clock
        self.max_senders = max_senders
        self.max_sender_bytes = max_sender_bytes
        self.sender_bytes = 0
        # Least recently accepted first: the sender to forget when the table is full.
        self.senders: "OrderedDict[str, SenderState]" = OrderedDict()
        self.evicted = 0
        self.rejects: Counter[str] = Counter()
        self.rejects_by_source: Counter[str] = Counter()
        self.duplicates = 0
        self.gaps = 0
        self.accepted_frames = 0
        self.accepted_values = 0
        self.bindings = PeerBindings(max_senders)
        self._last_reject_log: Dict[Tuple[str, str], float] = {}
        self._log_window = (float("-inf"), 0, 0)  # (start, lines logged, lines suppressed) of this window

    # --- live intake ------------------------------------------------------------

    def receive(self, data: bytes, source: str, peer: Optional[str] = None) -> Decision:
        """Decode and judge one frame; ``source`` names the connection in logs when the sender cannot be read.

        ``peer`` is the connection's CURVE key (its allow-list name), None without CURVE.
        """
        try:
            frame = decode_frame(data)
        except WireError as exc:
            # A bad frame under another key's sender must not be consumed in its place either.
            if peer is not None and exc.sender is not None and self._wrong_key(exc.sender, peer):
                return Decision(Verdict.REJECT, None, None, refusal=Refusal.WRONG_KEY)
            self._count_reject(exc, source)
            decision = self._refuse(exc, data)
            if peer is not None and decision.substitute is not None:
                self._bind(exc.sender, peer)
            return decision
        if peer is None:
            return self.judge(frame)
        if self._wrong_key(frame.sender, peer):
            return Decision(Verdict.REJECT, None, None, refusal=Refusal.WRONG_KEY)
        decision = self.judge(frame)
        if decision.verdict is Verdict.ACCEPT:
            self._bind(frame.sender, peer)
        return decision

    def _wrong_key(self, sender: str, peer: str) -> bool:
        bound = self.bindings.get(sender)
        if bound is None or bound == peer:
            return False
        self._count(Refusal.WRONG_KEY.value, f"{peer} (as {sender})", f"sender {sender} belongs to key {bound!r}, not {peer!r}")
        return True

    def _bind(self, sender: Optional[str], peer: str) -> None:
        """Only an accepted (or consumed) frame binds its sender: a stranger's refused ones bind nothing."""
        if sender is None:
            return
        if self.bindings.get(sender) is None:
            self.bindings.bind(sender, peer)
        else:
            self.bindings.touch(sender)

    def count_refusal(self, reason: Refusal, who: str, detail: str) -> None:
        """A frame refused before it was decoded (a revoked key): counted and logged like any reject."""
        self._count(reason.value, who, detail)

    def judge(self, frame: Frame) -> Decision:
        """Apply the delivery rule; on accept the sender's ``last_seq`` moves to ``frame.seq``."""
        now = self._clock()
        state = self.senders.get(frame.sender)
        if state is None:
            # Only an accepted frame earns a place in the table: a stranger's frames
            # that are refused (gaps, replays) leave nothing behind.
            if frame.seq > max(1, frame.lowest_sendable):
                self.gaps += 1
                return Decision(Verdict.GAP, frame, 0)
            state = self._new_state(frame.sender, now)
        state.last_seen = now
        expected = max(state.last_seq + 1, frame.lowest_sendable)
        if frame.seq < expected:
            state.duplicates += 1
            self.duplicates += 1
            return Decision(Verdict.DUPLICATE, frame, state.last_seq)
        if frame.seq > expected:
            state.gaps += 1
            self.gaps += 1
            return Decision(Verdict.GAP, frame, state.last_seq)
        self.senders.move_to_end(frame.sender)
        self._account(state, frame)
        return Decision(Verdict.ACCEPT, frame, frame.seq)

    # --- recovery replay ------------------------------------------------------------

    def replay(self, frame: Frame) -> bool:
        """A journaled frame, seen again at recovery: True if it must be re-applied.

        It was accepted once, so a gap here means a frame in between was lost to
        corruption (its region is padded now): apply this one anyway, and say so.
        """
        state = self.senders.get(frame.sender)
        if state is None:
            state = self._new_state(frame.sender, self._clock())
        if frame.seq <= state.last_seq:
            return False
        if frame.seq > max(state.last_seq + 1, frame.lowest_sendable):
            logger.warning(
                "recovery: sender %s jumps from seq %s to %s in the journal (a damaged entry was set aside)",
                frame.sender,
                state.last_seq,
                frame.seq,
            )
        self.senders.move_to_end(frame.sender)  # the same least-recent order as live, so evictions match
        self._account(state, frame)
        return True

    # --- snapshot ----------------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        """Intake's part of the ``intake`` section of ``statbus status``."""
        return {
            "values": self.accepted_values,
            "frames": self.accepted_frames,
            "duplicates": self.duplicates,
            "gaps": self.gaps,
            "rejected": sum(self.rejects.values()),
            "rejects": dict(self.rejects),
            "rejects_by_source": dict(self.rejects_by_source.most_common(20)),
            "senders": {
                "count": len(self.senders),
                "bytes": self.sender_bytes,
                "max_count": self.max_senders,
                "max_bytes": self.max_sender_bytes,
                "forgotten": self.evicted,
                "key_bindings": len(self.bindings),
                "key_bindings_forgotten": self.bindings.evicted,
            },
        }

    def trainers_status(self, now: float) -> List[Dict[str, Any]]:
        """The ``trainers`` section of ``statbus status``: one entry per known sender.

        ``gone``: it said goodbye, or it ran on this host and its process no longer
        exists (a trainer killed with SIGKILL says nothing; the table keeps it, so that
        a re-send of its frames is still recognised, but status must not call it connected).
        """
        return [
            {
                "sender": state.sender,
                "host": state.info.get("host"),
                "pid": state.info.get("pid"),
                "last_seq": state.last_seq,
                "last_seen_ago": max(0.0, now - state.last_seen),
                "values": state.values,
                "frames": state.frames,
                "duplicates": state.duplicates,
                "gaps": state.gaps,
                "rejects": state.rejects,
                "dropped": state.dropped,
                "media_dropped": state.media_dropped,
                "media_dropped_bytes": state.media_dropped_bytes,
                "bye": state.bye,
                "gone": trainer_gone(state),
            }
            for state in self.senders.values()
        ]

    def snapshot(self) -> Dict[str, Dict[str, Any]]:
        return {sender: state.to_snapshot() for sender, state in self.senders.items()}

    def restore(self, snapshot: Any) -> None:
        senders: "OrderedDict[str, SenderState]" = OrderedDict()
        if isinstance(snapshot, Mapping):
            now = self._clock()
            for sender, data in snapshot.items():
                if isinstance(sender, str) and isinstance(data, Mapping):
                    state = SenderState.from_snapshot(sender, data)
                    state.first_seen = state.last_seen = now
                    state.measure()
                    senders[sender] = state
        else:
            logger.error("journal snapshot has no usable sender table; starting with an empty one")
        self.senders = senders
        self.sender_bytes = sum(state.size for state in senders.values())
        self._bound_senders()

    # --- internals -------------------------------------------------------------------------

    def _new_state(self, sender: str, now: float) -> SenderState:
        state = self.senders[sender] = SenderState(sender, first_seen=now)
        self.sender_bytes += state.measure()
        self._bound_senders()
        return state

    def _bound_senders(self) -> None:
        """Forget the senders heard from least recently while the table is over a bound (never the newest)."""
        while len(self.senders) > 1 and (
            len(self.senders) > self.max_senders or self.sender_bytes > self.max_sender_bytes
        ):
            forgotten, state = self.senders.popitem(last=False)
            self.sender_bytes -= state.size
            self.evicted += 1
            if self.evicted == 1 or self.evicted % 1000 == 0:
                logger.warning(
                    "sender table full (%s senders, %s MiB): forgot %s, the one heard from least recently "
                    "(%s forgotten so far)",
                    self.max_senders, self.max_sender_bytes >> 20, forgotten, self.evicted,
                )

    def _account(self, state: SenderState, frame: Frame) -> None:
        state.last_seq = frame.seq
        state.frames += 1
        state.dropped = max(state.dropped, frame.dropped)
        values = 0
        for record in frame.records:
            kind = type(record)
            if kind is StatRecord:
                values += len(record.packed) >> 3
            elif kind is Hello:
                state.info.update({k: info_value(v) for k, v in record.info.items() if k in INFO_FIELDS})
                before = state.size
                self.sender_bytes += state.measure() - before
                self._bound_senders()
            elif kind is Bye:
                state.bye = True
            elif kind is MediaDrops:
                state.media_dropped = max(state.media_dropped, record.values)
                state.media_dropped_bytes = max(state.media_dropped_bytes, record.nbytes)
        state.values += values
        self.accepted_frames += 1
        self.accepted_values += values

    def _refuse(self, exc: WireError, data: bytes) -> Decision:
        """The decision on a refused frame whose envelope might still be read.

        A frame with a bad record would come back forever if it were not
        acknowledged, and hold up everything its sender sends after it; so when
        it is the sender's next expected frame it is consumed: an empty frame
        with its seq is journaled in its place (so that a replay moves past it
        too), it is acked, and the sender's traffic goes on.  Otherwise the
        sender hears where it stands.
        """
        reject = Decision(Verdict.REJECT, None, None, exc.reason)
        if exc.sender is None:
            return reject
        state = self.senders.get(exc.sender)
        if exc.reason is RejectReason.BAD_RECORD:
            seq, lowest_sendable = _envelope_position(data)
            if seq is not None:
                if state is None:
                    if seq != max(1, lowest_sendable):
                        return reject._replace(ack=0)  # not consumed: no place in the table either
                    state = self._new_state(exc.sender, self._clock())
                state.last_seen = self._clock()
                state.rejects += 1
                if seq == max(state.last_seq + 1, lowest_sendable):
                    empty = Frame(exc.sender, seq, lowest_sendable, state.dropped, ())
                    self.senders.move_to_end(exc.sender)
                    self._account(state, empty)
                    substitute = encode_frame(exc.sender, seq, lowest_sendable, state.dropped, [])
                    return Decision(Verdict.REJECT, empty, seq, exc.reason, substitute)
                return reject._replace(ack=state.last_seq)
        if state is not None:
            state.rejects += 1
            return reject._replace(ack=state.last_seq)
        return reject

    def _count_reject(self, exc: WireError, source: str) -> None:
        self._count(exc.reason.value, exc.sender or source, str(exc))

    def _count(self, reason: str, who: str, detail: str) -> None:
        self.rejects[reason] += 1
        self.rejects_by_source[who] += 1
        if len(self.rejects_by_source) > MAX_REJECT_SOURCES:
            # A peer that reconnects for every bad frame gets a new routing id each time:
            # keep the worst offenders, not an ever-growing table.
            self.rejects_by_source = Counter(dict(self.rejects_by_source.most_common(MAX_REJECT_SOURCES // 10)))
        now = self._clock()
        key = (who, reason)
        last = self._last_reject_log.get(key)
        if last is None or now - last >= REJECT_LOG_INTERVAL:
            if len(self._last_reject_log) > 10_000:
                self._last_reject_log.clear()  # bounded, whatever a hostile peer sends
            self._last_reject_log[key] = now
            if self._may_log(now):
                logger.warning("rejected a frame from %s: %s (%s rejects from it so far)", who, detail, self.rejects_by_source[who])

    def _may_log(self, now: float) -> bool:
        start, logged, suppressed = self._log_window
        if now - start >= REJECT_LOG_INTERVAL:
            if suppressed:
                logger.warning("%s more lines about rejected frames were not logged (%s per %.0f s at most)",
                               suppressed, REJECT_LOG_BURST, REJECT_LOG_INTERVAL)
            start, logged, suppressed = now, 0, 0
        if logged >= REJECT_LOG_BURST:
            self._log_window = (start, logged, suppressed + 1)
            return False
        self._log_window = (start, logged + 1, suppressed)
        return True
