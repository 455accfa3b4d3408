"""Transport security: real ZeroMQ sockets on loopback tcp and ipc in tmp_path.

"Delivers nothing" is shown without sleeping on hope: the server socket's monitor
must report the failed handshake, then an authorized client's message must
arrive after the unauthorized one's, and the unauthorized payload never does.
"""

from __future__ import annotations

import logging
import os
import socket as pysocket
import threading
from types import SimpleNamespace
from typing import Callable, Iterator, List, Optional, Set

import pytest
import zmq

from statbus.pipeline.cli.keys import run_authorize, run_revoke
from statbus.pipeline.security import keyfiles
from statbus.pipeline.security.curve import (
    ClientSecurity,
    TransportSecurity,
    client_security_from_env,
    handshake_failure_hint,
    secure_bind,
    secure_connect,
)
from statbus.pipeline.security.zap import ZAP_ENDPOINT, Authenticator
from statbus.plugins import ConfigError
from waiting import wait_for, wait_monitor_event

TIMEOUT = 10.0
FAILED_HANDSHAKE = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition") -> None:
    wait_for(predicate, timeout, what, interval=0.01)


class Rig:
    """Sockets of the test's context; every socket and authenticator it hands out is closed in ``close``."""

    def __init__(self, context: zmq.Context) -> None:
        self.ctx = context
        self.sockets: List[zmq.Socket] = []
        self.auths: List[Authenticator] = []

    def socket(self, kind: int) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.linger = 0
        self.sockets.append(sock)
        return sock

    def monitor(self, sock: zmq.Socket) -> zmq.Socket:
        mon = sock.get_monitor_socket()
        self.sockets.append(mon)
        return mon

    def server(self, address: str, settings: Optional[TransportSecurity]) -> SimpleNamespace:
        router = self.socket(zmq.ROUTER)
        mon = self.monitor(router)
        auth = secure_bind(router, address, settings)
        if auth is not None:
            self.auths.append(auth)
        return SimpleNamespace(sock=router, mon=mon, auth=auth, endpoint=router.last_endpoint.decode())

    def client(self, endpoint: str, settings: Optional[ClientSecurity]) -> zmq.Socket:
        dealer = self.socket(zmq.DEALER)
        secure_connect(dealer, endpoint, settings)
        return dealer

    def close(self) -> None:
        for sock in reversed(self.sockets):
            sock.close(linger=0)
        for auth in self.auths:
            auth.stop()


@pytest.fixture
def rig(context: zmq.Context) -> Iterator[Rig]:
    r = Rig(context)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def keys(tmp_path) -> SimpleNamespace:
    """A collector pair, an unrelated second collector pair, trainers t1 (authorized) and t2 (not)."""
    server_pub, server_sec = keyfiles.generate_key_pair(str(tmp_path / "server"))
    other_pub, _ = keyfiles.generate_key_pair(str(tmp_path / "other"))
    t1_pub, t1_sec = keyfiles.generate_key_pair(str(tmp_path / "trainers"), "t1")
    t2_pub, t2_sec = keyfiles.generate_key_pair(str(tmp_path / "trainers"), "t2")
    allow = str(tmp_path / "allow")
    assert run_authorize(SimpleNamespace(allow_dir=allow, public_key_file=t1_pub, name=None, force=False)) == 0
    return SimpleNamespace(
        server=TransportSecurity(server_sec, allow),
        allow=allow,
        t1=ClientSecurity(t1_sec, server_pub),
        t2=ClientSecurity(t2_sec, server_pub),
        t1_wrong_server=ClientSecurity(t1_sec, other_pub),
        t2_pub=t2_pub,
    )


def receive(server: SimpleNamespace, until: Callable[[Set[bytes]], bool], timeout: float = TIMEOUT) -> Set[bytes]:
    """Payloads received (with the ZAP user id) until ``until`` holds; fails at the deadline."""
    got: Set[bytes] = set()

    def enough() -> bool:
        if until(got):
            return True
        if server.sock.poll(200):
            frames = server.sock.recv_multipart(copy=False)
            user = frames[-1].get("User-Id") if server.auth is not None else ""
            got.add(f"{user}:".encode() + frames[-1].bytes)
        return False

    wait_for(enough, timeout, lambda: f"payloads; received only {sorted(got)}", interval=0)
    return got


