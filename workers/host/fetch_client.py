"""The worker side (DEALER) of the fetch protocol (:mod:`..fetch_protocol`).

One fetch outstanding at a time: the host asks for the entries after its
committed cursor and waits for the reply, or for its stop flag.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import zmq

from ...plugins.errors import StatbusError
from ..fetch_protocol import DEFAULT_MAX_BYTES, MAX_REPLY_BYTES, FetchReply, decode_reply, encode_fetch

logger = logging.getLogger(__name__)

REPLY_TIMEOUT = 5.0
"""Seconds without any reply after which the collector is considered gone."""

_POLL_SLICE_MS = 250
"""Longest single wait, so that a stop request is noticed promptly."""

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
    ) -> None:
        self.plugin = plugin
        self.max_bytes = max_bytes
        self.reply_timeout = reply_timeout
        self._clock = clock
        self._socket = context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
        self._socket.connect(address)

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
            if self._socket.poll(min(_POLL_SLICE_MS, max(1, int(remaining * 1000))), zmq.POLLIN):
                return decode_reply(self._socket.recv(copy=True))
