"""The trainer process's background sender: batches, frames, delivery, fork and exit.

Training threads append a value to the current per-(category, key) entry without a
lock (a dict get and a list append, each atomic under the GIL; see
:meth:`Client.settle_late` for the one race and how it is settled); any other call
first *seals* the current entries into the event queue under a short lock, then
queues itself, so the order of calls is kept.
Rarely, they wake the sender through a pipe.  One daemon thread per process owns
the ZeroMQ context and its DEALER socket: it drains the queue into frames, keeps
unacknowledged frames in a bounded buffer, re-sends them when the collector comes
back, and answers ``flush()``/``shutdown()`` tickets.  Delivery follows
docs/internals.md "Wire".

The queue's events are described in :mod:`.client_frames`.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any, Deque, Dict, List, Optional, Tuple

import zmq
from zmq.utils.monitor import recv_monitor_message

from .client_frames import BATCH_VALUES, EV_BYE, EV_FLUSH, EV_STATS, FrameBuffer, FrameBuilder, Ticket, drain_events
from .trainer_config import TrainerConfig
from .wire import WireError, bye_record, decode_ack, hello_record

logger = logging.getLogger(__name__)

RESEND_AFTER = 1.0
"""Seconds without ack progress after which every unacked frame is sent again ..."""
RESEND_AFTER_MAX = 8.0
"""... doubling while acks stay away, so a slow collector is not buried under duplicates."""
ENSURE_COLLECTOR_AFTER = 1.0
RECONNECT_AFTER = 1.0
"""Seconds after a refused handshake before the trainer tries again with a new socket ...
(libzmq never retries a connection the collector turned away at the CURVE handshake) ..."""
RECONNECT_AFTER_MAX = 30.0
"""... doubling while it keeps being refused, so an unauthorized trainer costs the collector little."""
SNDHWM = 32
"""Frames ZeroMQ may queue per connection; the rest wait in our own (bounded) buffer."""
MAX_PENDING_EVENTS = 2 * BATCH_VALUES
"""Events queued with no live sender past which they are dropped (a dead sender must not eat memory)."""
ENTRY_VALUES = 1024
"""Values of one key in the current entries past which they are sealed (a slow path every 1024 adds)."""
MAX_CURRENT_ENTRIES = 128
"""Keys in the current entries past which they are sealed: the current values stay ≤ 128 × 1024."""
MAX_PENDING_VALUES = 16 * BATCH_VALUES
"""Sealed values not yet taken by the sender past which new ones are dropped (a slow sender must
not eat memory either; markers and properties are kept)."""
TAKEN = object()
"""Key under which a sealed dict holds ``{ident: length}`` of the copy the sender took (see Client.settle_late)."""
_CLAIMS = object()


def _take(event: tuple) -> tuple:
    """The sender's copy of a sealed dict's event; the dict is marked with the lengths it
    was copied at (the client's lock held).  Lengths, not the copies: the sender goes
    on to merge into its copies."""
    sealed = event[1]
    taken = {ident: entry[:] for ident, entry in sealed.items()}
    sealed[TAKEN] = {ident: len(entry) for ident, entry in taken.items()}
    return (EV_STATS, taken)


LOG_EVERY = 10.0
"""Seconds between two log lines of the same kind of trouble."""


class RateLimitedLog:
    """At most one line per kind per ``LOG_EVERY`` seconds; the lines it swallowed are counted."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._last: Dict[str, float] = {}
        self._suppressed: Dict[str, int] = collections.Counter()

    def warn(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < LOG_EVERY:
            self._suppressed[kind] += 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._log.warning(message, *args)


_rlog = RateLimitedLog(logger)


def _ensure_collector(config: TrainerConfig) -> None:
    """HOOK for the on-demand collector (issue 5): called once per client by the
    sender thread when frames wait and nothing has acked them for ~1 s."""
    if not config.autostart:
        return
    try:
        from .autostart import ensure_collector
    except ImportError as exc:
        logger.info("statbus: no on-demand collector available (%s)", exc)
        return
    ensure_collector(config)


_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def _connect(sock: zmq.Socket, address: str) -> None:
    if address.startswith("tcp://"):
        # CURVE keys from STATBUS_CLIENT_KEY / STATBUS_SERVER_KEY; imported only here,
        # so that an ipc trainer never loads the key-handling code.
        from .security import client_security_from_env, secure_connect

        secure_connect(sock, address, client_security_from_env())
    else:
        sock.connect(address)


def _make_identity() -> str:
    host = socket.gethostname()[:64] or "localhost"
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Client:
    """The per-process sender.  Only the sender thread touches ``_sock``."""

    def __init__(self, config: TrainerConfig) -> None:
        self.config = config
        self.sender = _make_identity()
        self.queue: Deque[tuple] = collections.deque()
        self.lock = threading.Lock()
        """Guards replacing ``current``, ``queue`` and ``_queued``, and the sender's take.
        ``add_stat``'s append to an existing entry does not take it."""
        self.current: Dict[Tuple[str, str], list] = {}
        """The values added since the last seal: ``(category, key) → [aggregation, v1, v2, ...]``."""
        self._queued = 0          # sealed values + other events in ``queue``
        self.counters: Dict[str, Any] = {
            "sender": self.sender, "values_recorded": 0, "frames_sent": 0, "frames_resent": 0,
            "frames_acked": 0, "values_dropped": 0, "frames_dropped": 0, "errors": 0,
            "buffer_bytes": 0, "buffer_bytes_max": 0, "buffer_frames": 0, "acked_seq": 0,
            "last_seq": 0, "floor": 1, "events_dropped": 0, "reconnects": 0,
        }
        self._wake_lock = threading.Lock()
        self._wake_flag = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._wfd, False)
        os.set_blocking(self._rfd, False)
        self._pipe_open = True
        self._stopping = False
        # sender-thread state
        self._buffer = FrameBuffer(self.sender, config.buffer_bytes)
        self._sent_upto = 0       # highest seq handed to zmq in this round
        self._max_sent = 0
        self._acked_at = self._rewound_at = time.monotonic()
        self._resend_after = RESEND_AFTER
        self._hello_sent = False
        self._ensured = False
        self._reconnect_at: Optional[float] = None
        self._reconnect_after = RECONNECT_AFTER
        self._tickets: List[Ticket] = []
        self._thread = threading.Thread(target=self._run, name="statbus-sender", daemon=True)
        self._thread.start()

    # --- called from training threads ---------------------------------------

    def open_entry_locked(self, ident: Tuple[str, str], value: float, aggregation: Any) -> bool:
        """``add_stat``'s slow path, with ``self.lock`` held by the caller: open an entry, or
        seal the current ones first when the key's entry is full or its aggregation changed
        (so values stay in order).  True: call :meth:`wake` once the lock is released."""
        wake = False
        values = self.current.get(ident)
        if values is None:
            if len(self.current) >= MAX_CURRENT_ENTRIES:
                wake = self._seal_locked()
        elif values[0] is aggregation and len(values) <= ENTRY_VALUES:
            values.append(value)  # another thread sealed or opened it meanwhile
            return False
        else:
            wake = self._seal_locked()
        self.current[ident] = [aggregation, value]
        return wake

    def settle_late(self, sealed: Dict[Any, Any], ident: Tuple[str, str]) -> None:
        """Called by an ``add_stat`` that appended to an entry of ``sealed`` after it stopped being current.

        Its value is in the entry's list; the sender has it if it copied the list
        after the append.  Under the lock: no copy yet means the sender will copy
        it with the value.  Otherwise the list's values past the copy were missed:
        each late caller re-adds one of them (whichever is next unclaimed, so
        every missed value is re-added exactly once, whoever appended it).
        """
        with self.lock:
            taken = sealed.get(TAKEN)
            if taken is None:
                return
            entry = sealed[ident]
            claims = sealed.setdefault(_CLAIMS, {})
            claimed = claims.get(ident, 0)
            index = taken[ident] + claimed
            if index >= len(entry):
                return  # every late value of this entry is claimed already
            claims[ident] = claimed + 1
            wake = self.open_entry_locked(ident, entry[index], entry[0])
        if wake:
            self.wake()

    def add_event(self, event: tuple, wake: bool) -> None:
        """Queue a non-value event after the values added before it (sealed first)."""
        with self.lock:
            self._seal_locked()
            self.queue.append(event)
            self._queued += 1
            queued = len(self.queue)
        if wake or queued >= BATCH_VALUES:
            self.wake()

    def _seal_locked(self) -> bool:
        """Move the current entries into the queue as one event; True: wake the sender."""
        current = self.current
        if not current:
            return False
        self.current = {}
        nvalues = sum(map(len, current.values())) - len(current)
        if self._queued >= MAX_PENDING_VALUES or not self._pipe_open:
            self.counters["events_dropped"] += nvalues
            _rlog.warn("behind", "statbus: sender is not keeping up (or not running); %d values dropped so far",
                       self.counters["events_dropped"])
            return True
        self.queue.append((EV_STATS, current))
        self._queued += nvalues
        return self._queued >= BATCH_VALUES

    def wake(self) -> None:
        """Make the sender drain the queue now (a few µs; never blocks)."""
        # _pipe_open turns False as the sender thread ends; reading it takes no
        # lock, unlike Thread.is_alive(), which every add_stat paid once the
        # queue was long (the bench found it at 19% of a busy trainer's time).
        if len(self.queue) > MAX_PENDING_EVENTS and not self._pipe_open:
            self._discard_queue()
        if self._wake_flag:
            return
        with self._wake_lock:
            if not self._pipe_open:
                return
            self._wake_flag = True
            try:
                os.write(self._wfd, b"!")
            except (BlockingIOError, InterruptedError):
                pass  # the pipe is full, so the sender is awake already

    def _discard_queue(self) -> None:
        with self.lock:
            dropped = self._queued
            self.queue.clear()
            self._queued = 0
        self.counters["events_dropped"] += dropped
        _rlog.warn("dead", "statbus: sender thread is not running; dropped %d queued events", dropped)

    def flush(self, timeout: float, bye: bool = False) -> bool:
        if not self._thread.is_alive():
            return not self.queue and not self.current and not self._buffer
        ticket = Ticket()
        if bye:
            self.add_event((EV_BYE,), wake=False)
        self.add_event((EV_FLUSH, ticket), wake=True)
        ticket.event.wait(max(0.0, timeout))
        return ticket.ok

    def close(self, timeout: float) -> bool:
        """Send what is pending plus BYE, wait ≤ ``timeout`` for acks, stop the thread."""
        ok = self.flush(timeout, bye=True)
        self._stopping = True
        self.wake()
        # Short: the loop wakes at once; only a hook stuck in starting a collector takes longer.
        self._thread.join(timeout=1.0)
        if self._thread.is_alive():
            _rlog.warn("join", "statbus: sender thread did not stop in time; leaving it (daemon)")
        return ok

    def snapshot(self) -> Dict[str, Any]:
        with self.lock:
            current = sum(map(len, self.current.values())) - len(self.current)
            snap = dict(self.counters)
            snap["values_queued"] = self._queued + current
        return snap

    def forget_in_child(self) -> None:
        """After fork, in the child: drop this (the parent's) client without touching zmq."""
        # No lock: another thread of the parent may have held it at the fork.
        self._pipe_open = False
        self.current = {}
        self.queue.clear()           # the parent sends these, not the child
        self._buffer.frames.clear()
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass

    # --- the sender thread --------------------------------------------------

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
            _connect(sock, self.config.address)
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

    def _run(self) -> None:
        ctx = sock = mon = None
        try:
            ctx = zmq.Context()
            sock, mon = self._open(ctx)
            # The loop returns True when the collector refused the handshake and the
            # backoff has passed: a new socket is the only way to be heard again.
            while self._loop(sock, mon):
                self._close(sock, mon)
                sock = mon = None
                self.counters["reconnects"] += 1
                sock, mon = self._open(ctx)
                self._rewind(time.monotonic())
        except Exception as exc:  # noqa: BLE001 — must never escape into the process
            self.counters["errors"] += 1
            logger.error("statbus: sender thread failed: %r; stats of this process are dropped from now on", exc)
        finally:
            for ticket in self._tickets:
                ticket.event.set()
            self._tickets.clear()
            with self._wake_lock:
                self._pipe_open = False
                os.close(self._rfd)
                os.close(self._wfd)
            if sock is not None and mon is not None:
                self._close(sock, mon)
            if ctx is not None:
                ctx.term()
            # Flushers still waiting on events queued after the stop must not wait forever.
            self._release_late_tickets()

    def _release_late_tickets(self) -> None:
        for event in list(self.queue):
            if type(event[0]) is int and event[0] == EV_FLUSH:
                event[1].event.set()

    def _loop(self, sock: zmq.Socket, mon: zmq.Socket) -> bool:
        """Serve until stopped (False) or until ``sock`` must be replaced (True)."""
        poller = zmq.Poller()
        poller.register(mon, zmq.POLLIN)
        poller.register(self._rfd, zmq.POLLIN)
        interval = float(self.config.batch_interval)
        next_batch = time.monotonic() + interval
        while not self._stopping:
            try:
                now = time.monotonic()
                unsent = self._sent_upto < self._buffer.next_seq - 1
                poller.register(sock, zmq.POLLIN | zmq.POLLOUT if unsent else zmq.POLLIN)
                wake_at = next_batch if self._reconnect_at is None else min(next_batch, self._reconnect_at)
                timeout_ms = max(0, int((wake_at - now) * 1000) + 1)
                events = dict(poller.poll(timeout_ms))
                woken = False
                if self._rfd in events:
                    try:
                        os.read(self._rfd, 4096)
                    except BlockingIOError:
                        pass
                    self._wake_flag = False  # cleared before the drain: a later append wakes us again
                    woken = True
                now = time.monotonic()
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
                time.sleep(0.05)
        return False

    def _read_acks(self, sock: zmq.Socket, now: float) -> None:
        while True:
            try:
                data = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                acked = decode_ack(data)
            except WireError as exc:
                self.counters["errors"] += 1
                _rlog.warn("ack", "statbus: bad ack from the collector: %s", exc)
                continue
            released = self._buffer.ack(acked)
            if released:
                self._acked_at = now
                self._resend_after = RESEND_AFTER
                self.counters["frames_acked"] += released
                self._update_buffer_counters()

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
                from .security import handshake_failure_hint

                hint = handshake_failure_hint(event, message.get("value", 0), self.config.address)
                _rlog.warn("handshake", "statbus: %s (trying again in %.0f s)",
                           hint or f"handshake failed (event {event:#x})", self._reconnect_after)
                if self._reconnect_at is None:
                    # e.g. a key authorized after the trainer started: try again, ever more slowly.
                    self._reconnect_at = now + self._reconnect_after
                    self._reconnect_after = min(self._reconnect_after * 2, RECONNECT_AFTER_MAX)

    def _rewind(self, now: float) -> None:
        self._sent_upto = self._buffer.acked
        self._rewound_at = now

    def _drain(self) -> None:
        # Take everything at once, the current entries last.  Each sealed dict is copied
        # (a list slice per key) and marked with the copied lengths, under the lock, so
        # that an add_stat that appended to it after the copy finds its value missing
        # and re-adds it (settle_late); the sender works on the copies only.
        with self.lock:
            events, self.queue = self.queue, collections.deque()
            if self.current:
                events.append((EV_STATS, self.current))
                self.current = {}
            self._queued = 0
            events = collections.deque([_take(event) if event[0] == EV_STATS else event for event in events])
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
        frame = self._buffer.add(builder.records(), builder.nvalues)
        self.counters["last_seq"] = frame.seq

    def _hello_info(self) -> Dict[str, Any]:
        argv0 = sys.argv[0] if sys.argv else ""
        return {"pid": os.getpid(), "host": socket.gethostname()[:255], "run_id": self.config.run_id,
                "argv0": str(argv0)[:1024], "sender": self.sender}

    def _bye_record(self) -> list:
        return bye_record({"pid": os.getpid(), "values_dropped": self._buffer.values_dropped})

    def _enforce_buffer(self) -> None:
        dropped, lost = self._buffer.enforce()
        if dropped:
            _rlog.warn("full", "statbus: trainer buffer full (%d bytes, collector unreachable?); "
                       "%d values dropped so far", self._buffer.limit, self._buffer.values_dropped)
        if lost:
            _rlog.warn("lost", "statbus: markers and properties alone overflow the buffer; "
                       "%d whole frames dropped so far", self._buffer.frames_lost)
        self._update_buffer_counters()

    def _update_buffer_counters(self) -> None:
        c, buffer = self.counters, self._buffer
        c["buffer_bytes"] = buffer.nbytes
        c["buffer_frames"] = len(buffer)
        c["floor"] = buffer.floor
        c["acked_seq"] = buffer.acked
        c["values_dropped"] = buffer.values_dropped
        c["frames_dropped"] = buffer.frames_lost
        c["buffer_bytes_max"] = max(c["buffer_bytes_max"], buffer.nbytes)

    def _send(self, sock: zmq.Socket, now: float) -> None:
        frames = self._buffer.frames
        if not frames:
            return
        first = frames[0].seq
        index = max(self._sent_upto + 1, first) - first
        while index < len(frames):
            frame = frames[index]
            try:
                sock.send(self._buffer.payload(frame), zmq.NOBLOCK, copy=False)
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

    def _check_stall(self, now: float) -> None:
        if not self._buffer.frames:
            return
        oldest = self._buffer.frames[0]
        if oldest.first_sent is not None and self._sent_upto >= oldest.seq:
            if now - max(self._acked_at, self._rewound_at, oldest.first_sent) >= self._resend_after:
                self._rewind(now)
                self._resend_after = min(self._resend_after * 2, RESEND_AFTER_MAX)
        if not self._ensured and now - max(self._acked_at, oldest.created) >= ENSURE_COLLECTOR_AFTER:
            self._ensured = True
            try:
                _ensure_collector(self.config)
            except Exception as exc:  # noqa: BLE001 — the hook must not stop the sender
                self.counters["errors"] += 1
                logger.warning("statbus: starting a collector on demand failed: %r", exc)

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
