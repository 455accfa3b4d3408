"""Trainer side: the bounded buffer of frames the collector has not acknowledged yet.

Frames built by :mod:`.framing` wait here, oldest first, until a cumulative ack
releases them; the sender (:mod:`.sender`) re-sends them from here when the
collector comes back.  The overflow rules are tested without sockets or threads.
"""

from __future__ import annotations

import collections
import time
from typing import Callable, Deque, List, NamedTuple, Optional, Tuple

from ...plugins.records import RecordKind
from ..wire import encode_frame, frame_records
from .framing import MAX_FRAME_RECORDS, STAT_KIND, WRITE_KIND

_MEDIA_KIND = RecordKind.MEDIA.value

MAX_MERGED_BYTES = 2 << 20
"""Stripped frames are merged only while the result stays this small."""
FRAME_OVERHEAD = 256
"""Bytes of Python objects per buffered frame, counted so the bound is about real memory."""


class Outgoing:
    """A sealed frame in the trainer's buffer, until the collector acks it.

    Only the encoded bytes are kept.  Holding the records too (lists of lists,
    hundreds of thousands while the collector lags) made every run of the
    training process's cyclic garbage collector walk them: 4x the cost of a
    summary-heavy trainer's add_stat.  The rare paths that need the records
    (re-encoding when lowest_sendable moved, stripping stats, merging) decode them again.
    """

    __slots__ = ("seq", "nrecords", "nvalues", "media", "payload", "lowest_sendable", "created", "first_sent")

    def __init__(self, seq: int, nvalues: int, media: int, created: float) -> None:
        self.seq = seq
        self.nrecords = 0
        self.nvalues = nvalues
        self.media = media
        """Raw bytes of the media value this frame holds (0: none); counted against the media
        bound (``TrainerConfig.media_bytes``), not against the buffer's."""
        self.payload = b""
        self.lowest_sendable = 0
        self.created = created
        self.first_sent: Optional[float] = None

    @property
    def nbytes(self) -> int:
        """What this frame counts against the buffer's bound: its media value is not counted here."""
        return len(self.payload) - self.media + FRAME_OVERHEAD

    @property
    def empty(self) -> bool:
        return not self.nrecords

    @property
    def has_stats(self) -> bool:
        return self.nvalues > 0

    @property
    def records(self) -> List[list]:
        """The frame's records, decoded from its payload."""
        return frame_records(self.payload)

    def encode(self, sender: str, lowest_sendable: int, dropped: int, records: Optional[List[list]] = None) -> None:
        # lowest_sendable goes into the payload, so a frame is re-encoded when it moves.
        if records is None:
            records = self.records
        self.payload = encode_frame(sender, self.seq, lowest_sendable, dropped, records)
        self.nrecords = len(records)
        self.lowest_sendable = lowest_sendable

    def strip_stats(self, sender: str, lowest_sendable: int, dropped_before: int) -> int:
        """Drop the stat records (markers, properties and media stay), re-encoded; returns the values lost."""
        dropped = self.nvalues
        kept = [record for record in self.records if record[0] != STAT_KIND]
        self.nvalues = 0
        self.encode(sender, lowest_sendable, dropped_before + dropped, kept)
        return dropped

    def strip_media(self, sender: str, lowest_sendable: int, dropped: int) -> None:
        """Drop the media record (a HELLO stays), re-encoded with the same seq."""
        kept = [record for record in self.records if record[0] != _MEDIA_KIND]
        self.media = 0
        self.encode(sender, lowest_sendable, dropped, kept)


class HeldFrame(NamedTuple):
    seq: int
    payload: bytes
    nvalues: int
    nsummaries: int
    nmedia: int = 0


def _mergeable(lower: Outgoing, upper: Outgoing) -> bool:
    """Two stats-less frames without media (alone in its frame), never sent (so the collector cannot
    hold the lower one), small enough."""
    return (
        lower.first_sent is None and upper.first_sent is None
        and not lower.has_stats and not upper.has_stats
        and not lower.media and not upper.media
        and lower.nrecords + upper.nrecords <= MAX_FRAME_RECORDS
        and lower.nbytes + upper.nbytes <= MAX_MERGED_BYTES
    )


