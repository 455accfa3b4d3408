"""On tcp:// with CURVE a sender belongs to the key that first used it, and a revoked
key's trainer is told so and stops re-sending.  Real CURVE sockets on 127.0.0.1, a real collector
process and a real trainer process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import msgpack
import pytest
import zmq

from collector_helpers import REPO, CollectorProcess, journal_frames, wait_for
from statbus.pipeline.cli.keys import run_authorize, run_revoke
from statbus.pipeline.control import control_request
from statbus.pipeline.journal.writer import EntryType, iter_entries
from statbus.pipeline.security import keyfiles
from statbus.pipeline.security.curve import ClientSecurity, secure_connect
from statbus.pipeline.wire import Refusal, decode_ack_or_refusal, encode_frame, stat_record
from statbus.plugins.records import pack_values
from waiting import holds_for


@pytest.fixture
def keys(tmp_path) -> SimpleNamespace:
    server_dir = str(tmp_path / "server-keys")
    server_public, _ = keyfiles.generate_key_pair(server_dir)
    pairs = {name: keyfiles.generate_key_pair(str(tmp_path / "trainer-keys"), name) for name in ("t1", "t2", "t3")}
    allow = str(tmp_path / "allow")
    keyfiles.ensure_key_dir(allow)
    for name in pairs:
        assert run_authorize(SimpleNamespace(allow_dir=allow, public_key_file=pairs[name][0], name=None, force=False)) == 0
    return SimpleNamespace(server_dir=server_dir, server_public=server_public, allow=allow, pairs=pairs)


class CurveCollector:
    """A running collector of the shared family, bound to tcp with CURVE keys and an allow-list."""

    def __init__(self, process: CollectorProcess) -> None:
        self.process = process
        self.journal = process.layout.journal_dir
        self._read_address()

    def start(self) -> "CurveCollector":
        """Start the process again (after a kill); its address is read anew."""
        self.process.start()
        self._read_address()
        return self

    def _read_address(self) -> None:
        with open(self.process.ready_file, encoding="utf-8") as handle:
            self.address = json.load(handle)["data"]

    def status(self) -> dict:
        return control_request(self.process.layout.control_address, {"op": "status"}, timeout=10)


@pytest.fixture
def curve_collector(collectors, keys) -> CurveCollector:
    return CurveCollector(collectors(
        extra=["--no-plugins", "--bind", "tcp://127.0.0.1:*", "--key-dir", keys.server_dir, "--allow-dir", keys.allow],
    ))


def connect(context, collector, keys, name):
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    secure_connect(sock, collector.address, ClientSecurity(keys.pairs[name][1], keys.server_public))
    return sock


def frame(sender: str, seq: int) -> bytes:
    return encode_frame(sender, seq, 1, 0, [stat_record("C", "x", 0, 0, pack_values([float(seq)]))])


def reply(sock) -> tuple:
    assert sock.poll(20_000), "no reply from the collector"
    return decode_ack_or_refusal(sock.recv())


def test_a_sender_belongs_to_the_key_that_first_used_it_across_restarts(keys, curve_collector, context):
    owner, forger = connect(context, curve_collector, keys, "t1"), connect(context, curve_collector, keys, "t2")
    try:
        owner.send(frame("victim", 1))
        assert reply(owner) == (1, None)
        # Another authorized key knows the sender id and forges its next frame: refused, not acked.
        forger.send(frame("victim", 2))
        assert reply(forger) == (0, Refusal.WRONG_KEY)
        assert curve_collector.status()["intake"]["rejects"]["wrong_key"] == 1
        owner.send(frame("victim", 2))
        assert reply(owner) == (2, None)
        assert [seq for s, seq in journal_frames(curve_collector.journal) if s == "victim"] == [1, 2]

        # The binding outlives the collector.
        curve_collector.process.kill()
        curve_collector.start()
        for sock in (owner, forger):
            sock.close(linger=0)
        owner, forger = connect(context, curve_collector, keys, "t1"), connect(context, curve_collector, keys, "t2")
        forger.send(frame("victim", 3))
        assert reply(forger) == (0, Refusal.WRONG_KEY)
        owner.send(frame("victim", 3))
        assert reply(owner) == (3, None)
        assert [seq for s, seq in journal_frames(curve_collector.journal) if s == "victim"] == [1, 2, 3]
        # A sender of its own is the forger's to use.
        forger.send(frame("t2-own", 1))
        assert reply(forger) == (1, None)
    finally:
        owner.close(linger=0)
        forger.close(linger=0)


TRAINER = r"""
import json, os, sys, time
import statbus.pipeline as sp
from statbus.pipeline import StatsReporter
stop_file = sys.argv[1]
reporter = StatsReporter("T")
step = 0
while not os.path.exists(stop_file):
    step += 1
    reporter.add_stat("v", float(step))
    reporter.write_stats(step)
    time.sleep(0.02)  # paces the training: a steady stream of frames, not a flood
