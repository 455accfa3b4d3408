"""At exit, what the collector has not acknowledged goes to the run's spool instead of being lost.

A closing client whose frames were not all acknowledged within its linger hands
them here (:meth:`.sender.Client.held_frames`); they are written to
``<statbus_dir>/spool/`` (format: :mod:`..spool_file`) in files of at most
``spool_file.FILE_BYTES``, each tmp + fsync + rename, and the run's next collector
takes them in exactly once.  Values are lost only when the spool cannot be
written, and the one line this module composes says which it was.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Sequence

from .. import spool_file
from ..layout import RunLayout
from .rate_log import RateLimitedLog
from .resend_buffer import HeldFrame

if TYPE_CHECKING:  # the client is passed in
    from .config import TrainerConfig
    from .sender import Client

logger = logging.getLogger(__name__)
_rlog = RateLimitedLog(logger)

SPOOL_JOIN = 5.0
"""Longest a closing client waits for its sender thread, once it missed close()'s own second, before it
gives up on spooling: a thread still running then is inside an on-demand collector start (which ends
once that collector answers), and only a stopped thread leaves the buffer to the spool."""
SPILL_BUFFERS = 4
"""A running trainer's files waiting in the spool stay under this many times its buffer (``buffer_bytes``):
256 MiB by default; with what it spools at exit (at most one buffer more), 320 MiB per process."""


class Written(NamedTuple):
    frames: int
    files: int
    nbytes: int
    values: int
    summaries: int
    error: Optional[str]
    """Why the rest could not be written (None: everything was)."""


def _chunks(frames: Sequence[HeldFrame]) -> List[List[HeldFrame]]:
    chunks: List[List[HeldFrame]] = []
    size = spool_file.FILE_BYTES
    for frame in frames:
        if size + len(frame.payload) > spool_file.FILE_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(frame)
        size += len(frame.payload)
    return chunks


def _write_file(directory: str, name: str, data: bytes) -> None:
    path = os.path.join(directory, name)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write(directory: str, sender: str, frames: Sequence[HeldFrame]) -> Written:
    """Write ``frames`` (consecutive seqs, oldest first) as spool files; stops at the first failure.

    The files written before a failure are complete and stay: the collector takes them in,
    and the frames after them are lost (said by the caller).
    """
    nframes = files = nbytes = values = summaries = 0
    try:
        os.makedirs(directory, exist_ok=True)
        for chunk in _chunks(frames):
            data = spool_file.encode(sender, [frame.payload for frame in chunk])
            _write_file(directory, spool_file.file_name(sender, chunk[0].seq), data)
            nframes += len(chunk)
            files += 1
            nbytes += len(data)
            values += sum(frame.nvalues for frame in chunk)
            summaries += sum(frame.nsummaries for frame in chunk)
        if files:
            fd = os.open(directory, os.O_RDONLY)  # the renames are durable only with their directory
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        return Written(nframes, files, nbytes, values, summaries, str(exc))
    return Written(nframes, files, nbytes, values, summaries, None)


def read_by_run_collector(config: "TrainerConfig") -> bool:
    """True when the collector this trainer sends to is the run's own, on this host (its default
    socket), so it reads this spool: a custom, tcp or Ray address may reach a collector that does not."""
    return not config.ray and config.address == RunLayout(config.results_dir, config.run_id).data_address


class Spiller:
    """Past the buffer's bound while the collector does not acknowledge (a long outage), the sender's
    oldest frames go to the spool whole, instead of losing their values (``FrameBuffer.spill``).

    Bounded: this process's files waiting in the spool stay under :data:`SPILL_BUFFERS` times its
    buffer; past that (or when the spool cannot be written) the buffer strips values as before.
    """

    def __init__(self, config: "TrainerConfig", sender: str) -> None:
        self.directory = RunLayout(config.results_dir, config.run_id).spool_dir
        self.sender = sender
        self.limit = SPILL_BUFFERS * config.buffer_bytes
        self._prefix = os.path.join(self.directory, spool_file.file_prefix(sender))

    def waiting_bytes(self) -> int:
        """Bytes of this sender's files still in the spool (the collector deletes what it took in)."""
        return sum(size for path, size in spool_file.waiting(self.directory) if path.startswith(self._prefix))

    def __call__(self, frames: List[HeldFrame]) -> int:
        waiting = self.waiting_bytes()
        if waiting + sum(len(frame.payload) for frame in frames) > self.limit:
            _rlog.warn("spill-full", "statbus: this process's spool %s holds %.1f MiB, its bound (%d times "
                       "the trainer's buffer); the oldest values are dropped from now on", self.directory,
                       waiting / 2**20, SPILL_BUFFERS)
            return 0
        written = write(self.directory, self.sender, frames)
        if written.error is not None:
            _rlog.warn("spill-error", "statbus: the spool %s cannot be written (%s); the oldest values are "
                       "dropped from now on", self.directory, written.error)
        else:
            _rlog.warn("spill", "statbus: trainer buffer full (collector unreachable?): its oldest values go to "
                       "the spool %s, where the collector takes them in (%.1f MiB waiting, at most %.0f MiB)",
                       self.directory, (waiting + written.nbytes) / 2**20, self.limit / 2**20)
        return written.frames