class FrameBuffer:
    """Unacknowledged frames, oldest first, bounded by ``limit`` bytes (docs/internals.md "Wire").

    Over the limit, the oldest frames go whole to ``spill`` (the run's spool) when one is
    given and takes them.  What it refuses, stat records are stripped from the oldest frames (same seq,
    re-encoded); frames left empty at the bottom are dropped and ``lowest_sendable`` moves
    past them.  A stripped bottom frame that was never sent is merged into the
    next one when that is stripped and unsent too (so a HELLO or a run of WRITE
    markers does not pin lowest_sendable, and costs bytes, not frames).  Only if
    markers and properties alone overflow the buffer are whole frames dropped
    (``frames_lost``): memory stays bounded whatever happens (but for markers alone
    past the limit while spilled frames wait for their ack: dropping frames then would
    move lowest_sendable past the spilled ones).

    A frame's media value (a frame holds at most one, alone) is not counted against
    ``limit``: :attr:`media_bytes` is bounded by the client before the value is queued
    (``TrainerConfig.media_bytes``).  It is never stripped nor merged; it goes to the spool
    whole with its frame, and a media frame dropped whole is counted in ``media_lost``.
    """

    def __init__(self, sender: str, limit: int, spill: Optional[Callable[[List[HeldFrame]], int]] = None,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.sender = sender
        self._now = now  # the client's clock (:mod:`.clock`): when a frame was made, for its stall checks
        self.limit = limit
        self.spill = spill
        """Over the limit, first: hand the oldest frames, whole, to this (the spool); it returns how many
        of them it wrote, from the oldest, and those leave memory.  Stripping is for what it refuses."""
        self.spilled_upto = 0  # the highest seq handed to ``spill``
        self.frames: Deque[Outgoing] = collections.deque()
        self.nbytes = 0
        self.next_seq = 1
        self.lowest_sendable = 1          # the lowest seq this sender can still send: past acks and drops
        self.acked = 0
        self.values_dropped = 0
        self.frames_lost = 0
        self.media_bytes = 0
        """Raw media bytes of the frames held (read by training threads for the media bound)."""
        self.media_lost = 0
        self.media_lost_bytes = 0
        self._stripped_upto = 0  # frames up to this seq hold no stat records

    def __len__(self) -> int:
        return len(self.frames)

    def unacked(self) -> Tuple[int, int]:
        """``(values, summaries)`` in the buffer or dropped from it (a slow path: frames are decoded)."""
        held = self.held()
        return self.values_dropped + sum(f.nvalues for f in held), sum(f.nsummaries for f in held)

    def held(self) -> List["HeldFrame"]:
        """Every frame not acknowledged, oldest first, as it would be sent now (for the spool at exit)."""
        return [
            HeldFrame(frame.seq, self.payload(frame), frame.nvalues,
                      sum(1 for record in frame.records if record[0] == WRITE_KIND), int(frame.media > 0))
            for frame in self.frames
        ]

    def add(self, records: List[list], nvalues: int, media: int = 0) -> Outgoing:
        frame = Outgoing(self.next_seq, nvalues, media, self._now())
        self.next_seq += 1
        frame.encode(self.sender, self.lowest_sendable, self.values_dropped, records)
        self.frames.append(frame)
        self.nbytes += frame.nbytes
        self.media_bytes += media
        return frame

    def _remove_bottom(self) -> Outgoing:
        frame = self.frames.popleft()
        self.nbytes -= frame.nbytes
        self.media_bytes -= frame.media
        return frame

    def strip_media(self, keep: int) -> Tuple[int, int]:
        """Keep the oldest media values up to ``keep`` raw bytes, strip the rest from their frames
        (seqs stay consecutive); returns ``(values, bytes)`` stripped.  For the spool at exit."""
        count = nbytes = 0
        for frame in self.frames:
            if not frame.media:
                continue
            if frame.media <= keep:
                keep -= frame.media
                continue
            count, nbytes = count + 1, nbytes + frame.media
            self.media_bytes -= frame.media
            before = frame.nbytes
            frame.strip_media(self.sender, self.lowest_sendable, self.values_dropped)
            self.nbytes += frame.nbytes - before
        return count, nbytes

    def ack(self, acked: int) -> int:
        """Apply a cumulative ack; returns how many frames it released."""
        acked = min(acked, self.next_seq - 1)
        if acked <= self.acked:
            return 0
        released = 0
        while self.frames and self.frames[0].seq <= acked:
            self._remove_bottom()
            released += 1
        self.acked = acked
        # Acked frames are never sent again either: a collector that lost its
        # sender table (journal gone) then accepts this sender mid-stream.
        self.lowest_sendable = max(self.lowest_sendable, acked + 1)
        return released

    def payload(self, frame: Outgoing) -> bytes:
        """The frame's bytes, re-encoded first if lowest_sendable moved since."""
        if frame.lowest_sendable != self.lowest_sendable:
            before = frame.nbytes
            frame.encode(self.sender, self.lowest_sendable, self.values_dropped)
            self.nbytes += frame.nbytes - before
        return frame.payload

    def _spill(self) -> None:
        """The oldest frames, whole, to the spool until half the limit is left (one write per outage
        stretch, not one per frame); lowest_sendable stays below them, so the collector takes the
        frames after them only once it has taken them from the spool."""
        target, size, out = self.limit // 2, self.nbytes, []
        for frame in self.frames:
            if size <= target:
                break
            out.append(HeldFrame(frame.seq, self.payload(frame), frame.nvalues, 0, int(frame.media > 0)))
            size -= frame.nbytes
        for _ in range(self.spill(out) if out else 0):
            self.spilled_upto = self._remove_bottom().seq

    def _merge_up(self, lower: Outgoing, upper: Outgoing) -> None:
        # Markers keep their order relative to every stat: neither frame has stats left.
        before = upper.nbytes
        upper.encode(self.sender, self.lowest_sendable, self.values_dropped, lower.records + upper.records)
        self.nbytes += upper.nbytes - before

    def enforce(self) -> Tuple[int, int]:
        """Bring the buffer under its limit; returns (values dropped, frames lost) by this call."""
        values_before, lost_before = self.values_dropped, self.frames_lost
        if self.nbytes > self.limit and self.spill is not None:
            self._spill()
        if self.nbytes > self.limit and self.frames:
            first = self.frames[0].seq
            for index in range(max(0, self._stripped_upto + 1 - first), len(self.frames)):
                if self.nbytes <= self.limit:
                    break
                frame = self.frames[index]
                self._stripped_upto = frame.seq
                if frame.has_stats:
                    before = frame.nbytes
                    self.values_dropped += frame.strip_stats(self.sender, self.lowest_sendable, self.values_dropped)
                    self.nbytes += frame.nbytes - before
        while self.frames and self.spilled_upto <= self.acked:
            # (Not while spilled frames are unacknowledged: lowest_sendable must not pass them.)
            bottom = self.frames[0]
            if not bottom.empty:
                # Merging needs no pressure: unsent stats-less neighbours are one frame's worth.
                if len(self.frames) > 1 and _mergeable(bottom, self.frames[1]):
                    self._merge_up(bottom, self.frames[1])
                elif self.nbytes > self.limit and len(self.frames) > 1:
                    self.frames_lost += 1
                    if bottom.media:
                        self.media_lost += 1
                        self.media_lost_bytes += bottom.media
                else:
                    break
            self._remove_bottom()
            self.lowest_sendable = bottom.seq + 1
        return self.values_dropped - values_before, self.frames_lost - lost_before
