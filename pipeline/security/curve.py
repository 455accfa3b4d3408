"""Transport security for the trainer → collector data path (docs/design.md §7).

Two calls are all a socket owner needs:

* the collector: ``auth = secure_bind(router, address, TransportSecurity(...))`` and,
  at shutdown, ``if auth: auth.stop()`` before the context is terminated;
* a trainer: ``secure_connect(dealer, address, client_security_from_env())``.

Rules, by address scheme:

``ipc://``   no CURVE; the protection is the socket's directory, which must be
             ours and mode 0700 (``RunLayout.ensure_socket_dir`` makes it so).  A
             Linux abstract socket (``ipc://@name``) has no permissions at all and
             is refused unless ``insecure``.
``tcp://``   CURVE with a server key pair and an allow-list directory of client
             public keys, checked by a ZAP handler (:mod:`.zap`).  Without keys the
             bind fails closed, naming the commands that make them; plain tcp only
             with ``insecure=True``, and then with a loud warning.
``inproc://`` in-process only; nothing to protect.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from typing import Mapping, Optional

import zmq

from ...plugins import ConfigError
from . import keyfiles
from .zap import ZAP_DOMAIN, Authenticator

logger = logging.getLogger(__name__)

ENV_CLIENT_KEY = "STATBUS_CLIENT_KEY"
"""Path of the trainer's secret key file (``NAME.key_secret``)."""
ENV_SERVER_KEY = "STATBUS_SERVER_KEY"
"""Path of the collector's public key file (``server.key``)."""

MAX_IPC_PATH_BYTES = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
TCP_HANDSHAKE_TIMEOUT_MS = 10_000
"""A tcp peer that has not finished the ZMTP/CURVE handshake by then is dropped, so idle
half-open connections cannot pile up (libzmq's default is 30 s)."""

_KEYS_HINT = (
    "make keys with `statbus keys generate --dir KEYDIR` (the collector's pair, KEYDIR/server.key_secret), "
    "`statbus keys generate --dir TRAINERKEYS --name trainer1` for each trainer, and "
    "`statbus keys authorize --allow-dir ALLOWDIR TRAINERKEYS/trainer1.key`; then start the collector "
    "with --key-dir KEYDIR --allow-dir ALLOWDIR, or pass --insecure to accept unauthenticated plain tcp"
)


@dataclasses.dataclass(frozen=True)
class TransportSecurity:
    """How the collector protects a socket it binds.

    ``server_secret_file`` and ``allow_dir`` go together: both or neither.
    """

    server_secret_file: Optional[str] = None
    allow_dir: Optional[str] = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if (self.server_secret_file is None) != (self.allow_dir is None):
            given, missing = (
                ("a server key", "an allow-list directory (--allow-dir)")
                if self.allow_dir is None
                else ("an allow-list directory", "the server key (--key-dir)")
            )
            raise ConfigError(f"CURVE needs both a server key and an allow-list: {given} was given without {missing}")

    @classmethod
    def from_key_dir(cls, key_dir: Optional[str], allow_dir: Optional[str], insecure: bool = False) -> "TransportSecurity":
        """Settings from a key directory made by ``statbus keys generate --dir KEY_DIR``."""
        secret = keyfiles.secret_file(key_dir) if key_dir else None
        return cls(server_secret_file=secret, allow_dir=allow_dir, insecure=insecure)

    @property
    def has_keys(self) -> bool:
        return self.server_secret_file is not None


@dataclasses.dataclass(frozen=True)
class ClientSecurity:
    """The trainer's CURVE keys: its own secret key file and the collector's public key file."""

    client_secret_file: Optional[str] = None
    server_public_file: Optional[str] = None

    def __post_init__(self) -> None:
        if (self.client_secret_file is None) != (self.server_public_file is None):
            missing = ENV_SERVER_KEY if self.server_public_file is None else ENV_CLIENT_KEY
            raise ConfigError(
                f"CURVE needs both the trainer's secret key ({ENV_CLIENT_KEY}) and the collector's "
                f"public key ({ENV_SERVER_KEY}); {missing} is not set"
            )

    @property
    def has_keys(self) -> bool:
        return self.client_secret_file is not None


def client_security_from_env(environ: Optional[Mapping[str, str]] = None) -> ClientSecurity:
    """``ClientSecurity`` from ``STATBUS_CLIENT_KEY`` and ``STATBUS_SERVER_KEY`` (unset or empty: no keys)."""
    env = os.environ if environ is None else environ
    client = env.get(ENV_CLIENT_KEY, "").strip() or None
    server = env.get(ENV_SERVER_KEY, "").strip() or None
    return ClientSecurity(client_secret_file=client, server_public_file=server)


def _scheme(address: str) -> str:
    scheme, sep, _ = address.partition("://")
    if not sep:
        raise ConfigError(f"address {address!r} has no scheme; use ipc://PATH or tcp://HOST:PORT")
    return scheme


