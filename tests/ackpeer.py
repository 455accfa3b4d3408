"""A small real collector stand-in for the trainer-side tests.

A ROUTER socket in a thread of the test process: decodes each frame with
``wire.decode_frame``, applies the delivery rule of docs/internals.md per
sender (``expected = max(last_seq + 1, lowest_sendable)``; accept / duplicate / gap),
records accepted frames and acks cumulatively.  ``PeerState`` outlives a peer,
so a "restarted collector" on the same address keeps its dedupe state, like the
real one recovering from its journal.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Dict, List, Optional, Tuple

import zmq

from statbus.pipeline.wire import Bye, Frame, Hello, WireError, WriteMarker, decode_frame, encode_ack
from statbus.plugins.records import PropertyRecord, StatOp, StatRecord
from waiting import wait_for  # noqa: F401 — re-exported for the trainer tests
from zmq_context import term_or_fail


@dataclasses.dataclass
class PeerState:
    last_seq: Dict[str, int] = dataclasses.field(default_factory=dict)
    accepted: List[Frame] = dataclasses.field(default_factory=list)
    duplicates: int = 0
    gaps: int = 0
    rejected: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def frames(self, sender: Optional[str] = None) -> List[Frame]:
        with self.lock:
            return [f for f in self.accepted if sender is None or f.sender == sender]

    def senders(self) -> List[str]:
        with self.lock:
            return list(dict.fromkeys(f.sender for f in self.accepted))

    def records(self, sender: Optional[str] = None) -> List[Tuple[str, object]]:
        """(sender, record) in acceptance order."""
        return [(f.sender, r) for f in self.frames(sender) for r in f.records]

    def values(self, category: str, key: str, sender: Optional[str] = None) -> List[float]:
        """Every value added (or set) for (category, key), in arrival order."""
        out: List[float] = []
        for _, record in self.records(sender):
            if isinstance(record, StatRecord) and record.category == category and record.key == key:
                out.extend(record.values)
        return out

    def writes(self, category: Optional[str] = None, sender: Optional[str] = None) -> List[WriteMarker]:
        return [r for _, r in self.records(sender) if isinstance(r, WriteMarker)
                and (category is None or r.category == category)]

    def properties(self) -> List[PropertyRecord]:
        return [r for _, r in self.records() if isinstance(r, PropertyRecord)]

    def hellos(self) -> List[Hello]:
        return [r for _, r in self.records() if isinstance(r, Hello)]

    def byes(self) -> List[Bye]:
        return [r for _, r in self.records() if isinstance(r, Bye)]


class AckPeer:
    """``with AckPeer(address) as peer:`` — serves until the block ends.

    Its context is its own (a peer is started and stopped, even restarted, inside one test) and
    ends like the ``context`` fixture's: a socket left open fails the test in ``stop``.
    """

    def __init__(self, address: str, state: Optional[PeerState] = None, *, ack: bool = True) -> None:
        self.address = address
        self.state = state if state is not None else PeerState()
        self.ack = ack
        self.lose = 0
        """Frames to discard unread, as if lost on the way (the sender must re-send them)."""
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._context = zmq.Context()
        self._thread = threading.Thread(target=self._serve, name="ackpeer", daemon=True)

    def __enter__(self) -> "AckPeer":
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            self.stop()  # ends the context too
            raise self._error or RuntimeError("ack peer did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "ack peer thread did not stop"
        term_or_fail(self._context)

    def _serve(self) -> None:
        try:
            with self._context.socket(zmq.ROUTER) as sock:
                sock.setsockopt(zmq.LINGER, 0)
                sock.bind(self.address)
                self._ready.set()
                while not self._stop.is_set():
                    if not sock.poll(20):
                        continue
                    routing_id, data = sock.recv_multipart()
                    if self.lose > 0:
                        self.lose -= 1
                        continue
                    acked = self._handle(data)
                    if acked is not None and self.ack:
                        sock.send_multipart([routing_id, encode_ack(acked)])
        except BaseException as exc:  # noqa: BLE001 — surfaced by __enter__ or the test
            self._error = exc
            self._ready.set()

    def _handle(self, data: bytes) -> Optional[int]:
        state = self.state
        try:
            frame = decode_frame(data)
        except WireError:
            with state.lock:
                state.rejected += 1
            return None
        with state.lock:
            last = state.last_seq.get(frame.sender, 0)
            expected = max(last + 1, frame.lowest_sendable)
            if frame.seq == expected:
                state.accepted.append(frame)
                state.last_seq[frame.sender] = frame.seq
                return frame.seq
            if frame.seq < expected:
                state.duplicates += 1
            else:
                state.gaps += 1
            return last



def stat_ops(state: PeerState, category: str, key: str) -> List[Tuple[StatOp, int, List[float]]]:
    """(op, aggregation value, values) of every stat record of the key, in order."""
    return [(r.op, r.aggregation.value, r.values) for _, r in state.records()
            if isinstance(r, StatRecord) and r.category == category and r.key == key]
