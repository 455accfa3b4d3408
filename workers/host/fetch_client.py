"""The worker side (DEALER) of the fetch protocol, and the codec of its messages.

Protocol (docs/internals.md, "Worker fetch protocol"), msgpack arrays:

* worker → collector ``[1, plugin, after, max_bytes]``: FETCH the entries that
  start at or after position ``after`` (a position where an entry starts: the
  worker's committed cursor);
* collector → worker ``[2, entries, next_after, head, skipped]`` with
  ``entries = [[position, kind, data], ...]`` (kind 0 BATCH, 1 SUMMARY).
  ``next_after`` is where the next fetch starts (past every entry sent and past
  any PAD/SNAPSHOT entry); an empty reply after the collector parked the
  fetch (up to 0.5 s) is its liveness signal.

The codec functions for both directions live here so that the collector can
use them too (``pipeline`` may import ``workers``; the reverse is forbidden).
"""

from __future__ import annotations

import enum
import logging
import time
from typing import Any, Callable, List, NamedTuple, Optional

import msgpack
import zmq

from ...plugins.errors import StatbusError

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1 << 20
"""How many bytes of entry data a worker asks for per fetch."""

REPLY_TIMEOUT = 5.0
"""Seconds without any reply after which the collector is considered gone."""

_POLL_SLICE_MS = 100
"""Longest single wait, so that a stop request is noticed promptly."""

MAX_MESSAGE_BYTES = 256 << 20
"""Largest fetch reply a worker accepts (far above any sane ``max_bytes``)."""


class FetchMessage(enum.IntEnum):
    FETCH = 1
    REPLY = 2


class EntryKind(enum.IntEnum):
    """Kind of a fetched entry, with its wire code."""

    BATCH = 0
    SUMMARY = 1


class FetchedEntry(NamedTuple):
    position: int
    kind: EntryKind
    data: bytes


class FetchRequest(NamedTuple):
    plugin: str
    after: int
    max_bytes: int


class FetchReply(NamedTuple):
    entries: List[FetchedEntry]
    next_after: int
    head: int
    skipped: int


class FetchProtocolError(StatbusError):
    """A fetch message does not follow the protocol."""


class LostCollector(StatbusError):
    """No reply to a fetch within :data:`REPLY_TIMEOUT`."""


def _check_position(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        raise FetchProtocolError(f"{what} must be a non-negative 64-bit integer, got {value!r}")
    return value


# --- codec -------------------------------------------------------------------

def encode_fetch(plugin: str, after: int, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    return msgpack.packb([FetchMessage.FETCH.value, plugin, after, max_bytes], use_bin_type=True)


def decode_fetch(data: bytes) -> FetchRequest:
    try:
        message = msgpack.unpackb(data, raw=False, max_array_len=4, max_map_len=0, max_bin_len=0)
    except Exception as exc:  # noqa: BLE001 — msgpack raises many types for bad input
        raise FetchProtocolError(f"fetch is not msgpack: {exc!r}") from None
    if not isinstance(message, list) or len(message) != 4 or message[0] != FetchMessage.FETCH:
        raise FetchProtocolError("a fetch must be [1, plugin, after, max_bytes]")
    _, plugin, after, max_bytes = message
    if not isinstance(plugin, str) or not plugin:
        raise FetchProtocolError("fetch: plugin must be a non-empty string")
    return FetchRequest(plugin, _check_position(after, "after"), _check_position(max_bytes, "max_bytes"))


def encode_reply(entries: List[FetchedEntry], next_after: int, head: int, skipped: int = 0) -> bytes:
    wire_entries = [[position, int(kind), data] for position, kind, data in entries]
    return msgpack.packb([FetchMessage.REPLY.value, wire_entries, next_after, head, skipped], use_bin_type=True)


def decode_reply(data: bytes) -> FetchReply:
    try:
        message = msgpack.unpackb(data, raw=False, max_bin_len=MAX_MESSAGE_BYTES, max_map_len=0)
    except Exception as exc:  # noqa: BLE001
        raise FetchProtocolError(f"fetch reply is not msgpack: {exc!r}") from None
    if not isinstance(message, list) or len(message) != 5 or message[0] != FetchMessage.REPLY:
        raise FetchProtocolError("a fetch reply must be [2, entries, next_after, head, skipped]")
    _, raw_entries, next_after, head, skipped = message
    if not isinstance(raw_entries, list):
        raise FetchProtocolError("fetch reply: entries must be an array")
    entries: List[FetchedEntry] = []
    for raw in raw_entries:
        if not isinstance(raw, list) or len(raw) != 3:
            raise FetchProtocolError("fetch reply: an entry must be [position, kind, data]")
        position, kind, payload = raw
        if type(kind) is not int or kind not in (EntryKind.BATCH, EntryKind.SUMMARY):
            raise FetchProtocolError(f"fetch reply: unknown entry kind {kind!r}")
        if not isinstance(payload, bytes):
            raise FetchProtocolError("fetch reply: entry data must be bytes")
        entries.append(FetchedEntry(_check_position(position, "entry position"), EntryKind(kind), payload))
    return FetchReply(
        entries,
        _check_position(next_after, "next_after"),
        _check_position(head, "head"),
        _check_position(skipped, "skipped"),
    )


# --- the client --------------------------------------------------------------

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
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
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
