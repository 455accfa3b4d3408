"""The sender thread's connection to the collector: opening and replacing the socket, refusals, handshakes, Ray rediscovery.

A mixin of :class:`.sender.Client` (the state it keeps — route, reconnect and rediscover
backoffs, ``_refused`` — is the client's): the sender loop replaces its socket when
:attr:`_reconnect_at` has passed, after the collector refused this trainer or its handshake
failed, or after a Ray trainer found the run's collector elsewhere.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Tuple

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..wire import Refusal
from .rate_log import RateLimitedLog

logger = logging.getLogger(__name__)

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



class Connection:
    """Opens, watches and replaces the sender's DEALER socket; mixed into :class:`.sender.Client`."""

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

        delay = 0.5
        while not self._stopping and not self._pausing:
            route = discover(self.config)
            if route is not None:
                return route
            deadline = time.monotonic() + delay
            while not self._stopping and not self._pausing and time.monotonic() < deadline:
                if zmq.select([self.wake_fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
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