def spool_unacked(client: "Client", linger: float) -> Optional[str]:
    """Spool what ``client`` (closed) did not get acknowledged; the one line to print, or None."""
    why = (f"the collector at {client.config.address} did not acknowledge them within {linger:g} s "
           "(it is not running, or cannot write its journal, e.g. a full disk: see `statbus status`)")
    frames = client.held_frames()
    if frames is None:
        values, summaries = client.undelivered()
        return (f"statbus: {values} values and {summaries} summaries recorded by this process are lost: {why}, "
                f"and the sender thread did not stop within {SPOOL_JOIN:g} s (starting a collector?) to hand "
                "them to the spool")
    dropped = client.counters["events_dropped"] + client.counters["values_dropped"]
    values = sum(frame.nvalues for frame in frames)
    summaries = sum(frame.nsummaries for frame in frames)
    media = sum(frame.nmedia for frame in frames)
    earlier = f"; {dropped} more were dropped earlier (the trainer's buffer was full)" if dropped else ""
    if client.media_dropped_at_exit:
        earlier += (f"; {client.media_dropped_at_exit} media values past the spool's bound for media "
                    f"({client.config.buffer_bytes / 2**20:.0f} MiB, the trainer's buffer_bytes) were dropped")
    spilled = client.spilled_unacked()
    if not frames and not spilled:
        if not dropped:
            return None
        return f"statbus: {dropped} values recorded by this process were dropped (the trainer's buffer was full)"
    what = f"{values} values, {summaries} summaries and {media} media values" if media else \
        f"{values} values and {summaries} summaries"
    directory = RunLayout(client.config.results_dir, client.config.run_id).spool_dir
    written = write(directory, client.sender, frames)
    if written.error is None:
        if not values and not summaries and not media and not spilled and not client.media_dropped_at_exit:
            return None  # markers alone (a goodbye): spooled for the collector, nothing to tell
        taker = ("the run's next collector takes them in" if read_by_run_collector(client.config)
                 else "a collector of this run folder on this host takes them in")
        also = f", beside {spilled} frames it spilled there while the collector was away" if spilled else ""
        return (f"statbus: {what} recorded by this process wait in the spool "
                f"{directory} ({written.files} files, {written.nbytes / 2**20:.1f} MiB{also}): {why}; "
                f"{taker}{earlier}")
    line = (f"statbus: {values - written.values} values and {summaries - written.summaries} summaries recorded by "
            f"this process are lost: {why}, and the spool {directory} could not be written ({written.error})")
    if written.files:
        line += f"; {written.values} values and {written.summaries} summaries wait there in {written.files} files"
    return line + earlier
