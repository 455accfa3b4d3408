"""The trainer process's background sender: batches, frames, delivery, its socket, fork and exit.

Training threads hand their values over through :mod:`.handoff`.  One daemon
thread per process owns the ZeroMQ context and its DEALER socket: it drains the
hand-off into frames (:mod:`.framing`), keeps unacknowledged frames in a bounded
buffer (:mod:`.resend_buffer`), re-sends them when the collector comes back, replaces its
socket when the collector refused it or a Ray trainer found the collector elsewhere, starts
the run's collector when none serves it (:mod:`.autostart`), and answers
``flush()``/``shutdown()`` tickets.  Delivery follows docs/internals.md "Wire".
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..wire import Refusal, WireError, bye_record, decode_ack_or_refusal, hello_record, media_drops_record
from .autostart import RESTART_AFTER, CollectorKeeper, Ensured, Outcome, ensure_collector, local_collector_working
from .clock import MONOTONIC, Clock
from .config import TrainerConfig
from .framing import BYE, FlushEvent, FrameBuilder, MediaEvent, Ticket, drain_events
from .handoff import Handoff
from .rate_log import RateLimitedLog
from .resend_buffer import FrameBuffer, HeldFrame
from .spool import SPOOL_JOIN, Spiller, read_by_run_collector

logger = logging.getLogger(__name__)

RESEND_AFTER = 1.0
"""Seconds without ack progress after which every unacked frame is sent again ..."""
RESEND_AFTER_MAX = 8.0
"""... doubling while acks stay away, so a slow collector is not buried under duplicates."""
PAUSE_TIMEOUT = 1.0
"""Longest a fork waits for the sender thread to stop (it answers a wake-up at once but for
a collector being started on demand)."""
REDISCOVER_AFTER = 5.0
"""Ray trainers: seconds without an ack while frames wait before asking Ray where the collector is now
(a collector started again on another node has another address and key) ..."""
REDISCOVER_AFTER_MAX = 60.0
"""... doubling while nothing changes."""
RECONNECT_AFTER = 1.0
"""Seconds after a refused handshake before the trainer tries again with a new socket ...
(libzmq never retries a connection the collector turned away at the CURVE handshake) ..."""
RECONNECT_AFTER_MAX = 30.0
"""... doubling while it keeps being refused, so an unauthorized trainer costs the collector little."""
SNDHWM = 32
"""Frames ZeroMQ may queue per connection; the rest wait in our own (bounded) buffer."""
MEDIA_SEND_WINDOW = 32 << 20
"""Raw media bytes sent and not yet acknowledged past which no further media frame is handed to
ZeroMQ (but the oldest unacknowledged one): ZeroMQ copies what it queues, and 32 frames of up to
72 MiB queued for a stopped collector would double the media bound's memory."""
EXIT_WAIT_MAX = 60.0
"""Longest an exiting client waits for acks while its collector shows life (see :meth:`Client.close`)."""
STOP_TIMEOUT = 5.0
"""Longest ``close`` waits for the sender thread to end once the wait for acks is over: it answers
at once, but on a host with a hundred busy processes a thread waits its turn for a core."""
_rlog = RateLimitedLog(logger)

_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def _connect(sock: zmq.Socket, address: str, route: Any = None) -> None:
    if route is not None:
        route.connect(sock)  # found through Ray, CURVE keys in memory (statbus.pipeline.trainer.ray_discovery)
    elif address.startswith("tcp://"):
        # CURVE keys from STATBUS_CLIENT_KEY / STATBUS_SERVER_KEY; imported only here,
        # so that an ipc trainer never loads the key-handling code.
        from ..security.curve import client_security_from_env, secure_connect

        secure_connect(sock, address, client_security_from_env())
    else:
        sock.connect(address)


def _wait_until_gone(native_id: Optional[int], timeout: float = 0.05) -> None:
    """Until the OS thread ``native_id`` of this process has exited (Linux; elsewhere at once).

    ``Thread.join()`` returns as the thread's Python state is cleared, a moment before
    the OS thread ends; a fork in that moment would still count it.
    """
    if native_id is None:
        return
    path = f"/proc/self/task/{native_id}"
    deadline = time.monotonic() + timeout
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.0002)


