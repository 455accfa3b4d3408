"""CURVE end to end: a collector subprocess on loopback tcp, trainer subprocesses with keys.

Authorized trainers deliver every value (read back from the journal); clients
without CURVE, with an unknown key, with the wrong server key or with a revoked key
deliver nothing; a tcp bind without keys fails closed; and a trainer started before
its key was authorized delivers once ``statbus keys authorize`` has run (the client
replaces a socket the collector refused).  Raw trainers on an open connection: a key revoked
meanwhile is told so and refused; plain tcp needs ``--insecure``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Dict, List

import pytest
import zmq

from collector_helpers import REPO, CollectorProcess, RawTrainer, journal_frames, journal_summaries, settle, wait_for
from statbus.pipeline.cli.keys import run_authorize, run_revoke
from statbus.pipeline.control import control_request
from statbus.pipeline.security import keyfiles
from statbus.pipeline.security.curve import ClientSecurity, secure_connect
from statbus.pipeline.wire import encode_frame, stat_record, write_record
from statbus.plugins.records import pack_values
from waiting import wait_monitor_event

VALUES = 600
WRITE_EVERY = 150
FAILED_HANDSHAKE = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL

TRAINER = """
import sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
import statbus.pipeline as sp
from statbus.pipeline import StatsReporter
n = int(sys.argv[1])
r = StatsReporter(f"T{n}")
for i in range(%(values)d):
    r.add_stat("v", n * 1e6 + i + 0.25)
    if i %% %(every)d == %(every)d - 1:
        r.write_stats(i)
ok = sp.flush(%(flush)s)
print("flushed" if ok else "not flushed", sp.client_counters(), flush=True)
sys.exit(0 if ok else 3)
"""


def stat(category: str, key: str, values: List[float]) -> list:
    return stat_record(category, key, 0, 0, pack_values(values))


def expected_summaries(n: int) -> List[tuple]:
    values = [n * 1e6 + i + 0.25 for i in range(VALUES)]
    return [
        (f"T{n}", step, {"v": (0, values[step - WRITE_EVERY + 1: step + 1])})
        for step in range(WRITE_EVERY - 1, VALUES, WRITE_EVERY)
    ]


def delivered(journal_dir: str, n: int) -> List[tuple]:
    return [s for s in journal_summaries(journal_dir) if s[0] == f"T{n}"]


class Trainer:
    """A trainer subprocess; output goes to a file so a test can watch it while it runs."""

    def __init__(self, tmp_path, n: int, address: str, client_secret: str, server_public: str, flush: float = 60) -> None:
        self.log_path = str(tmp_path / f"trainer-{n}.log")
        env = dict(os.environ)
        env.update(
            STATBUS_ADDRESS=address, STATBUS_CLIENT_KEY=client_secret, STATBUS_SERVER_KEY=server_public,
            STATBUS_AUTOSTART="0", STATBUS_RUN_ID="run", STATBUS_RESULTS_DIR=str(tmp_path / "elsewhere"),
            PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
        )
        code = TRAINER % {"values": VALUES, "every": WRITE_EVERY, "flush": flush}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code, str(n)], env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def finish(self, timeout: float = 90) -> str:
        code = self.process.wait(timeout=timeout)
        assert code == 0, f"trainer exited {code}:\n{self.log()}"
        return self.log()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


@pytest.fixture
def keys(tmp_path) -> SimpleNamespace:
    server_dir = str(tmp_path / "server-keys")
    server_public, _ = keyfiles.generate_key_pair(server_dir)
    other_public, _ = keyfiles.generate_key_pair(str(tmp_path / "other-server"))
    trainers = str(tmp_path / "trainer-keys")
    pairs = {name: keyfiles.generate_key_pair(trainers, name) for name in ("t1", "t2", "t3", "late", "stranger")}
    allow = str(tmp_path / "allow")
    keyfiles.ensure_key_dir(allow)
    for name in ("t1", "t2", "t3"):
        assert run_authorize(SimpleNamespace(allow_dir=allow, public_key_file=pairs[name][0], name=None, force=False)) == 0
    return SimpleNamespace(server_dir=server_dir, server_public=server_public, other_public=other_public,
                           allow=allow, pairs=pairs)


@pytest.fixture
def collector(collectors, keys) -> SimpleNamespace:
    """The shared family's collector, bound to tcp with CURVE keys and an allow-list."""
    process = collectors(
        extra=["--no-plugins", "--bind", "tcp://127.0.0.1:*", "--key-dir", keys.server_dir, "--allow-dir", keys.allow],
    )
    with open(process.ready_file, encoding="utf-8") as handle:
        address = json.load(handle)["data"]
    assert address.startswith("tcp://127.0.0.1:")
    return SimpleNamespace(process=process, address=address, journal=process.layout.journal_dir,
                           ctl=process.layout.control_address)


