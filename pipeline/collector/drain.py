"""The collector's trainer intake, one bounded batch at a time: receive, judge, journal, commit, then ack.

A mixin of :class:`.loop.Collector` (its state — journal, intake, aggregator, stalls — is
the collector's): the loop calls :meth:`DataDrain._drain` when a data socket is readable,
and a write stall (:mod:`.write_stall`) sends the acks it held through :meth:`DataDrain._send_held_acks`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import zmq

from ...plugins.records import pack_summary
from ..journal.writer import EntryType, JournalWriteError
from ..wire import Refusal, encode_ack, encode_refusal
from .intake import Verdict

MAX_FRAMES_PER_ITERATION = 1024
MAX_BYTES_PER_ITERATION = 32 << 20
"""Intake drains at most this much before it commits and acks: acks stay prompt under load."""
MAX_DRAIN_SECONDS = 0.05
"""...and for at most this long: a burst of big frames (each ~100 ms to decode and aggregate)
would otherwise keep worker fetches and control requests unanswered for seconds, and the
workers would take the collector for lost."""


class DataDrain:
    """Drains the data sockets; mixed into :class:`.loop.Collector`."""

    def _drain(self, data: zmq.Socket) -> None:
        """Take up to a bounded batch of frames, journal them, commit, then ack."""
        if self.stalls.current is not None:
            self.stalls.drop_frames(data, MAX_FRAMES_PER_ITERATION)
            return
        acks: Dict[bytes, int] = {}
        appended = False
        budget = MAX_BYTES_PER_ITERATION
        journal, aggregator, intake = self.journal, self.aggregator, self.intake
        auth = self._data_auth.get(data)
        clock = self.clock
        deadline = clock() + MAX_DRAIN_SECONDS
        refusals: Dict[bytes, Refusal] = {}
        peer: Optional[str] = None
        for _ in range(MAX_FRAMES_PER_ITERATION):
            try:
                if auth is None:
                    message = data.recv_multipart(zmq.NOBLOCK)
                else:
                    frames = data.recv_multipart(zmq.NOBLOCK, copy=False)
                    peer = self._admitted(frames, auth)
                    if peer is None:
                        if len(frames) == 2:
                            refusals[frames[0].bytes] = Refusal.REVOKED
                        continue
                    message = [frame.bytes for frame in frames]
            except zmq.Again:
                break
            if len(message) != 2:
                if message:
                    intake.rejects["bad_message"] += 1
                continue
            routing_id, payload = message
            decision = intake.receive(payload, routing_id.hex(), peer)
            if decision.refusal is not None:
                refusals[routing_id] = decision.refusal
                continue
            if decision.verdict is Verdict.ACCEPT:
                self.retention.note_appended(journal.append(EntryType.FRAME, payload))
                for summary in aggregator.apply(decision.frame.records, decision.frame.sender):
                    self.retention.note_appended(journal.append(EntryType.SUMMARY, pack_summary(summary)))
                    self.summaries += 1
                appended = True
                if journal.needs_rotation():
                    # Mid-drain is fine: rotate() commits first, and the snapshot it
                    # writes is the state after every entry appended so far.
                    try:
                        self._rotate()
                    except JournalWriteError as exc:
                        if decision.ack is not None:
                            acks[routing_id] = decision.ack
                        self.stalls.failed(exc, self._tagged(data, acks))
                        return
            elif decision.substitute is not None:
                self.retention.note_appended(journal.append(EntryType.FRAME, decision.substitute))
                appended = True
            if decision.ack is not None:
                acks[routing_id] = decision.ack
            budget -= len(payload)
            if budget <= 0 or clock() >= deadline or journal.write_error is not None:
                break
        if appended:
            try:
                journal.commit()
            except JournalWriteError as exc:
                self.stalls.failed(exc, self._tagged(data, acks))
                return
            self.fetch.on_committed()
        # Acks first: what a connection got journaled before its refusal is acknowledged still.
        replies = [(routing_id, encode_ack(seq)) for routing_id, seq in acks.items()]
        replies += [(routing_id, encode_refusal(reason)) for routing_id, reason in refusals.items()]
        for routing_id, reply in replies:
            try:
                data.send_multipart([routing_id, reply], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the trainer is gone or not reading: it re-sends and hears again

    def _admitted(self, frames: List[zmq.Frame], auth: Any) -> Optional[str]:
        """The message's CURVE peer if it is still on the allow-list, else None.

        ZAP checks a key once per connection; a key revoked since stays connected,
        so every frame's ``User-Id`` (the key's allow-list name) is checked again
        here (the allow-list is re-read at most once a second).  A revoked peer is
        told so (:data:`Refusal.REVOKED`), which stops its re-sending.
        """
        user = frames[-1].get("User-Id") if frames else ""
        if not auth.is_allowed(user):
            self.intake.count_refusal(Refusal.REVOKED, repr(user), "its key is no longer on the allow-list")
            return None
        return user

    def _tagged(self, data: zmq.Socket, acks: Dict[bytes, int]) -> Dict[bytes, int]:
        """``acks`` with each routing id prefixed by its socket's index: a stall holds acks of
        every data socket, and routing ids are only unique within one socket."""
        index = bytes([self._datas.index(data)])
        return {index + routing_id: seq for routing_id, seq in acks.items()}

    def _send_held_acks(self, acks: Dict[bytes, int]) -> None:
        """The acks a stall held back (keys from :meth:`_tagged`), once what they acknowledge is written."""
        for key, seq in acks.items():
            try:
                self._datas[key[0]].send_multipart([key[1:], encode_ack(seq)], zmq.NOBLOCK)
            except (zmq.ZMQError, IndexError):
                pass  # the trainer is gone or not reading (or no socket yet): it re-sends and hears again