def wait_event(mon: zmq.Socket, mask: int, timeout: float = TIMEOUT) -> dict:
    return wait_monitor_event(mon, mask, timeout)


def tcp(rig: Rig, settings: Optional[TransportSecurity]) -> SimpleNamespace:
    return rig.server("tcp://127.0.0.1:*", settings)


# ---- tcp with CURVE ---------------------------------------------------------------------------


def test_authorized_client_delivers_everything_with_its_name(rig, keys):
    server = tcp(rig, keys.server)
    dealer = rig.client(server.endpoint, keys.t1)
    sent = {str(i).encode() for i in range(200)}
    for payload in sorted(sent):
        dealer.send(payload)
    got = receive(server, lambda g: len(g) >= len(sent))
    assert got == {b"t1:" + p for p in sent}
    assert server.auth.allowed == 1 and server.auth.denied == 0


@pytest.mark.parametrize("intruder", ["no_curve", "unknown_key", "wrong_server_key"])
def test_unauthorized_client_delivers_nothing(rig, keys, intruder):
    server = tcp(rig, keys.server)
    settings = {"no_curve": None, "unknown_key": keys.t2, "wrong_server_key": keys.t1_wrong_server}[intruder]
    bad = rig.socket(zmq.DEALER)
    bad_mon = rig.monitor(bad)
    secure_connect(bad, server.endpoint, settings)
    for _ in range(10):
        bad.send(b"intruder")
    event = wait_event(server.mon, FAILED_HANDSHAKE)
    # The trainer's side can tell its user what is wrong.
    seen = wait_event(bad_mon, FAILED_HANDSHAKE)
    hint = handshake_failure_hint(seen["event"], seen["value"], server.endpoint)
    assert {"no_curve": "disagree about CURVE", "unknown_key": "statbus keys authorize",
            "wrong_server_key": "STATBUS_SERVER_KEY"}[intruder] in hint
    if intruder == "unknown_key":
        assert event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH and event["value"] == 400
        assert server.auth.denied >= 1
    good = rig.client(server.endpoint, keys.t1)
    good.send(b"honest")
    got = receive(server, lambda g: b"t1:honest" in g)
    # Anything the intruder's socket could still deliver would have been queued ahead of nothing:
    # drain what is there and make sure none of it is the intruder's.
    while server.sock.poll(200):
        got.add(server.sock.recv_multipart()[-1])
    assert not any(p.endswith(b"intruder") for p in got)


def test_revoked_key_is_refused_on_later_connections(rig, keys, tmp_path):
    server = tcp(rig, keys.server)
    first = rig.client(server.endpoint, keys.t1)
    first.send(b"before")
    receive(server, lambda g: b"t1:before" in g)
    assert server.auth.is_allowed("t1")

    assert run_revoke(SimpleNamespace(allow_dir=keys.allow, name="t1")) == 0
    # Keep one honest trainer to prove the collector still serves others.
    assert run_authorize(SimpleNamespace(allow_dir=keys.allow, public_key_file=keys.t2_pub, name=None, force=False)) == 0

    later = rig.client(server.endpoint, keys.t1)
    later.send(b"after-revoke")
    event = wait_event(server.mon, FAILED_HANDSHAKE)
    assert event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    honest = rig.client(server.endpoint, keys.t2)
    honest.send(b"still-served")
    got = receive(server, lambda g: b"t2:still-served" in g)
    while server.sock.poll(200):
        got.add(server.sock.recv_multipart()[-1])
    assert not any(p.endswith(b"after-revoke") for p in got)
    assert server.auth.denied == 1
    wait_until(lambda: not server.auth.is_allowed("t1"), what="t1 revoked in the snapshot")