def status(collector: SimpleNamespace) -> Dict:
    return control_request(collector.ctl, {"op": "status"}, timeout=10)


def wait_event(mon: zmq.Socket, mask: int, timeout: float = 20.0) -> dict:
    return wait_monitor_event(mon, mask, timeout)


def intruder_frames(name: str) -> List[bytes]:
    return [
        encode_frame(name, seq, 1, 0, [stat_record("Intruder", "x", 0, 0, pack_values([666.0])), write_record("Intruder", seq)])
        for seq in range(1, 6)
    ]


# --- tests ---------------------------------------------------------------------------------------


def test_authorized_trainers_deliver_every_value(tmp_path, keys, collector):
    trainers = []
    try:
        for n, name in enumerate(("t1", "t2", "t3"), start=1):
            public, secret = keys.pairs[name]
            trainers.append(Trainer(tmp_path, n, collector.address, secret, keys.server_public))
        for trainer in trainers:
            assert "flushed" in trainer.finish()
        for n in (1, 2, 3):
            assert delivered(collector.journal, n) == expected_summaries(n)
        report = status(collector)
        assert report["intake"]["rejected"] == 0
        assert report["intake"]["values"] == 3 * VALUES
    finally:
        for trainer in trainers:
            trainer.close()


@pytest.mark.parametrize("intruder", ["no_curve", "unknown_key", "wrong_server_key"])
def test_unauthorized_clients_deliver_nothing(tmp_path, keys, collector, context, intruder):
    stranger_public, stranger_secret = keys.pairs["stranger"]
    t1_public, t1_secret = keys.pairs["t1"]
    settings = {
        "no_curve": None,
        "unknown_key": ClientSecurity(stranger_secret, keys.server_public),
        "wrong_server_key": ClientSecurity(t1_secret, keys.other_public),
    }[intruder]
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    mon = sock.get_monitor_socket()
    trainer = None
    try:
        secure_connect(sock, collector.address, settings)
        for frame in intruder_frames(f"intruder-{intruder}"):
            sock.send(frame, zmq.NOBLOCK)  # queued: IMMEDIATE is off, as a naive client's would be
        wait_event(mon, FAILED_HANDSHAKE)
        # An honest trainer delivers after the intruder was turned away ...
        trainer = Trainer(tmp_path, 1, collector.address, t1_secret, keys.server_public)
        trainer.finish()
        assert delivered(collector.journal, 1) == expected_summaries(1)
        # ... and not one frame of the intruder's is in the journal, nor an ack on its socket.
        assert not [s for s, _ in journal_frames(collector.journal) if s.startswith("intruder")]
        assert not [s for s in journal_summaries(collector.journal) if s[0] == "Intruder"]
        assert not sock.poll(100)
        assert collector.process.process.poll() is None
    finally:
        if trainer is not None:
            trainer.close()
        sock.disable_monitor()
        mon.close(linger=0)
        sock.close(linger=0)


