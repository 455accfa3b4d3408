"""The collector's control socket: one msgpack map in, one msgpack map out.

Requests (``ctl`` ROUTER; the client uses a DEALER)::

    {"op": "ping"}                              → {"ok": true, "pid": ..., "run_id": ..., "phase": ..., "stalled": bool}
    {"op": "status"}                            → {"ok": true, ...the status map...}
    {"op": "stop", "timeout": seconds}          → {"ok": true, "stopping": true}   (graceful)
    {"op": "restart"|"enable"|"disable", "plugin": name} → {"ok": true} | {"ok": false, "error": ...}

Every reply value is JSON-safe (``statbus status --json`` prints it as is).  A
request that cannot be read gets ``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any, Callable, Dict, List, Mapping

import msgpack
import zmq

from ..plugins import StatbusError

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
OPS = ("ping", "status", "stop", "restart", "enable", "disable")


class ControlError(StatbusError):
    """No answer from the collector's control socket, or an unreadable one."""


def json_safe(value: Any) -> Any:
    """``value`` with every part JSON can carry: bytes → hex, NaN/inf → None, enums → their value."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    inner = getattr(value, "value", None)  # Enum
    if inner is not None and not callable(inner):
        return json_safe(inner)
    return str(value)


# --- the codec: both ends encode and decode through these -------------------

def encode_request(request: Mapping[str, Any]) -> bytes:
    return msgpack.packb(dict(request), use_bin_type=True)


def decode_request(data: bytes) -> Dict[str, Any]:
    """A request, checked: a map of at most ``MAX_REQUEST_BYTES`` whose ``op`` is one of :data:`OPS`."""
    if len(data) > MAX_REQUEST_BYTES:
        raise ControlError(f"request of {len(data)} bytes is too large")
    try:
        request = msgpack.unpackb(data, raw=False, max_map_len=64, max_array_len=64, max_str_len=4096)
    except Exception as exc:  # noqa: BLE001 — msgpack raises many types for bad input
        raise ControlError(f"request is not msgpack: {exc!r}") from None
    if not isinstance(request, dict) or request.get("op") not in OPS:
        raise ControlError(f"request must be a map with op one of {list(OPS)}")
    return request


def encode_reply(reply: Mapping[str, Any]) -> bytes:
    """A reply, made JSON-safe first (``statbus status --json`` prints it as is)."""
    return msgpack.packb(json_safe(reply), use_bin_type=True)


def decode_reply(data: bytes, source: str = "the collector") -> Dict[str, Any]:
    try:
        reply = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # noqa: BLE001
        raise ControlError(f"unreadable reply from {source}: {exc!r}") from None
    if not isinstance(reply, dict):
        raise ControlError(f"unreadable reply from {source}: not a map")
    return reply


# --- the two ends ------------------------------------------------------------


class ControlServer:
    """Reads requests from the ``ctl`` ROUTER and answers through ``handler``."""

    def __init__(self, socket: zmq.Socket, handler: Callable[[Dict[str, Any]], Dict[str, Any]]) -> None:
        self._socket = socket
        self._handler = handler

    def on_readable(self, budget: int = 64) -> None:
        for _ in range(budget):
            try:
                message = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(message) < 2:
                continue
            envelope, data = message[:-1], message[-1]
            try:
                reply = self._handler(decode_request(data))
            except ControlError as exc:
                reply = {"ok": False, "error": str(exc)}
            except Exception as exc:  # noqa: BLE001 — a failing command must not end the collector
                logger.exception("control request failed")
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self._reply(envelope, reply)

    def _reply(self, envelope: List[bytes], reply: Dict[str, Any]) -> None:
        try:
            self._socket.send_multipart([*envelope, encode_reply(reply)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            logger.warning("control reply dropped: %s", exc)


def control_request(address: str, request: Dict[str, Any], timeout: float = 5.0) -> Dict[str, Any]:
    """Send one control request to the collector at ``address`` and return its reply.

    Raises :class:`ControlError` when no reply comes within ``timeout`` seconds
    (the collector is down, busy or not there) or the reply cannot be read.
    A fresh context and socket per call, closed with linger 0: the CLI makes
    one request and leaves, and must never hang on an absent peer.
    """
    context = zmq.Context()
    try:
        with context.socket(zmq.DEALER) as socket:
            socket.setsockopt(zmq.LINGER, 0)
            # Not ZMQ_IMMEDIATE: with it libzmq discards what a connection delivered but
            # this end has not read yet when that connection ends, and the collector
            # ends it right after answering ``stop``: a late reader lost the reply.
            # A random identity per request: a late reply to an earlier request
            # can never be mistaken for this one's.
            socket.setsockopt(zmq.ROUTING_ID, b"ctl-" + uuid.uuid4().bytes[:8])
            socket.connect(address)
            socket.send(encode_request(request), zmq.NOBLOCK)
            if not socket.poll(int(timeout * 1000), zmq.POLLIN):
                # Without IMMEDIATE an absent collector and a busy one look alike: the request
                # waits queued (and goes out if one binds within ``timeout``).
                raise ControlError(f"no reply from {address} within {timeout:g} s (no collector, or a busy one)")
            data = socket.recv(zmq.NOBLOCK)
    except zmq.ZMQError as exc:
        raise ControlError(f"control request to {address} failed: {exc}") from None
    finally:
        context.term()
    return decode_reply(data, address)