def check_ipc_address(address: str, insecure: bool = False) -> None:
    """Refuse an ipc socket other users could reach: its directory must be ours and 0700."""
    path = address[len("ipc://"):]
    if path.startswith("@"):
        if not insecure:
            raise ConfigError(
                f"{address} is an abstract socket: any local user can connect to it. "
                "Use an ipc:// path in a private directory, or pass --insecure"
            )
        logger.warning("INSECURE: binding abstract socket %s; every local user can send data to it", address)
        return
    if not path or path == "*":
        raise ConfigError(f"{address}: give the socket's path, in a directory only you can enter")
    if len(path.encode()) > MAX_IPC_PATH_BYTES:
        raise ConfigError(
            f"{address}: the path is {len(path.encode())} bytes, AF_UNIX allows {MAX_IPC_PATH_BYTES}; "
            "use a shorter path (the default socket directory is short on purpose)"
        )
    directory = os.path.dirname(os.path.abspath(path))
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        raise ConfigError(f"{address}: directory {directory} does not exist; create it with mode 0700") from None
    if info.st_uid != os.getuid():
        raise ConfigError(f"{address}: directory {directory} belongs to uid {info.st_uid}, not to you; refusing to bind there")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{address}: directory {directory} has mode {stat.S_IMODE(info.st_mode):04o}, so other users "
            f"could reach the socket; run `chmod 700 {directory}` or use the default socket directory"
        )


def _bound(socket: zmq.Socket, address: str) -> str:
    # With port 0 or '*' the address says little; the endpoint says where trainers must go.
    try:
        return socket.last_endpoint.decode() or address
    except zmq.ZMQError:
        return address


def secure_bind(socket: zmq.Socket, address: str, settings: Optional[TransportSecurity] = None) -> Optional[Authenticator]:
    """Bind ``socket`` to ``address`` under the rules of this module.

    Returns the running :class:`Authenticator` for a CURVE tcp bind (call its
    ``stop()`` at shutdown, before terminating the context), else ``None``.
    Raises :class:`ConfigError` instead of binding anything less safe than asked.
    """
    settings = settings or TransportSecurity()
    scheme = _scheme(address)
    if scheme == "ipc":
        check_ipc_address(address, settings.insecure)
        socket.bind(address)
        return None
    if scheme == "inproc":
        socket.bind(address)
        return None
    if scheme != "tcp":
        raise ConfigError(f"{address}: statbus binds only ipc://, tcp:// or inproc:// addresses")
    socket.setsockopt(zmq.HANDSHAKE_IVL, TCP_HANDSHAKE_TIMEOUT_MS)
    if not settings.has_keys:
        if not settings.insecure:
            raise ConfigError(f"refusing to bind {address} without CURVE keys: anyone who can reach it could send data; {_KEYS_HINT}")
        socket.bind(address)
        logger.warning(
            "INSECURE: %s is bound as plain tcp without CURVE (--insecure): anyone who can reach this "
            "port can send data to this run; nothing is authenticated or encrypted",
            _bound(socket, address),
        )
        return None
    if settings.insecure:
        logger.info("CURVE keys given; ignoring --insecure for %s", address)
    assert settings.server_secret_file is not None and settings.allow_dir is not None
    pair = keyfiles.read_secret_key(settings.server_secret_file)
    keyfiles.check_private_dir(settings.allow_dir, "allow-list directory")
    authenticator = Authenticator(socket.context, settings.allow_dir, domain=ZAP_DOMAIN)
    try:
        socket.curve_server = True
        socket.curve_secretkey = pair.secret
        socket.curve_publickey = pair.public
        socket.zap_domain = ZAP_DOMAIN.encode()
        # Should the handler ever be missing, libzmq must refuse clients rather than wave them through.
        socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        socket.bind(address)
    except BaseException:
        authenticator.stop()
        raise
    logger.info(
        "%s: CURVE with server key %s, clients from %s (%d authorized)",
        _bound(socket, address), pair.public.decode("ascii"), settings.allow_dir, len(authenticator.authorized_names()),
    )
    return authenticator


def secure_connect(socket: zmq.Socket, address: str, settings: Optional[ClientSecurity] = None) -> None:
    """Connect ``socket`` to ``address``; CURVE for tcp when ``settings`` has keys.

    Without keys a tcp connection is plain; the collector decides whether it takes it.
    """
    settings = settings or ClientSecurity()
    if _scheme(address) == "tcp" and settings.has_keys:
        assert settings.client_secret_file is not None and settings.server_public_file is not None
        pair = keyfiles.read_secret_key(settings.client_secret_file)
        server_public = keyfiles.read_public_key(settings.server_public_file)
        socket.curve_serverkey = server_public
        socket.curve_publickey = pair.public
        socket.curve_secretkey = pair.secret
    elif _scheme(address) == "tcp":
        logger.debug("%s: connecting without CURVE (%s / %s unset)", address, ENV_CLIENT_KEY, ENV_SERVER_KEY)
    socket.connect(address)


# What a trainer's socket monitor reports when the collector turns it away.  libzmq does not
# retry such a connection: the trainer has to log the hint and connect a new socket later.
HANDSHAKE_FAILURE_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_MECHANISM_MISMATCH = 0x11000002  # ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH


def handshake_failure_hint(event: int, value: int, address: str = "the collector") -> Optional[str]:
    """A message for the user about a client-side monitor event, or None if it is not a refusal."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return (
            f"{address} refused this trainer's key (status {value}): it is not in the collector's allow-list; "
            f"run `statbus keys authorize --allow-dir ALLOWDIR PUBLIC_KEY_FILE` on the collector's host"
        )
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _MECHANISM_MISMATCH:
        return (
            f"{address} and this trainer disagree about CURVE: set both {ENV_CLIENT_KEY} and "
            f"{ENV_SERVER_KEY} for a collector with keys, or neither for one started with --insecure"
        )
    if event & HANDSHAKE_FAILURE_EVENTS:
        return (
            f"the handshake with {address} failed (event {event:#x}, value {value}); "
            f"check that {ENV_SERVER_KEY} is the public key of the collector you are connecting to"
        )
    return None
