"""The worker side (DEALER) of the fetch protocol (:mod:`..fetch_protocol`).

One fetch outstanding at a time: the host asks for the entries after its
committed cursor and waits for the reply, or for its stop flag.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, Optional

import zmq

from ...plugins.errors import StatbusError
from ..fetch_protocol import DEFAULT_MAX_BYTES, MAX_REPLY_BYTES, FetchReply, decode_reply, encode_fetch

logger = logging.getLogger(__name__)

REPLY_TIMEOUT = 5.0
"""Seconds without any reply after which the collector is considered gone."""

_POLL_SLICE_MS = 1000
"""Longest single wait.  A stop signal ends a wait at once through ``wake_fd``; the slice is
for a stop flag set without a signal (or a plugin that took the wakeup fd for itself)."""

class LostCollector(StatbusError):
    """No reply to a fetch within :data:`REPLY_TIMEOUT`."""


class FetchClient:
    """One DEALER socket to the collector's ``work`` socket; one fetch outstanding at a time.

    Not thread-safe: the worker host's main thread is its only user.
    """

    def __init__(
        self,
        context: zmq.Context,
        address: str,
        plugin: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        reply_timeout: float = REPLY_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        wake_fd: Optional[int] = None,
    ) -> None:
        self.plugin = plugin
        self.max_bytes = max_bytes
        self.reply_timeout = reply_timeout
        self._clock = clock
        self._socket = context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
        self._socket.connect(address)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._wake_fd = wake_fd
        if wake_fd is not None:
            self._poller.register(wake_fd, zmq.POLLIN)

    def close(self) -> None:
        self._socket.close(linger=0)

    def __enter__(self) -> "FetchClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fetch(self, after: int, should_stop: Optional[Callable[[], bool]] = None) -> Optional[FetchReply]:
        """Ask for the entries after ``after`` and wait for the reply.

        Returns ``None`` when ``should_stop()`` became true while waiting (the
        request is then abandoned: the socket must be closed, not reused).
        Raises :class:`LostCollector` after ``reply_timeout`` seconds without a
        reply, :class:`FetchProtocolError` on a malformed reply.
        """
        self._socket.send(encode_fetch(self.plugin, after, self.max_bytes))
        deadline = self._clock() + self.reply_timeout
        while True:
            if should_stop is not None and should_stop():
                return None
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise LostCollector(f"no reply to a fetch from the collector in {self.reply_timeout:g} s")
            events = dict(self._poller.poll(min(_POLL_SLICE_MS, max(1, int(remaining * 1000)))))
            if self._wake_fd in events:
                _drain(self._wake_fd)
            if self._socket in events:
                return decode_reply(self._socket.recv(copy=True))


def _drain(fd: int) -> None:
    """Empty the signal wakeup pipe (the signal numbers in it are not needed: the stop flag says it)."""
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError):
        pass
