"""The worker fetch protocol: its messages, limits and their one codec, for both ends.

The collector's fetch server (``statbus.pipeline.collector.fetch_server``), the
worker host's fetch client (:mod:`.host.fetch_client`) and the tests' fake
collectors all encode and decode through this module: the two ends cannot
disagree on what a valid message is.  It sits in ``workers`` so that both can
import it downward.

Messages (docs/internals.md, "Worker fetch protocol"), msgpack arrays:

* worker → collector ``[1, plugin, after, max_bytes]``: FETCH the entries that
  start at or after position ``after`` (a position where an entry starts: the
  worker's committed cursor), at most about ``max_bytes`` of entry data;
* collector → worker ``[2, entries, next_after, head, skipped]`` with
  ``entries = [[position, kind, data], ...]`` (kind 0 BATCH, 1 SUMMARY).
  ``next_after`` is where the next fetch starts (past every entry sent and past
  any PAD/SNAPSHOT entry); an empty reply after the collector parked the
  fetch (up to 0.5 s) is its liveness signal.
"""

from __future__ import annotations

import enum
from typing import Any, List, NamedTuple, Sequence

import msgpack

from ..plugins.errors import StatbusError

DEFAULT_MAX_BYTES = 1 << 20
"""How many bytes of entry data a worker asks for per fetch."""
MAX_FETCH_BYTES = 16 << 20
"""Cap on ``max_bytes`` whatever the worker asks: one reply stays a bounded message."""
MAX_REQUEST_BYTES = 4096
"""Largest FETCH message accepted."""
MAX_PLUGIN_NAME = 256
"""Longest plugin name in a FETCH (characters)."""
MAX_REPLY_BYTES = 256 << 20
"""Largest reply a worker accepts (far above any reply of :data:`MAX_FETCH_BYTES`)."""
_MAX_POSITION = 2**63


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


def _check_position(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < _MAX_POSITION:
        raise FetchProtocolError(f"{what} must be a non-negative 64-bit integer, got {value!r}")
    return value


def encode_fetch(plugin: str, after: int, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    return msgpack.packb([FetchMessage.FETCH.value, plugin, after, max_bytes], use_bin_type=True)


def decode_fetch(data: bytes) -> FetchRequest:
    """A FETCH, validated; ``max_bytes`` comes back capped at :data:`MAX_FETCH_BYTES`."""
    if len(data) > MAX_REQUEST_BYTES:
        raise FetchProtocolError(f"fetch request of {len(data)} bytes, at most {MAX_REQUEST_BYTES}")
    try:
        message = msgpack.unpackb(data, raw=False, max_array_len=8, max_map_len=0, max_bin_len=0,
                                  max_str_len=MAX_PLUGIN_NAME)
    except Exception as exc:  # noqa: BLE001 — msgpack raises many types for bad input
        raise FetchProtocolError(f"fetch is not msgpack: {exc!r}") from None
    if not isinstance(message, list) or len(message) != 4 or message[0] != FetchMessage.FETCH:
        raise FetchProtocolError("a fetch must be [1, plugin, after, max_bytes]")
    _, plugin, after, max_bytes = message
    if not isinstance(plugin, str) or not plugin:
        raise FetchProtocolError("fetch: plugin must be a non-empty string")
    after = _check_position(after, "fetch: after")
    if _check_position(max_bytes, "fetch: max_bytes") == 0:
        raise FetchProtocolError("fetch: max_bytes must be at least 1")
    return FetchRequest(plugin, after, min(max_bytes, MAX_FETCH_BYTES))


def encode_reply(entries: Sequence[Sequence[Any]], next_after: int, head: int, skipped: int = 0) -> bytes:
    """A REPLY; ``entries`` are ``(position, kind, data)`` sequences (FetchedEntry or plain lists)."""
    return msgpack.packb([FetchMessage.REPLY.value, entries, next_after, head, skipped], use_bin_type=True)


def decode_reply(data: bytes) -> FetchReply:
    try:
        message = msgpack.unpackb(data, raw=False, max_bin_len=MAX_REPLY_BYTES, max_map_len=0)
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