def test_revoked_key_delivers_nothing_more(tmp_path, keys, collector, context):
    t3_public, t3_secret = keys.pairs["t3"]
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    later = context.socket(zmq.DEALER)
    later.setsockopt(zmq.LINGER, 0)
    later_mon = later.get_monitor_socket()
    trainer = None
    try:
        security = ClientSecurity(t3_secret, keys.server_public)
        secure_connect(sock, collector.address, security)
        frames = intruder_frames("revoked-t3")
        sock.send(frames[0])
        assert sock.poll(20_000), "no ack for the authorized frame"
        sock.recv()
        assert [s for s, _ in journal_frames(collector.journal) if s == "revoked-t3"] == ["revoked-t3"]

        assert run_revoke(SimpleNamespace(allow_dir=keys.allow, name="t3")) == 0
        # On the open connection: each frame is checked against the allow-list (re-read at most once a second).
        def refused_on_open_connection() -> bool:
            sock.send(frames[1], zmq.NOBLOCK)
            return status(collector)["intake"]["rejects"].get("revoked", 0) > 0

        wait_for(refused_on_open_connection, timeout=30, interval=0.2, what="frames of the revoked key refused")
        # Within the second before the allow-list is re-read, frame 2 may still have got in; from now on nothing.
        before = [seq for s, seq in journal_frames(collector.journal) if s == "revoked-t3"]
        assert before in ([1], [1, 2])
        for frame in frames[len(before):]:
            sock.send(frame, zmq.NOBLOCK)
        # A new connection with the revoked key is turned away at the handshake.
        secure_connect(later, collector.address, security)
        for frame in frames[len(before):]:
            later.send(frame, zmq.NOBLOCK)
        assert wait_event(later_mon, FAILED_HANDSHAKE)["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH

        t1_public, t1_secret = keys.pairs["t1"]
        trainer = Trainer(tmp_path, 1, collector.address, t1_secret, keys.server_public)
        trainer.finish()
        assert delivered(collector.journal, 1) == expected_summaries(1)
        assert [seq for s, seq in journal_frames(collector.journal) if s == "revoked-t3"] == before
        wait_for(lambda: status(collector)["intake"]["rejects"]["revoked"] >= 1 + len(frames) - len(before),
                 timeout=30, interval=0.2, what="every later frame on the open connection counted as revoked")
    finally:
        if trainer is not None:
            trainer.close()
        later.disable_monitor()
        later_mon.close(linger=0)
        for s in (later, sock):
            s.close(linger=0)


def test_tcp_without_keys_fails_closed_with_a_helpful_message(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "statbus.pipeline", "--run-id", "run", "--results-dir", str(tmp_path / "results"),
         "--no-plugins", "--bind", "tcp://127.0.0.1:*"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    output = process.stdout + process.stderr
    assert process.returncode != 0, output
    assert "without CURVE keys" in output and "statbus keys generate" in output and "--insecure" in output
    assert "statbus collector ready" not in output


def test_trainer_started_before_its_key_was_authorized_delivers_after_authorize(tmp_path, keys, collector):
    late_public, late_secret = keys.pairs["late"]
    trainer = Trainer(tmp_path, 4, collector.address, late_secret, keys.server_public, flush=90)
    try:
        wait_for(lambda: "statbus keys authorize" in trainer.log() or trainer.process.poll() is not None,
                 timeout=30, interval=0.1, what="the trainer to be refused and say how to fix it")
        assert trainer.process.poll() is None, trainer.log()
        assert delivered(collector.journal, 4) == []
        result = subprocess.run(
            [sys.executable, "-m", "statbus.pipeline.cli", "keys", "authorize", "--allow-dir", keys.allow, late_public],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        log = trainer.finish(timeout=110)
        assert "flushed" in log and "'reconnects': 0" not in log
        assert "trying again" in log
        assert delivered(collector.journal, 4) == expected_summaries(4)
    finally:
        trainer.close()


def test_connection_flood_on_tcp_leaves_authorized_trainers_served(tmp_path, keys, collector, context):
    import socket as pysocket

    port = int(collector.address.rsplit(":", 1)[1])
    held: List[pysocket.socket] = []
    strangers: List[zmq.Socket] = []
    trainers: List[Trainer] = []
    try:
        # Plain connections (garbage, half a ZMTP greeting, or silence), held open ...
        for i in range(300):
            conn = pysocket.create_connection(("127.0.0.1", port), timeout=20)
            if i % 3 == 0:
                conn.sendall(os.urandom(64))
            elif i % 3 == 1:
                conn.sendall(b"\xff" + b"\x00" * 8 + b"\x7f\x03")
            held.append(conn)
        # ... and CURVE clients with keys nobody authorized, sending frames.
        server_public = keyfiles.read_public_key(keys.server_public)
        for i in range(30):
            public, secret = zmq.curve_keypair()
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.curve_serverkey, dealer.curve_publickey, dealer.curve_secretkey = server_public, public, secret
            dealer.connect(collector.address)
            strangers.append(dealer)
            for frame in intruder_frames(f"stranger-{i}"):
                dealer.send(frame, zmq.NOBLOCK)
        for n, name in ((1, "t1"), (2, "t2")):
            trainers.append(Trainer(tmp_path, n, collector.address, keys.pairs[name][1], keys.server_public))
        for trainer in trainers:
            trainer.finish()
        for n in (1, 2):
            assert delivered(collector.journal, n) == expected_summaries(n)
        assert not [s for s, _ in journal_frames(collector.journal) if s.startswith("stranger")]
        assert collector.process.process.poll() is None
        assert status(collector)["intake"]["values"] == 2 * VALUES
    finally:
        for trainer in trainers:
            trainer.close()
        for dealer in strangers:
            dealer.close(linger=0)
        for conn in held:
            conn.close()


def test_curve_trainers_and_a_revoked_key_on_an_open_connection(tmp_path, context):
    server_pub, _ = keyfiles.generate_key_pair(str(tmp_path / "server"))
    t1_pub, t1_sec = keyfiles.generate_key_pair(str(tmp_path / "trainers"), "t1")
    _, t2_sec = keyfiles.generate_key_pair(str(tmp_path / "trainers"), "t2")
    allow = str(tmp_path / "allow")
    assert run_authorize(SimpleNamespace(allow_dir=allow, public_key_file=t1_pub, name=None, force=False)) == 0
    process = CollectorProcess(
        str(tmp_path / "results"),
        extra=["--no-plugins", "--bind", "tcp://127.0.0.1:0", "--key-dir", str(tmp_path / "server"), "--allow-dir", allow],
    )
    t1 = t2 = None
    try:
        process.start()
        with open(process.ready_file, encoding="utf-8") as handle:
            address = json.load(handle)["data"]
        t1 = RawTrainer(context, address, "t1", ClientSecurity(t1_sec, server_pub))
        t2 = RawTrainer(context, address, "t2", ClientSecurity(t2_sec, server_pub))  # not authorized
        t1.frame([stat("C", "k", [1.0]), write_record("C", 1)])
        t2.frame([stat("C", "k", [666.0])])
        settle([t1])
        assert not t2.pump() and t2.acked == 0
        assert run_revoke(SimpleNamespace(allow_dir=allow, name="t1")) == 0

        def revoked_count():
            status = control_request(process.layout.control_address, {"op": "status"}, timeout=10)
            return status["intake"]["rejects"].get("revoked", 0)

        # The allow-list is re-read at most once a second: frames sent meanwhile may still pass.
        def refused():
            t1.frame([stat("C", "late", [2.0])])
            t1.pump()
            return revoked_count() > 0

        wait_for(refused, interval=0.2, what="the revoked key's frames to be refused")
        last = t1.frame([stat("C", "k", [3.0]), write_record("C", 3)])
        seen = revoked_count()
        wait_for(lambda: t1.resend() or revoked_count() > seen + 2, interval=0.2, what="more refusals")
        t1.pump()
        assert t1.acked < last
        assert t1.refusals and {r.value for r in t1.refusals} == {"revoked"}  # told, not left re-sending
        assert ("t1", last) not in journal_frames(process.layout.journal_dir)
        assert journal_summaries(process.layout.journal_dir) == [("C", 1, {"k": (0, [1.0])})]
        assert "t2" not in [s for s, _ in journal_frames(process.layout.journal_dir)]
    finally:
        for t in (t1, t2):
            if t is not None:
                t.close()
        process.close()


def test_plain_tcp_with_the_insecure_flag(tmp_path, context):
    process = CollectorProcess(str(tmp_path / "results"), extra=["--no-plugins", "--bind", "tcp://127.0.0.1:0", "--insecure"])
    t = None
    try:
        process.start()
        with open(process.ready_file, encoding="utf-8") as handle:
            address = json.load(handle)["data"]
        assert address.startswith("tcp://127.0.0.1:") and not address.endswith(":0")
        assert "INSECURE" in process.log()
        t = RawTrainer(context, address, "remote")
        t.frame([stat("C", "k", [1.0]), write_record("C", 1)])
        settle([t])
        assert journal_summaries(process.layout.journal_dir) == [("C", 1, {"k": (0, [1.0])})]
    finally:
        if t is not None:
            t.close()
        process.close()


def test_insecure_tcp_is_refused(tmp_path):
    process = CollectorProcess(str(tmp_path / "results"), extra=["--no-plugins", "--bind", "tcp://127.0.0.1:0"])
    try:
        with pytest.raises(AssertionError, match="exited with 64"):
            process.start(timeout=30)
        assert "CURVE" in process.log()
    finally:
        process.close()