def test_key_authorized_while_running_is_accepted_without_restart(rig, keys):
    server = tcp(rig, keys.server)
    refused = rig.client(server.endpoint, keys.t2)
    refused.send(b"too-early")
    wait_event(server.mon, zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    assert server.auth.authorized_names() == ["t1"]

    run_authorize(SimpleNamespace(allow_dir=keys.allow, public_key_file=keys.t2_pub, name="late", force=False))
    # libzmq does not retry a connection the server refused, so a trainer reconnects with a new socket.
    welcome = rig.client(server.endpoint, keys.t2)
    welcome.send(b"now")
    assert b"late:now" in receive(server, lambda g: b"late:now" in g)
    assert server.auth.authorized_names() == ["late", "t1"]


def test_damaged_key_in_allow_list_is_skipped_not_fatal(rig, keys, caplog):
    with open(os.path.join(keys.allow, "broken.key"), "w") as handle:
        handle.write('curve\n    public-key = "tooshort"\n')
    with caplog.at_level(logging.WARNING, logger="statbus.pipeline.security.keyfiles"):
        server = tcp(rig, keys.server)
    assert any("broken.key" in r.getMessage() for r in caplog.records)
    dealer = rig.client(server.endpoint, keys.t1)
    dealer.send(b"fine")
    receive(server, lambda g: b"t1:fine" in g)


def test_connection_flood_leaves_authorized_client_served(rig, keys):
    server = tcp(rig, keys.server)
    port = int(server.endpoint.rsplit(":", 1)[1])
    held: List[pysocket.socket] = []
    try:
        # 200 plain connections: garbage, a truncated greeting, or nothing; most closed at once,
        # the last batch held open while the honest trainer sends.
        for i in range(200):
            conn = pysocket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            if i % 3 == 0:
                conn.sendall(os.urandom(64))
            elif i % 3 == 1:
                conn.sendall(b"\xff" + b"\x00" * 8 + b"\x7f\x03")  # start of a ZMTP greeting, then silence
            if i >= 150:
                held.append(conn)
            else:
                conn.close()
        dealer = rig.client(server.endpoint, keys.t1)
        sent = {f"v{i}".encode() for i in range(100)}
        for payload in sorted(sent):
            dealer.send(payload)
        assert receive(server, lambda g: len(g) >= len(sent)) == {b"t1:" + p for p in sent}
    finally:
        for conn in held:
            conn.close()


def test_curve_handshake_flood_is_counted_and_logged_sparingly(rig, keys, caplog):
    server = tcp(rig, keys.server)
    with caplog.at_level(logging.WARNING, logger="statbus.pipeline.security.zap"):
        strangers = []
        for _ in range(30):
            public, secret = zmq.curve_keypair()
            dealer = rig.socket(zmq.DEALER)
            dealer.curve_serverkey = keyfiles.read_public_key(keys.t1.server_public_file)
            dealer.curve_publickey, dealer.curve_secretkey = public, secret
            dealer.connect(server.endpoint)
            dealer.send(b"stranger")
            strangers.append(dealer)
        wait_until(lambda: server.auth.denied >= 30, what="30 denials")
    warnings = [r for r in caplog.records if r.name == "statbus.pipeline.security.zap"]
    assert 1 <= len(warnings) <= 2  # rate-limited, not one line per stranger
    honest = rig.client(server.endpoint, keys.t1)
    honest.send(b"ok")
    receive(server, lambda g: b"t1:ok" in g)


def test_tcp_without_keys_fails_closed_with_instructions(rig):
    router = rig.socket(zmq.ROUTER)
    with pytest.raises(ConfigError) as info:
        secure_bind(router, "tcp://127.0.0.1:*", TransportSecurity())
    assert "statbus keys generate" in str(info.value) and "--insecure" in str(info.value)
    assert router.last_endpoint == b""  # nothing was bound


def test_insecure_plain_tcp_works_and_warns(rig, caplog):
    with caplog.at_level(logging.WARNING, logger="statbus.pipeline.security.curve"):
        server = tcp(rig, TransportSecurity(insecure=True))
    assert server.auth is None
    assert any(r.levelno == logging.WARNING and "INSECURE" in r.getMessage() for r in caplog.records)
    dealer = rig.client(server.endpoint, None)
    dealer.send(b"plain")
    receive(server, lambda g: b":plain" in g)


@pytest.mark.parametrize("problem", ["secret_mode", "malformed", "missing", "public_only", "allow_dir_open"])
def test_bad_server_keys_are_refused_naming_the_file(rig, keys, problem):
    secret = keys.server.server_secret_file
    allow = keys.allow
    if problem == "secret_mode":
        os.chmod(secret, 0o644)
        expect = ["chmod 600", secret]
    elif problem == "malformed":
        with open(secret) as handle:
            text = handle.read().replace('secret-key = "', 'secret-key = "x', 1)
        with open(secret, "w") as handle:
            handle.write(text)
        expect = [secret, "damaged"]
    elif problem == "missing":
        os.unlink(secret)
        expect = [secret, "statbus keys generate"]
    elif problem == "public_only":
        secret = keys.server.server_secret_file[: -len("_secret")]
        expect = [secret, "key_secret"]
    else:
        os.chmod(allow, 0o777)
        expect = [allow, "chmod 700"]
    router = rig.socket(zmq.ROUTER)
    with pytest.raises(ConfigError) as info:
        secure_bind(router, "tcp://127.0.0.1:*", TransportSecurity(secret, allow))
    for fragment in expect:
        assert fragment in str(info.value)
    assert router.last_endpoint == b""


def test_half_configured_security_is_refused():
    with pytest.raises(ConfigError, match="allow-list"):
        TransportSecurity(server_secret_file="x.key_secret")
    with pytest.raises(ConfigError, match="STATBUS_SERVER_KEY"):
        ClientSecurity(client_secret_file="t1.key_secret")


def test_client_security_from_env():
    assert not client_security_from_env({}).has_keys
    env = {"STATBUS_CLIENT_KEY": "/k/t1.key_secret", "STATBUS_SERVER_KEY": "/k/server.key"}
    assert client_security_from_env(env) == ClientSecurity("/k/t1.key_secret", "/k/server.key")
    with pytest.raises(ConfigError, match="STATBUS_CLIENT_KEY"):
        client_security_from_env({"STATBUS_SERVER_KEY": "/k/server.key"})


def test_authenticator_stop_closes_its_sockets(rig, keys):
    auth = Authenticator(rig.ctx, keys.allow)
    assert auth.running
    auth.stop()
    auth.stop()  # idempotent
    assert not auth.running
    # The ZAP endpoint is free again: the handler's socket really closed.  ZeroMQ releases
    # an endpoint once its reaper thread has processed the close, a moment after
    # close() returns, so the bind is retried until that happened (or the wait fails).
    probe = rig.socket(zmq.REP)

    def bound() -> bool:
        try:
            probe.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE:
                raise
            return False
        return True

    wait_until(bound, what="the ZAP endpoint to be free after stop()")


def test_context_term_without_stop_does_not_hang(keys):
    # Its own context: term() while the authenticator runs is what is tested, with a deadline of its own.
    ctx = zmq.Context()
    auth = Authenticator(ctx, keys.allow)
    terminator = threading.Thread(target=ctx.term, daemon=True)
    terminator.start()
    terminator.join(TIMEOUT)
    assert not terminator.is_alive(), "context.term() hung on the authenticator's sockets"
    auth.stop()
    assert not auth.running


def test_handshake_failure_hint_ignores_other_events():
    assert handshake_failure_hint(zmq.EVENT_CONNECTED, 7) is None
    assert handshake_failure_hint(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0) is None


# ---- ipc --------------------------------------------------------------------------------------


def _private_dir(tmp_path, mode: int) -> str:
    path = tmp_path / "s"
    path.mkdir()
    os.chmod(path, mode)
    return str(path)


def test_ipc_in_private_dir_needs_no_keys(rig, tmp_path):
    directory = _private_dir(tmp_path, 0o700)
    server = rig.server(f"ipc://{directory}/data", TransportSecurity())
    assert server.auth is None
    dealer = rig.client(server.endpoint, ClientSecurity())
    dealer.send(b"local")
    receive(server, lambda g: b":local" in g)


@pytest.mark.parametrize("mode", [0o755, 0o770, 0o701])
def test_ipc_dir_others_can_enter_is_refused(rig, tmp_path, mode):
    directory = _private_dir(tmp_path, mode)
    router = rig.socket(zmq.ROUTER)
    with pytest.raises(ConfigError, match="chmod 700"):
        secure_bind(router, f"ipc://{directory}/data", TransportSecurity())
    assert not os.path.exists(os.path.join(directory, "data"))


def test_ipc_abstract_and_overlong_paths_are_refused(rig, tmp_path):
    router = rig.socket(zmq.ROUTER)
    with pytest.raises(ConfigError, match="abstract"):
        secure_bind(router, "ipc://@statbus-test", TransportSecurity())
    directory = _private_dir(tmp_path, 0o700)
    with pytest.raises(ConfigError, match="107"):
        secure_bind(router, f"ipc://{directory}/{'x' * 120}", TransportSecurity())
    with pytest.raises(ConfigError, match="only ipc"):
        secure_bind(router, "ws://127.0.0.1:1", TransportSecurity())
