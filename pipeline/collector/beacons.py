"""The collector's word to trainers whose frames wait behind a backlog: alive, and working.

A frame is acked once it is journaled.  With many trainers, frames wait in ZeroMQ's
queue while the collector takes them in turn (the ROUTER reads one frame of each
connection in turn), and a trainer at exit that hears nothing for its linger would
give up on a collector that is alive and working its way to its frames.  So while a
drain ends with frames still waiting, the collector repeats, every
:data:`BEACON_INTERVAL`, the last ack of each connection it acked within
:data:`BEACON_WINDOW`.  A repeated ack releases nothing; the trainer takes it as a sign
of life (docs/internals.md "Wire").  An idle collector sends none (no wake-ups), nor does
one whose journal cannot be written: it takes nothing in, and its trainers are right
to stop waiting for it.
"""

from __future__ import annotations

import collections
from typing import Dict, List, Sequence, Tuple

import zmq

from ..wire import encode_ack

BEACON_INTERVAL = 0.5
"""Seconds between two rounds of repeated acks while a backlog lasts (a trainer's linger is 2 s)."""
BEACON_WINDOW = 30.0
"""Connections acked this recently hear the repeats: a round of 128 connections' big frames can take this long."""
MAX_HEARD = 10_000
"""Connections remembered at most (the least recently acked are forgotten first)."""


class Beacons:
    """The connections to reassure, and when (the bookkeeping is tested without sockets)."""

    def __init__(self) -> None:
        self._acked: "collections.OrderedDict[bytes, Tuple[int, float]]" = collections.OrderedDict()
        """Socket index + routing id → (last acked seq, when), least recent first."""
        self._next_at = 0.0
        self.sent = 0

    def acked(self, key: bytes, seq: int, now: float) -> None:
        self._acked.pop(key, None)
        self._acked[key] = (seq, now)
        if len(self._acked) > MAX_HEARD:
            self._acked.popitem(last=False)

    def due(self, backlog: bool, now: float) -> List[Tuple[bytes, int]]:
        """The ``(key, seq)`` to repeat now: empty unless frames wait and the interval has passed."""
        if not backlog or now < self._next_at:
            return []
        self._next_at = now + BEACON_INTERVAL
        while self._acked:
            key, (_, when) = next(iter(self._acked.items()))
            if now - when < BEACON_WINDOW:
                break
            del self._acked[key]
        repeats = [(key, seq) for key, (seq, _) in self._acked.items()]
        self.sent += len(repeats)
        return repeats

    def after_drain(self, datas: Sequence[zmq.Socket], data: zmq.Socket, acks: Dict[bytes, int],
                    backlog: bool, now: float) -> None:
        """Note the acks a drain of ``data`` (one of ``datas``) just sent; repeat the others' if due.

        A routing id is unique only within its socket: keys are prefixed by the socket's index.
        """
        index = bytes([datas.index(data)])
        for routing_id, seq in acks.items():
            self.acked(index + routing_id, seq, now)
        for key, seq in self.due(backlog, now):
            if key[1:] in acks and key[:1] == index:
                continue  # acked a moment ago
            try:
                datas[key[0]].send_multipart([key[1:], encode_ack(seq)], zmq.NOBLOCK)
            except (zmq.ZMQError, IndexError):
                pass  # gone, or not reading: a repeat is never owed
