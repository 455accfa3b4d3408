"""An episode in which the collector's journal cannot be written: a full disk, a quota, an I/O error.

The collector stays up.  What it had accepted when the write failed stays in the
journal's buffer, applied to the sender table and the open periods already, and is
written at its own positions once the disk takes it again: state and journal never
disagree.  Until then nothing new is taken in and nothing is acknowledged, so every
trainer keeps its unacknowledged frames in its bounded buffer, exactly as when the
collector is down, and re-sends them after the episode; fetches, status and
retention go on.  This module holds the episode's bookkeeping and its words; the
collector's loop (:mod:`.loop`) drives it.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import time
from typing import Any, Callable, Dict, Optional

import zmq

from ..journal.writer import Journal, JournalWriteError

logger = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
"""Seconds between two attempts to write what waits (one pwrite: cheap, and prompt once space is back)."""

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def free_bytes(directory: str) -> Optional[int]:
    """Bytes an unprivileged writer may still use on ``directory``'s filesystem (None: unknown)."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def mib(nbytes: Optional[int]) -> str:
    if nbytes is None:
        return "unknown"
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 1 << 20 else f"{nbytes} bytes"


@dataclasses.dataclass
class WriteStall:
    """One episode, from the first failed write to the first successful commit (mutable: the loop updates it)."""

    directory: str
    errno: Optional[int]
    message: str
    pending_bytes: int
    since: float
    """The collector's clock at the start."""
    since_wall: float
    """``time.time()`` at the start, for people."""
    next_retry: float
    retries: int = 0
    frames_deferred: int = 0
    """Frames that arrived meanwhile and were left to their trainers (not journaled, not acked)."""
    held_acks: Dict[bytes, int] = dataclasses.field(default_factory=dict)
    """Acks of frames accepted before the failure, sent once they are written."""

    @classmethod
    def begin(cls, directory: str, error: JournalWriteError, now: float) -> "WriteStall":
        stall = cls(directory, error.errno, error.reason, error.pending_bytes, now, time.time(), now + RETRY_SECONDS)
        logger.error(
            "journal: %s since %s (%s) in %s: %s of accepted frames wait in memory; free at least that much "
            "(%s free now). Until then no frame is taken in or acknowledged (trainers keep theirs and send "
            "them again); retrying every %.0f s, no restart needed.",
            stall.reason, stall.since_text, stall.message, directory, mib(stall.pending_bytes),
            mib(free_bytes(directory)), RETRY_SECONDS,
        )
        return stall

    @property
    def reason(self) -> str:
        return "disk full" if self.errno in DISK_FULL_ERRNOS else "write error"

    @property
    def since_text(self) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self.since_wall))

    def hold(self, acks: Dict[bytes, int]) -> None:
        for routing_id, seq in acks.items():
            if seq > self.held_acks.get(routing_id, -1):
                self.held_acks[routing_id] = seq

    def failed_again(self, error: JournalWriteError, now: float) -> None:
        """Another attempt failed: quietly (one log line per episode), with the latest figures."""
        self.retries += 1
        self.errno, self.message, self.pending_bytes = error.errno, error.reason, error.pending_bytes
        self.next_retry = now + RETRY_SECONDS

    def end(self, now: float, written: int) -> None:
        logger.warning(
            "journal: writing again after %.0f s of %s (%s written that waited); acknowledging trainers, "
            "%s frames left to them meanwhile come back as they re-send",
            now - self.since, self.reason, mib(written), self.frames_deferred,
        )

    def status(self, now: float) -> Dict[str, Any]:
        return {
            "reason": self.reason,
            "since": self.since_wall,
            "since_text": self.since_text,
            "seconds": now - self.since,
            "errno": errno.errorcode.get(self.errno, str(self.errno)) if self.errno is not None else None,
            "message": self.message,
            "pending_bytes": self.pending_bytes,
            "free_bytes": free_bytes(self.directory),
            "retries": self.retries,
            "frames_deferred": self.frames_deferred,
        }


class StallControl:
    """The collector's side of the episodes: begin one, let frames go meanwhile, retry, end it."""

    def __init__(
        self,
        journal: Journal,
        directory: str,
        clock: Callable[[], float],
        *,
        readable: Callable[[], None],
        rotate: Callable[[], None],
        send_acks: Callable[[Dict[bytes, int]], None],
    ) -> None:
        self._journal = journal
        self._directory = directory
        self._clock = clock
        self._readable = readable  # the fetch server: what did reach the file may be served
        self._rotate = rotate
        self._send_acks = send_acks
        self.current: Optional[WriteStall] = None

    def status(self, now: float) -> Dict[str, Any]:
        """The stall's part of the ``journal`` section of ``statbus status``."""
        stall = self.current
        return {
            "state": "ok" if stall is None else stall.reason,
            "write_error": stall.status(now) if stall is not None else None,
        }

    def failed(self, error: JournalWriteError, acks: Dict[bytes, int]) -> None:
        """A write or sync failed: hold ``acks``, take nothing in, retry from :meth:`tick`."""
        if not error.retryable:
            raise error
        now = self._clock()
        if self.current is None:
            self.current = WriteStall.begin(self._directory, error, now)
        else:
            self.current.failed_again(error, now)
        self.current.hold(acks)
        self._readable()

    def drop_frames(self, data: zmq.Socket, limit: int) -> None:
        """Read frames and let them go: each trainer keeps its own until it is acked, and the
        collector's memory does not fill with frames (and their re-sends) it cannot journal."""
        assert self.current is not None
        for _ in range(limit):
            try:
                data.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.current.frames_deferred += 1

    def tick(self) -> None:
        stall = self.current
        now = self._clock()
        if stall is None or now < stall.next_retry:
            return
        journal = self._journal
        waiting = journal.pending_bytes
        try:
            journal.commit()
            if journal.needs_rotation():
                self._rotate()
                journal.commit()
        except JournalWriteError as exc:
            if not exc.retryable:
                raise
            stall.failed_again(exc, now)
            self._readable()
            return
        self.current = None
        stall.end(now, waiting)
        self._readable()
        self._send_acks(stall.held_acks)
