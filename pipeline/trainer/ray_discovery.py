"""A trainer finds its run's collector through Ray (``configure(ray=True)``, ``STATBUS_RAY=1``).

Also the lowest place the two halves of the Ray door share — the guarded import of Ray
and the actor's name — so that the trainer, which the Ray room (:mod:`..ray`) builds on,
never imports that room back.

Called by the trainer client's sender thread, never by a training call.  On the
collector's node the trainer uses the collector's private ``ipc://`` socket.
Anywhere else it makes its own CURVE key pair (once per process; the secret key
never leaves it), has the actor put the public key on the collector's allow-list,
and gets the collector's public key and tcp endpoint back.  Ray carries those and
nothing else: stats go over ZeroMQ.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import uuid
from types import ModuleType
from typing import Any, NamedTuple, Optional

import zmq

from ...plugins import StatbusError
from ..layout import RunLayout

logger = logging.getLogger(__name__)

NAMESPACE = "statbus"
"""Every process of the cluster finds the run's collector as the actor ``statbus-collector:<run_id>`` here."""
ACTOR_PREFIX = "statbus-collector:"
INSTALL_HINT = "statbus's Ray features need Ray: pip install 'statbus[ray]'"


class RayMissing(StatbusError):
    """Ray (or Ray Tune) is not installed in this environment."""


def import_ray(module: str = "ray") -> ModuleType:
    """``ray`` (or ``ray.tune``, ...) or :class:`RayMissing` with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RayMissing(f"{INSTALL_HINT} ({module} cannot be imported: {exc})") from None


def actor_name(run_id: str) -> str:
    RunLayout(".", run_id)  # the same rule for run ids everywhere
    return ACTOR_PREFIX + run_id

CALL_TIMEOUT = 10.0
"""Seconds one question to the actor may take (the sender asks again later)."""


class Route(NamedTuple):
    """How this process reaches the collector: an address and, for tcp, CURVE keys (Z85)."""

    address: str
    server_key: Optional[bytes] = None
    public_key: Optional[bytes] = None
    secret_key: Optional[bytes] = None

    def connect(self, sock: zmq.Socket) -> None:
        if self.server_key is not None:
            sock.curve_serverkey = self.server_key
            sock.curve_publickey = self.public_key
            sock.curve_secretkey = self.secret_key
        sock.connect(self.address)


_lock = threading.Lock()
_pair: Optional[tuple] = None
_said: set = set()


def _forget_keys_in_child() -> None:
    # A forked child makes its own key pair: one key, one process.
    global _pair
    _pair = None


os.register_at_fork(after_in_child=_forget_keys_in_child)


def _key_pair() -> tuple:
    """``(name, public, secret)`` of this process, made on first use."""
    global _pair
    with _lock:
        if _pair is None:
            public, secret = zmq.curve_keypair()
            host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname()[:40]) or "host"
            _pair = (f"ray-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}", public, secret)
        return _pair


def _say_once(kind: str, message: str, *args: Any) -> None:
    """Warn once per kind of trouble (the sender asks again and again while it lasts)."""
    if kind not in _said:
        _said.add(kind)
        logger.warning(message, *args)


def discover(config: Any) -> Optional[Route]:
    """The route to ``config.run_id``'s collector, or None (logged) when it cannot be had yet."""
    try:
        ray = import_ray()
    except RayMissing as exc:
        _say_once("missing", "statbus: %s", exc)
        return None
    if not ray.is_initialized():
        _say_once("init", "statbus: STATBUS_RAY / configure(ray=True), but this process is not connected "
                  "to Ray: call ray.init() first, or record stats inside a Ray task or actor")
        return None
    try:
        handle = ray.get_actor(actor_name(config.run_id), namespace=NAMESPACE)
    except ValueError:
        _say_once("absent", "statbus: no collector actor for run %r in the Ray cluster yet (start it with "
                  "`statbus collector start --ray --run-id %s`); values wait in this trainer's buffer",
                  config.run_id, config.run_id)
        return None
    try:
        info = ray.get(handle.info.remote(), timeout=CALL_TIMEOUT)
        if "failure" in info:
            _say_once("failed", "statbus: run %r's collector could not start: %s", config.run_id, info["failure"])
            return None
        if info["node_id"] == ray.get_runtime_context().get_node_id():
            route = Route(info["ipc_address"])
        else:
            name, public, secret = _key_pair()
            reply = ray.get(handle.authorize.remote(name, public.decode("ascii")), timeout=CALL_TIMEOUT)
            route = Route(reply["tcp_address"], reply["server_key"].encode("ascii"), public, secret)
    except (ray.exceptions.RayError, StatbusError, KeyError) as exc:
        _say_once("call", "statbus: asking run %r's collector actor failed (%s); trying again", config.run_id, exc)
        return None
    logger.info("statbus: run %s's collector is at %s (found through Ray)", config.run_id, route.address)
    _said.clear()
    return route