flushed = sp.flush(1.0)
print(json.dumps(sp.client_counters()), flush=True)
"""


def test_a_revoked_trainer_is_told_why_and_stops_resending(tmp_path, keys, curve_collector):
    stop_file = str(tmp_path / "stop")
    log_path = str(tmp_path / "trainer.log")
    env = dict(os.environ)
    env.update(
        STATBUS_ADDRESS=curve_collector.address, STATBUS_CLIENT_KEY=keys.pairs["t3"][1], STATBUS_SERVER_KEY=keys.server_public,
        STATBUS_AUTOSTART="0", STATBUS_RUN_ID="run", STATBUS_RESULTS_DIR=str(tmp_path / "elsewhere"),
        PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
    )
    with open(log_path, "wb") as log:
        trainer = subprocess.Popen([sys.executable, "-c", TRAINER, stop_file], env=env, stdout=subprocess.PIPE,
                                   stderr=log, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: curve_collector.status()["intake"]["frames"] >= 3, 60, what="the trainer's frames accepted")
        assert run_revoke(SimpleNamespace(allow_dir=keys.allow, name="t3")) == 0

        def told() -> bool:
            with open(log_path, encoding="utf-8", errors="replace") as handle:
                return "revoked" in handle.read()

        wait_for(told, 60, interval=0.1, what="the trainer telling its user that its key was revoked")
        # The refusal stops the re-sending: what was in flight arrives, then nothing more, while the
        # trainer keeps recording (a new connection is refused at the handshake, and backs off).
        refused = lambda: curve_collector.status()["intake"]["rejects"].get("revoked", 0)  # noqa: E731
        last = {"count": refused(), "since": time.monotonic()}

        def unchanged_for_a_second() -> bool:
            count = refused()
            if count != last["count"]:
                last.update(count=count, since=time.monotonic())
            return time.monotonic() - last["since"] >= 1.0

        wait_for(unchanged_for_a_second, 60, interval=0.1, what="the refusals of what was in flight to end")
        settled = last["count"]
        # longer than the client's first re-send interval (1 s) and its reconnect pause
        holds_for(lambda: refused() == settled, 3.0, interval=0.1, what="the revoked trainer is still re-sending")
        assert trainer.poll() is None

        with open(stop_file, "w"):
            pass
        out, _ = trainer.communicate(timeout=60)
        counters = json.loads(out.decode().strip().splitlines()[-1])
        assert counters["refusals"] >= 1
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            lines = [line for line in handle if "refuses this trainer's stats" in line]
        assert len(lines) == 1, lines
        assert "statbus keys authorize" in lines[0]
    finally:
        if trainer.poll() is None:
            trainer.kill()
        trainer.wait(timeout=30)
        if trainer.stdout is not None:
            trainer.stdout.close()


def test_a_forged_bad_frame_is_not_consumed_in_the_owners_place(keys, curve_collector, context):
    owner, forger = connect(context, curve_collector, keys, "t1"), connect(context, curve_collector, keys, "t2")
    try:
        owner.send(frame("victim", 1))
        assert reply(owner) == (1, None)
        # A frame with a bad record and the owner's next seq would be consumed (journaled empty,
        # acked) if it came from the owner's key; from another key it is refused untouched.
        bad = encode_frame("victim", 2, 1, 0, [stat_record("C", "x", 0, 0, b"not 8-byte floats")])
        forger.send(bad)
        assert reply(forger) == (0, Refusal.WRONG_KEY)
        owner.send(frame("victim", 2))
        assert reply(owner) == (2, None)
        journaled = [msgpack.unpackb(e.payload, raw=False) for e in iter_entries(curve_collector.journal)
                     if e.type == EntryType.FRAME]
        assert [(f[2], len(f[5])) for f in journaled if f[1] == "victim"] == [(1, 1), (2, 1)]  # the owner's, not empty
        rejects = curve_collector.status()["intake"]["rejects"]
        assert rejects.get("wrong_key") == 1 and not rejects.get("bad_record")
    finally:
        owner.close(linger=0)
        forger.close(linger=0)
