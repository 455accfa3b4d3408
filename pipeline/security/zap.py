"""A ZAP handler (ZeroMQ RFC 27) that admits CURVE clients whose public key is in an allow-list directory.

libzmq asks the handler bound at ``inproc://zeromq.zap.01`` *in the socket's own
context* about every CURVE handshake; the handler answers 200 (welcome, with the
key's name as user id) or 400 (denied).  It runs in a thread of its own with its
own sockets, and is stopped by a message on an inproc pipe.

The allow-list is re-read whenever the directory's listing changes (checked on
every request — a stat of a small directory, per *connection*, not per message),
so ``statbus keys authorize`` / ``revoke`` take effect on the next connection
without a restart.  Revocation does not cut a session that is already open:
ZeroMQ cannot drop one peer of a ROUTER; :meth:`Authenticator.is_allowed` lets
the receiver check a frame's ``User-Id`` if it wants that.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

import zmq
from zmq.utils import z85

from ...plugins import StatbusError
from .keyfiles import allow_list_signature, load_allow_list

logger = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27
ZAP_VERSION = b"1.0"
ZAP_DOMAIN = "statbus"
STATUS_OK = b"200"
STATUS_DENIED = b"400"
STATUS_ERROR = b"500"
DENIAL_LOG_INTERVAL = 10.0
"""Seconds between warnings about denied clients: a retrying stranger must not flood the log."""
RECHECK_INTERVAL = 1.0
"""Seconds :meth:`Authenticator.is_allowed` trusts its last look at the allow-list directory."""


class Authenticator:
    """Admits CURVE clients listed in ``allow_dir``; start it before the server socket binds."""

    def __init__(
        self,
        context: zmq.Context,
        allow_dir: str,
        domain: str = ZAP_DOMAIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allow_dir = allow_dir
        self.domain = domain
        self._clock = clock
        self._lock = threading.Lock()  # guards the allow-list snapshot and counters
        self._signature: Optional[Tuple] = None
        self._keys: Dict[bytes, str] = {}
        self._names: FrozenSet[str] = frozenset()
        self._checked_at = float("-inf")
        self.allowed = 0
        self.denied = 0
        self._denials_unlogged = 0
        self._last_denial_log = float("-inf")
        self.refresh()  # a broken allow-list shows up now, in the caller's thread

        self._zap = context.socket(zmq.REP)
        self._zap.linger = 0
        try:
            self._zap.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self._zap.close()
            raise StatbusError(f"cannot start the ZAP authenticator: {exc} (only one per ZeroMQ context)") from exc
        # The stop message travels on an OS pipe, not a zmq socket: the owner then holds no socket
        # of its own, so context.term() without stop() still ends (the thread leaves on ETERM).
        self._stop_r, self._stop_w = os.pipe()
        self._stopping = False
        # The thread takes over _zap; from here on only stop() touches the pipe's write end.
        self._thread = threading.Thread(target=self._run, name="statbus-zap", daemon=True)
        self._thread.start()

    # ---- allow-list -------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the allow-list if the directory's listing changed.  Safe from any thread."""
        with self._lock:
            self._checked_at = self._clock()
            try:
                signature = allow_list_signature(self.allow_dir)
            except OSError as exc:
                # Fail closed: a directory we cannot read admits nobody.
                if self._signature != ():
                    logger.error("allow-list %s unreadable (%s); denying every client", self.allow_dir, exc)
                self._signature, self._keys, self._names = (), {}, frozenset()
                return
            if signature == self._signature:
                return
            keys = load_allow_list(self.allow_dir)
            self._signature, self._keys, self._names = signature, keys, frozenset(keys.values())
        logger.info("allow-list %s: %d authorized key(s): %s", self.allow_dir, len(keys), ", ".join(sorted(self._names)))

    def is_allowed(self, user_id: str) -> bool:
        """Whether a peer admitted under ``user_id`` (a frame's ``User-Id``) is still on the allow-list."""
        if self._clock() - self._checked_at >= RECHECK_INTERVAL:
            self.refresh()
        return user_id in self._names

    def authorized_names(self) -> List[str]:
        with self._lock:
            return sorted(self._names)

    def _lookup(self, z85_key: bytes) -> Optional[str]:
        self.refresh()
        with self._lock:
            return self._keys.get(z85_key)

    # ---- the ZAP conversation ---------------------------------------------------------------

    def _decide(self, frames: List[bytes]) -> List[bytes]:
        if len(frames) < 6 or frames[0] != ZAP_VERSION:
            # libzmq never sends this; answer rather than leave the REP socket stuck.
            request_id = frames[1] if len(frames) > 1 else b""
            return [ZAP_VERSION, request_id, STATUS_ERROR, b"malformed ZAP request", b"", b""]
        _version, request_id, domain, address, _routing_id, mechanism = frames[:6]
        credentials = frames[6:]
        name: Optional[str] = None
        if domain.decode("utf-8", "replace") != self.domain:
            reason = "unknown domain"
        elif mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            reason = f"mechanism {mechanism.decode('ascii', 'replace')} is not allowed"
        else:
            z85_key = z85.encode(credentials[0])
            name = self._lookup(z85_key)
            reason = "unknown key" if name is None else "OK"
        peer = address.decode("utf-8", "replace")
        if name is not None:
            with self._lock:
                self.allowed += 1
            logger.debug("ZAP: admitted %s from %s", name, peer)
            return [ZAP_VERSION, request_id, STATUS_OK, b"OK", name.encode("utf-8"), b""]
        self._note_denial(peer, reason, credentials)
        return [ZAP_VERSION, request_id, STATUS_DENIED, reason.encode("utf-8"), b"", b""]

    def _note_denial(self, peer: str, reason: str, credentials: List[bytes]) -> None:
        with self._lock:
            self.denied += 1
            self._denials_unlogged += 1
            now = self._clock()
            if now - self._last_denial_log < DENIAL_LOG_INTERVAL:
                return
            count, self._denials_unlogged, self._last_denial_log = self._denials_unlogged, 0, now
        key = z85.encode(credentials[0]).decode("ascii") if credentials and len(credentials[0]) == 32 else "-"
        logger.warning(
            "refused a connection from %s: %s (key %s); %d refusal(s) since the last such warning",
            peer, reason, key, count,
        )

    def _run(self) -> None:
        zap, stop_r = self._zap, self._stop_r
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        poller.register(stop_r, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll())
                if stop_r in events:
                    break
                if zap in events:
                    frames = zap.recv_multipart()
                    try:
                        reply = self._decide(frames)
                    except Exception:  # a bug here must deny one client, not kill authentication
                        logger.exception("ZAP: error deciding a request; denying it")
                        reply = [ZAP_VERSION, frames[1] if len(frames) > 1 else b"", STATUS_ERROR, b"internal error", b"", b""]
                    zap.send_multipart(reply)
        except zmq.ContextTerminated:
            pass  # the owner terminated the context before calling stop()
        except Exception:  # noqa: BLE001 — logged; without a handler libzmq refuses every client
            logger.exception("ZAP thread failed; every CURVE client will be refused from now on")
        finally:
            zap.close(linger=0)

    # ---- lifetime ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the handler thread and close its socket.  Idempotent; best before ``context.term()``."""
        if not self._stopping:
            self._stopping = True
            os.write(self._stop_w, b"s")
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("ZAP thread did not stop within %.1f s", timeout)
            return
        if self._stop_w >= 0:
            os.close(self._stop_r)
            os.close(self._stop_w)
            self._stop_r = self._stop_w = -1  # a second stop() must not close a reused fd number

    def __enter__(self) -> "Authenticator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