def _make_identity() -> str:
    host = socket.gethostname()[:64] or "localhost"
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Client(Handoff):
    """The per-process sender.  Only the sender thread touches ``_sock``."""

    def __init__(self, config: TrainerConfig, clock: Clock = MONOTONIC) -> None:
        self.config = config
        self.clock = clock
        """What every timing decision of this client reads (:mod:`.clock`); training threads never do."""
        self.sender = _make_identity()
        super().__init__({
            "sender": self.sender, "values_recorded": 0, "frames_sent": 0, "frames_resent": 0,
            "frames_acked": 0, "values_dropped": 0, "frames_dropped": 0, "errors": 0,
            "buffer_bytes": 0, "buffer_bytes_max": 0, "buffer_frames": 0, "acked_seq": 0,
            "last_seq": 0, "lowest_sendable": 1, "events_dropped": 0, "reconnects": 0, "refusals": 0,
            "collector_starts": 0, "collector_start_failures": 0, "frames_spilled": 0,
            "media_recorded": 0, "media_recorded_bytes": 0, "media_dropped": 0, "media_dropped_bytes": 0,
        })
        self._media_drops_told = 0  # media_dropped as the collector was last told (a MEDIA_DROPS marker)
        self.media_dropped_at_exit = 0
        """Media values :meth:`held_frames` dropped past the spool's bound (said in the exit line)."""
        self._media_lost_bytes = 0  # the buffer's media_lost_bytes already in the counters
        self._media_dropping = 0
        """Media values dropped since the bound was last reached (0: none; see :meth:`add_media`)."""
        self._stopping = False
        # sender-thread state
        # Past the buffer, frames go to the run's spool only where the run's collector reads it: the
        # frames after them wait for it, and a collector that never took them would refuse those forever.
        spill = self._spill if read_by_run_collector(config) else None
        self._buffer = FrameBuffer(self.sender, config.buffer_bytes, spill=spill, now=clock.now)
        self._spiller: Optional[Spiller] = None
        self._sent_upto = 0       # highest seq handed to zmq in this round
        self._max_sent = 0
        self._acked_at = self._rewound_at = clock.now()
        self._resend_after = RESEND_AFTER
        self._hello_sent = False
        self._life_at = 0.0
        """When the collector last acked, or repeated an ack: a sign of life (see :meth:`close`)."""
        self.exit_wait_limit = 0.0
        """What ended :meth:`close`'s wait for acks: its linger, or :data:`EXIT_WAIT_MAX`."""
        self._keeper = CollectorKeeper(config.run_id)
        self._reconnect_at: Optional[float] = None
        self._reconnect_after = RECONNECT_AFTER
        self._refused = False     # the collector refused this connection's frames: send nothing more on it
        self._refused_after = RECONNECT_AFTER
        self._route: Any = None
        """Ray trainers: where discovery found the collector (kept across a fork's pause)."""
        self._rediscover_at = 0.0
        self._rediscover_after = REDISCOVER_AFTER
        self._tickets: List[Ticket] = []
        # Fork: the sender and its zmq context stop before, and a new sender starts after,
        # in the parent (see pause()); these say where that stands.
        self._pause_lock = threading.Lock()
        self._pausing = False
        self._paused = False
        self._thread = threading.Thread(target=self._run, name="statbus-sender", daemon=True)
        self._thread.start()

    def add_media(self, event: MediaEvent) -> bool:
        """Queue one media value; False when it is dropped instead: the media queued and not yet
        acknowledged would pass ``config.media_bytes``, or the sender is not running.  Never waits.

        A stretch of drops (an episode: from the first drop until a media value goes through
        again) is logged once as it starts, and once as it ends.
        """
        nbytes = event.nbytes
        counters = self.counters
        with self.lock:
            # The buffer's count is the sender thread's, read without its lock: a value framed
            # meanwhile is counted in both (media_queued drops only after the buffer holds it).
            held = self.media_queued + self._buffer.media_bytes
            accepted = self._pipe_open and held + nbytes <= self.config.media_bytes
            if accepted:
                self._seal_locked()
                self.queue.append(event)
                self._queued += 1
                self.media_queued += nbytes
                counters["media_recorded"] += 1
                counters["media_recorded_bytes"] += nbytes
            else:
                counters["media_dropped"] += 1
                counters["media_dropped_bytes"] += nbytes
            dropping, self._media_dropping = self._media_dropping, 0 if accepted else self._media_dropping + 1
        if accepted:
            if dropping:
                logger.warning("statbus: media goes through again; %d media values were dropped meanwhile "
                               "(client_counters()['media_dropped'] counts them all)", dropping)
            self.wake()
        elif not dropping:
            why = ("the sender is not running" if not self._pipe_open else
                   f"{held / 2**20:.1f} MiB of media wait for the collector's acknowledgement, and this "
                   f"{nbytes / 2**20:.1f} MiB would pass the bound of {self.config.media_bytes / 2**20:.0f} MiB "
                   "(TrainerConfig.media_bytes, STATBUS_MEDIA_BYTES): is the collector running?")
            logger.warning("statbus: media value %r of %r dropped: %s. New media values are dropped, and "
                           "counted in client_counters()['media_dropped'], until the older ones are acknowledged; "
                           "training goes on", event.record.tag, event.record.category, why)
        return accepted

    def snapshot(self) -> Dict[str, Any]:
        snap = super().snapshot()
        snap["media_held_bytes"] = self.media_queued + self._buffer.media_bytes  # what the media bound bounds
        return snap

    def flush(self, timeout: float) -> bool:
        ticket = self._flush_ticket(bye=False)
        if ticket is None:
            return self._nothing_pending()
        self.clock.wait(ticket.event, timeout)
        return ticket.ok

    def _flush_ticket(self, bye: bool) -> Optional[Ticket]:
        """Queue a flush (after a BYE) and wake the sender; None when the sender is not running."""
        if not self._thread.is_alive():
            return None
        ticket = Ticket()
        if bye:
            self.add_event(BYE, wake=False)
        self.add_event(FlushEvent(ticket), wake=True)
        return ticket

    def _nothing_pending(self) -> bool:
        return not self.queue and not self.current and not self._buffer

    def close(self, linger: float) -> bool:
        """Send what is pending plus BYE, wait for acks while the collector shows life, stop the thread.

        The wait ends once everything is acked; or after ``linger`` seconds in which the
        collector showed no life — no ack, no repeated ack (a busy collector repeats its
        acks while frames wait: :mod:`..collector.beacons`), and, for the run's local
        collector, no start of it under way and no answer from it that it takes frames in
        (:func:`.autostart.local_collector_working`); or after :data:`EXIT_WAIT_MAX` in
        all.  A busy collector is waited for; a dead, stopped or stalled one is not.
        ``linger`` 0: no wait beyond what is acked already.
        """
        ticket = self._flush_ticket(bye=True)
        ok = self._nothing_pending() if ticket is None else self._wait_while_alive(ticket, linger)
        self._stopping = True
        self.wake()
        self._thread.join(timeout=STOP_TIMEOUT)
        if self._thread.is_alive():
            _rlog.warn("join", "statbus: sender thread did not stop in time; leaving it (daemon)")
        return ok

    def _wait_while_alive(self, ticket: Ticket, linger: float) -> bool:
        clock = self.clock
        started = clock.now()
        while True:
            now = clock.now()
            life = max(started, self._life_at)
            left = linger - (now - life)
            capped = now - started + left > EXIT_WAIT_MAX
            if capped:
                left = EXIT_WAIT_MAX - (now - started)
            self.exit_wait_limit = EXIT_WAIT_MAX if capped else linger
            if left <= 0 and linger > 0 and not capped and local_collector_working(self.config):
                # Asked here, not by the sender thread: on a host with a hundred busy
                # processes that thread may wait seconds for a core, this one as long.
                self._life_at = clock.now()
                continue
            if left <= 0 or clock.wait(ticket.event, min(left, 0.25)):
                return ticket.ok

    def pause(self, timeout: float = PAUSE_TIMEOUT) -> bool:
        """Stop the sender thread and its zmq context, keeping every frame and event (before a fork).

        A process that forks while other threads run may hand the child a lock one of
        them held, and Python >= 3.12 warns about it (DeprecationWarning) counting the
        process's OS threads — zmq's I/O thread among them.  So none of ours runs at
        the fork: :meth:`resume` starts a new sender, which re-sends what is unacked.
        True once stopped; a sender busy for longer (starting a collector on demand) is
        left running, and stops and resumes by itself once it is done.
        """
        if threading.current_thread() is self._thread:
            return False  # a fork from the sender itself (none today): nothing to stop
        with self._pause_lock:
            if self._stopping or self._paused or not self._thread.is_alive():
                return self._paused
            self._pausing = True
        thread = self._thread
        self.wake()
        thread.join(timeout)
        if thread.is_alive():
            return False
        _wait_until_gone(thread.native_id)
        return True

    def resume(self) -> None:
        """After :meth:`pause`: a new sender thread goes on where the last one stopped."""
        with self._pause_lock:
            self._pausing = False
            if not self._paused:
                return  # not paused, or its sender has not stopped yet (it will go on by itself)
            self._paused = False
        self._start_sender()

    def _start_sender(self) -> None:
        self._rewind(self.clock.now())  # what the old socket had queued is gone with it
        self._thread = threading.Thread(target=self._run, name="statbus-sender", daemon=True)
        self._thread.start()

    def _left_for_pause(self) -> bool:
        """The sender stopped for a fork: True when the thread must just end (no stop, no cleanup)."""
        with self._pause_lock:
            if self._stopping:
                return False
            if self._pausing:
                self._paused = True
                return True
        self._start_sender()  # resumed before this thread was gone: go on in a new one
        return True

    def undelivered(self) -> Tuple[int, int]:
        """``(values, summaries)`` recorded by this client and never acknowledged (sender stopped)."""
        buffered, pending = self._buffer.unacked(), self.pending()
        return buffered[0] + pending[0], buffered[1] + pending[1]

    def held_frames(self) -> Optional[List[HeldFrame]]:
        """After :meth:`close`: what the collector did not acknowledge, what was still queued framed
        too (so it can go to the spool); None while the sender thread still runs."""
        self._thread.join(SPOOL_JOIN)
        if self._thread.is_alive():
            return None
        self._drain()
        self._enforce_buffer()  # the spool is bounded as the buffer is
        # ... and its media by the buffer's bound too (not the media bound: a process's spool at
        # exit stays within one buffer of values and one of media): the newest past it are dropped.
        stripped, nbytes = self._buffer.strip_media(self.config.buffer_bytes)
        if stripped:
            with self.lock:
                self.counters["media_dropped"] += stripped
                self.counters["media_dropped_bytes"] += nbytes
            self.media_dropped_at_exit = stripped
        return self._buffer.held()

    def spilled_unacked(self) -> int:
        """Frames this client spilled to the spool while the collector was away, not acknowledged since."""
        return max(0, self._buffer.spilled_upto - self._buffer.acked)

    def forget_in_child(self) -> None:
        """After fork, in the child: drop this (the parent's) client without touching zmq."""
        super().forget_in_child()
        self._buffer.frames.clear()

    # --- the sender thread --------------------------------------------------

    def _run(self) -> None:
        ctx = sock = mon = None
        failed = False
        try:
            ctx = zmq.Context()
            if self.config.ray and self._route is None:
                self._route = self._await_route()
                if self._route is None:
                    return  # stopped (or paused for a fork) before the collector was found
            sock, mon = self._open(ctx)
            # The loop returns True when the collector refused the handshake and the
            # backoff has passed: a new socket is the only way to be heard again.
            while self._loop(sock, mon):
                self._close(sock, mon)
                sock = mon = None
                self.counters["reconnects"] += 1
                self._refused = False
                sock, mon = self._open(ctx)
                self._rewind(self.clock.now())
        except Exception as exc:  # noqa: BLE001 — must never escape into the process
            failed = True
            self.counters["errors"] += 1
            logger.error("statbus: sender thread failed: %r; stats of this process are dropped from now on", exc)
        finally:
            if not failed and self._pausing:
                if sock is not None and mon is not None:
                    self._close(sock, mon)
                if ctx is not None:
                    ctx.term()
                sock = mon = ctx = None
                if self._left_for_pause():
                    return
            for ticket in self._tickets:
                ticket.event.set()
            self._tickets.clear()
            self.close_pipe()
            if sock is not None and mon is not None:
                self._close(sock, mon)
            if ctx is not None:
                ctx.term()
            # Flushers still waiting on events queued after the stop must not wait forever.
            self._release_late_tickets()

    def _release_late_tickets(self) -> None:
        for event in list(self.queue):
            if type(event) is FlushEvent:
                event.ticket.event.set()

    def _loop(self, sock: zmq.Socket, mon: zmq.Socket) -> bool:
        """Serve until stopped (False) or until ``sock`` must be replaced (True)."""
        poller = zmq.Poller()
        poller.register(mon, zmq.POLLIN)
        poller.register(self.wake_fd, zmq.POLLIN)
        clock = self.clock
        interval = float(self.config.batch_interval)
        next_batch = clock.now() + interval
        while not self._stopping and not self._pausing:
            try:
                now = clock.now()
                unsent = self._sent_upto < self._buffer.next_seq - 1 and not self._refused
                poller.register(sock, zmq.POLLIN | zmq.POLLOUT if unsent else zmq.POLLIN)
                wake_at = next_batch if self._reconnect_at is None else min(next_batch, self._reconnect_at)
                events = clock.poll(poller, wake_at - now)
                woken = False
                if self.wake_fd in events:
                    self.consume_wake()
                    woken = True
                now = clock.now()
                if events.get(sock, 0) & zmq.POLLIN:
                    self._read_acks(sock, now)
                if mon in events:
                    self._read_monitor(mon, now)
                if woken or now >= next_batch:
                    self._drain()
                    next_batch = now + interval
                self._enforce_buffer()
                self._send(sock, now)
                self._check_stall(now)
                self._settle_tickets()
                if self._reconnect_at is not None and now >= self._reconnect_at:
                    self._reconnect_at = None
                    return True
            except Exception as exc:  # noqa: BLE001 — count, log, keep going
                self.counters["errors"] += 1
                _rlog.warn("loop", "statbus: sender error (carrying on): %r", exc)
                time.sleep(0.05)  # real time: a repeating error must not spin, whatever the clock
        return False

    def _read_acks(self, sock: zmq.Socket, now: float) -> None:
        while True:
            try:
                data = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                acked, refusal = decode_ack_or_refusal(data)
            except WireError as exc:
                self.counters["errors"] += 1
                _rlog.warn("ack", "statbus: bad ack from the collector: %s", exc)
                continue
            if refusal is not None:
                self._on_refused(refusal, now)
                continue
            self._life_at = now
            released = self._buffer.ack(acked)
            if released:
                self._acked_at = now
                self._resend_after = RESEND_AFTER
                self._rediscover_after = REDISCOVER_AFTER
                self._refused_after = RECONNECT_AFTER
                self._keeper.acked()
                self.counters["frames_acked"] += released
                self._update_buffer_counters()

    def _rewind(self, now: float) -> None:
        self._sent_upto = self._buffer.acked
        self._rewound_at = now

    def _drain(self) -> None:
        events = self.take_all()
        for item in drain_events(events, self._bye_record):
            if isinstance(item, FrameBuilder):
                self._close_frame(item)
            else:  # a flush ticket: done once every frame closed so far is acked
                item.target = self._buffer.next_seq - 1
                self._tickets.append(item)

    def _close_frame(self, builder: FrameBuilder) -> None:
        self.counters["values_recorded"] += builder.nvalues
        if not self._hello_sent:
            builder.hello = hello_record(self._hello_info())
            self._hello_sent = True
        dropped = self.counters["media_dropped"]
        if dropped != self._media_drops_told:
            # The collector learns of media drops with the next frame (for `statbus status`).
            builder.markers.insert(0, media_drops_record(dropped, self.counters["media_dropped_bytes"]))
            self._media_drops_told = dropped
        media = builder.media.nbytes if builder.media is not None else 0
        frame = self._buffer.add(builder.records(), builder.nvalues, media)
        if media:
            with self.lock:
                self.media_queued -= media
        self.counters["last_seq"] = frame.seq

    def _hello_info(self) -> Dict[str, Any]:
        argv0 = sys.argv[0] if sys.argv else ""
        return {"pid": os.getpid(), "host": socket.gethostname()[:255], "run_id": self.config.run_id,
                "argv0": str(argv0)[:1024], "sender": self.sender}

    def _bye_record(self) -> list:
        return bye_record({"pid": os.getpid(), "values_dropped": self._buffer.values_dropped})

    def _enforce_buffer(self) -> None:
        media_lost = self._buffer.media_lost
        dropped, lost = self._buffer.enforce()
        if self._buffer.media_lost != media_lost:
            with self.lock:
                self.counters["media_dropped"] += self._buffer.media_lost - media_lost
                self.counters["media_dropped_bytes"] = (self.counters["media_dropped_bytes"]
                                                        + self._buffer.media_lost_bytes - self._media_lost_bytes)
            self._media_lost_bytes = self._buffer.media_lost_bytes
        if dropped:
            _rlog.warn("full", "statbus: trainer buffer full (%d bytes, collector unreachable?); "
                       "%d values dropped so far", self._buffer.limit, self._buffer.values_dropped)
        if lost:
            _rlog.warn("lost", "statbus: markers and properties alone overflow the buffer; "
                       "%d whole frames dropped so far", self._buffer.frames_lost)
        self._update_buffer_counters()

    def _spill(self, frames: List[HeldFrame]) -> int:
        """The buffer is full: its oldest frames to the run's spool (:class:`.spool.Spiller`); how many went."""
        if self._spiller is None:
            self._spiller = Spiller(self.config, self.sender)
        spilled = self._spiller(frames)
        self.counters["frames_spilled"] += spilled
        return spilled

    def _update_buffer_counters(self) -> None:
        c, buffer = self.counters, self._buffer
        c["buffer_bytes"] = buffer.nbytes
        c["buffer_frames"] = len(buffer)
        c["lowest_sendable"] = buffer.lowest_sendable
        c["acked_seq"] = buffer.acked
        c["values_dropped"] = buffer.values_dropped
        c["frames_dropped"] = buffer.frames_lost
        c["buffer_bytes_max"] = max(c["buffer_bytes_max"], buffer.nbytes)

    def _send(self, sock: zmq.Socket, now: float) -> None:
        frames = self._buffer.frames
        if not frames or self._refused:
            return
        first = frames[0].seq
        index = max(self._sent_upto + 1, first) - first
        while index < len(frames):
            frame = frames[index]
            if frame.media and index and self._media_in_flight(index) + frame.media > MEDIA_SEND_WINDOW:
                return  # it waits for acks of the media before it (and what follows it waits too: order)
            try:
                # Copied, not zero-copy: pyzmq's zero-copy sends of big frames need its
                # garbage-collector thread, which it stops at exit before our last flush
                # ("zmq gc socket requested during shutdown"); a memcpy of a frame is cheap.
                sock.send(self._buffer.payload(frame), zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return  # no collector connected, or its queue is full: the frame waits here
            if frame.seq > self._max_sent:
                self._max_sent = frame.seq
                self.counters["frames_sent"] += 1
            else:
                self.counters["frames_resent"] += 1
            if frame.first_sent is None:
                frame.first_sent = now
            self._sent_upto = frame.seq
            index += 1

    def _media_in_flight(self, index: int) -> int:
        """Raw media bytes of the frames before ``index`` handed to ZeroMQ in this round, not acknowledged."""
        return sum(frame.media for frame in itertools.islice(self._buffer.frames, index))

    def _check_stall(self, now: float) -> None:
        if not self._buffer.frames:
            return
        oldest = self._buffer.frames[0]
        if oldest.first_sent is not None and self._sent_upto >= oldest.seq:
            if now - max(self._acked_at, self._rewound_at, oldest.first_sent) >= self._resend_after:
                self._rewind(now)
                self._resend_after = min(self._resend_after * 2, RESEND_AFTER_MAX)
        if self._route is not None and now >= self._rediscover_at and now - max(self._acked_at, oldest.created) >= REDISCOVER_AFTER:
            self._rediscover(now)
        if now - max(self._acked_at, oldest.created) >= RESTART_AFTER and self._keeper.due(now):
            try:
                ensured = ensure_collector(self.config)
            except Exception as exc:  # noqa: BLE001 — looking for a collector must not stop the sender
                self.counters["errors"] += 1
                ensured = Ensured(Outcome.FAILED, error=repr(exc))
            self._keeper.record(ensured, self.clock.now())
            self.counters["collector_starts"] = self._keeper.starts
            self.counters["collector_start_failures"] = self._keeper.failures

    def _settle_tickets(self) -> None:
        if not self._tickets:
            return
        waiting = []
        for ticket in self._tickets:
            if ticket.target is not None and ticket.target <= self._buffer.acked:
                ticket.ok = True
                ticket.event.set()
            else:
                waiting.append(ticket)
        self._tickets = waiting

    # --- its socket: opened, watched, replaced ---------------------------------

    def _open(self, ctx: zmq.Context) -> Tuple[zmq.Socket, zmq.Socket]:
        sock = ctx.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.SNDHWM, SNDHWM)
            sock.setsockopt(zmq.RCVHWM, 10_000)
            mon = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | _HANDSHAKE_FAILED)
        except BaseException:
            sock.close(linger=0)
            raise
        try:
            _connect(sock, self.config.address, self._route)
        except BaseException:
            self._close(sock, mon)
            raise
        return sock, mon

    @staticmethod
    def _close(sock: zmq.Socket, mon: zmq.Socket) -> None:
        try:
            sock.disable_monitor()
        except zmq.ZMQError:
            pass
        mon.close(linger=0)
        sock.close(linger=0)

    def _await_route(self) -> Any:
        """Ask Ray for the run's collector until it answers (None: stopped or paused first).

        Meanwhile what training records goes into the bounded frame buffer, as while
        a collector is down; only this thread waits.
        """
        from .ray_discovery import discover  # only Ray trainers import Ray

        clock = self.clock
        poller = zmq.Poller()
        poller.register(self.wake_fd, zmq.POLLIN)
        delay = 0.5
        while not self._stopping and not self._pausing:
            route = discover(self.config)
            if route is not None:
                return route
            deadline = clock.now() + delay
            while not self._stopping and not self._pausing and clock.now() < deadline:
                if clock.poll(poller, deadline - clock.now()):
                    self.consume_wake()
                self._drain()
                self._enforce_buffer()
            delay = min(delay * 2, 5.0)
        return None

    def _rediscover(self, now: float) -> None:
        """Ray: nothing acked for a while — if the collector is elsewhere now, connect there."""
        from .ray_discovery import discover

        self._rediscover_at = now + self._rediscover_after
        self._rediscover_after = min(self._rediscover_after * 2, REDISCOVER_AFTER_MAX)
        route = discover(self.config)
        if route is not None and route[:2] != self._route[:2]:  # another address or server key
            logger.warning("statbus: run %s's collector moved to %s; re-sending what it has not acknowledged",
                           self.config.run_id, route.address)
            self._route = route
            self._reconnect_at = now  # the loop replaces the socket

    def _on_refused(self, refusal: Refusal, now: float) -> None:
        """Stop sending on this connection; try a new one after a growing pause, and say why once."""
        self.counters["refusals"] += 1
        if self._refused:
            return  # frames already on the wire come back refused too
        self._refused = True
        delay = self._refused_after
        self._refused_after = min(self._refused_after * 2, RECONNECT_AFTER_MAX)
        if self._reconnect_at is None:
            self._reconnect_at = now + delay
        if refusal is Refusal.REVOKED:
            why = ("this trainer's key is no longer on its allow-list (revoked); "
                   "`statbus keys authorize` on the collector's host lets it in again")
        else:
            why = f"this trainer's sender id {self.sender} is bound to another trainer's key"
        _rlog.warn("refused", "statbus: the collector at %s refuses this trainer's stats: %s. Nothing more is "
                   "sent on this connection; trying a new one in %.0f s (unacknowledged stats wait in the buffer, "
                   "up to its limit)", self.config.address, why, delay)

    def _read_monitor(self, mon: zmq.Socket, now: float) -> None:
        while True:
            try:
                message = recv_monitor_message(mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            event = message.get("event", 0)
            if event == zmq.EVENT_CONNECTED:
                # A (new) collector: whatever went to the old connection may be lost.
                self._rewind(now)
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._reconnect_after = RECONNECT_AFTER
            elif event & _HANDSHAKE_FAILED:
                self.counters["errors"] += 1
                from ..security.curve import handshake_failure_hint

                hint = handshake_failure_hint(event, message.get("value", 0), self.config.address)
                _rlog.warn("handshake", "statbus: %s (trying again in %.0f s)",
                           hint or f"handshake failed (event {event:#x})", self._reconnect_after)
                if self._reconnect_at is None:
                    # e.g. a key authorized after the trainer started: try again, ever more slowly.
                    self._reconnect_at = now + self._reconnect_after
                    self._reconnect_after = min(self._reconnect_after * 2, RECONNECT_AFTER_MAX)
