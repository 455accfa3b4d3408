"""Hostile input against a live collector, while honest trainers run; and the per-sender bounds.

The live run: a collector subprocess (journal on, no plugins), three trainer
subprocesses recording known values through ``StatsReporter``, and an attacker in
this process sending well over 100,000 hostile frames over several DEALER sockets.
Afterwards every honest value is in the journal's summaries exactly once and in
order, the collector is alive and counted the rejects by reason, and its RSS stayed
under ``RSS_LIMIT``.

What dedupe by (sender, seq) can and cannot do against a peer that uses an honest
trainer's sender id: re-sent (replayed) frames with a seq at or below what the
collector already accepted are duplicates, and frames far ahead are gaps: both are
dropped, whatever they carry, so honest data stays exact — that is asserted here.
It cannot tell a forged frame that carries exactly the *next* seq (or a ``lowest_sendable``
that skips ahead) from the trainer's own: on ipc every peer is the same user (the
0700 socket directory is the boundary), and on tcp only CURVE keys let a peer in.
Such frames are not sent here, because nothing the collector could do would make
the honest data exact after them.
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
import subprocess
import sys
import time
from typing import Dict, List

import msgpack
import psutil
import zmq

from collector_helpers import REPO, CollectorProcess, journal_frames, journal_summaries, wait_for
from statbus.pipeline.collector.intake import Intake, Verdict
from statbus.pipeline.collector.loop import DATA_MAXMSGSIZE
from statbus.pipeline.control import control_request
from statbus.pipeline.wire import (
    MAX_FRAME_BYTES,
    RejectReason,
    WireError,
    decode_frame,
    encode_frame,
    hello_record,
    property_record,
    stat_record,
    write_record,
)
from statbus.plugins.records import pack_values

HOSTILE_FRAMES = 110_000
ATTACK_SOCKETS = 4
VALID_ATTACKER_SENDERS = 2_000
"""Valid frames under invented sender names (accepted: any local peer may send data); well
under the sender table's cap, whose eviction is tested in process below."""
RSS_LIMIT = 300 << 20
"""Generous: the collector idles at ~40 MB; the attack's queued frames and the sender
table add tens of MB.  A leak per hostile frame (110,000 of them) would pass it."""
TRAINERS = 3
POISON = 666.0

TRAINER = """
import os, sys, time, warnings
warnings.simplefilter("ignore", DeprecationWarning)
import statbus.pipeline as sp
from statbus.pipeline import StatsReporter
n, marks = int(sys.argv[1]), sys.argv[2]
r = StatsReporter(f"T{n}")
i = 0
def record(count):
    global i
    for _ in range(count):
        r.add_stat("v", n * 1e6 + i + 0.5)
        i += 1
    r.write_stats(i)
record(50)
assert sp.flush(60), "first values not acked"
c = sp.client_counters()
with open(os.path.join(marks, f"t{n}.json.tmp"), "w") as f:
    f.write('{"sender": "%s", "acked": %d}' % (c["sender"], c["acked_seq"]))
os.replace(os.path.join(marks, f"t{n}.json.tmp"), os.path.join(marks, f"t{n}.json"))
while not os.path.exists(os.path.join(marks, "stop")):
    record(50)
    time.sleep(0.02)  # paces the honest trainer: a steady stream beside the attack
ok = sp.flush(90)
print(f"VALUES {i} {ok}", flush=True)
sys.exit(0 if ok else 3)
"""


def honest_summaries(n: int, total: int) -> List[tuple]:
    values = [n * 1e6 + i + 0.5 for i in range(total)]
    return [(f"T{n}", end, {"v": (0, values[end - 50:end])}) for end in range(50, total + 1, 50)]


# --- the hostile frames ---------------------------------------------------------------------------


def _a32(n: int) -> bytes:
    return b"\xdd" + struct.pack(">I", n)


def _m32(n: int) -> bytes:
    return b"\xdf" + struct.pack(">I", n)


def _env(records_raw: bytes, sender_raw: bytes = b"\xa1x", seq_raw: bytes = b"\x01") -> bytes:
    return b"\x96\x01" + sender_raw + seq_raw + b"\x01\x00" + records_raw


def hostile_frames(rng: random.Random, honest: Dict[str, int], count: int) -> List[bytes]:
    """``count`` frames, every family of hostile frame, shuffled; built before the attack starts."""
    good = encode_frame("a", 1, 1, 0, [stat_record("A", "k", 0, 0, pack_values([1.0, 2.0])), write_record("A", 1)])
    senders = list(honest.items())

    def random_bytes() -> bytes:
        return rng.randbytes(rng.randint(0, 300))

    def truncated() -> bytes:
        return good[: rng.randrange(len(good))]

    def huge_headers() -> bytes:
        return rng.choice([
            _env(_a32(2**32 - 1)),
            _env(b"\x91\x94\x02\xa1c\xa8selfplay" + _m32(2**32 - 1)),
            _a32(100_000) * rng.randint(10, 1100),
            _m32(4096) * rng.randint(10, 1100),
            _env(b"\x91\x94\x02\xa1c\xa8selfplay" + _a32(90_000) * 600),
        ])

    def deep() -> bytes:
        return rng.choice([b"\x91" * rng.randint(20, 3000), _env(b"\x91\x94\x02\xa1c\xa8selfplay" + b"\x91" * 40 + b"\xc0")])

    def wrong_types() -> bytes:
        envelope = [1, "w", 1, 1, 0, [[0, "c", "k", 0, 0, pack_values([1.0])]]]
        path = rng.choice([[0], [1], [2], [3], [4], [5], [5, 0, 0], [5, 0, 1], [5, 0, 3], [5, 0, 4], [5, 0, 5]])
        value = rng.choice([None, True, 1.5, "s", b"b", [], {}, -1, 2**64 - 1, [1, 2]])
        target = envelope
        for i in path[:-1]:
            target = target[i]
        target[path[-1]] = value
        return msgpack.packb(envelope, use_bin_type=True)

    def non_string_keys() -> bytes:
        return _env(b"\x91\x92\x04" + rng.choice([b"\x81\x01\x01", b"\x81\xc4\x01k\x01", b"\x81\x80\x01", b"\x81\x90\x01"]))

    def bad_utf8() -> bytes:
        return rng.choice([_env(b"\x90", sender_raw=b"\xa3\xff\xfe\xfd"), _env(b"\x91\x93\x03\xa2\xc3\x28\x01")])

    def unknown_version_or_kind() -> bytes:
        if rng.random() < 0.5:
            return msgpack.packb([rng.choice([0, 2, 99]), "v", 1, 1, 0, []])
        return encode_frame(f"k{rng.randrange(1000)}", 1, 1, 0, [[rng.choice([1, 6, 7, 99, -1]), "c"]])

    def out_of_range() -> bytes:
        seq = rng.choice([0, -1, 2**63])
        return msgpack.packb([1, "r", seq, 0, 0, []]) if seq >= 0 else _env(b"\x90", seq_raw=b"\xff")

    def oversized_strings() -> bytes:
        return _env(b"\x90", sender_raw=rng.choice([b"\xdb\xff\xff\xff\xff", b"\xda\xff\xff" + b"a" * 65535, b"\xc4\x01x"]))

    def nan_inf_valid() -> bytes:
        # Valid frames from invented senders: accepted and journaled (NaN and infinities are values).
        name = f"attacker-{rng.randrange(VALID_ATTACKER_SENDERS)}"
        values = [math.nan, math.inf, -math.inf, rng.random()]
        return encode_frame(name, 1, 1, 0, [stat_record("Attack", "nan", 0, 0, pack_values(values)),
                                            property_record("Attack", "hyperparameters", {"x": math.nan})])

    def replay() -> bytes:
        # An honest trainer's sender id with a seq already accepted (a duplicate) or far ahead (a gap).
        sender, acked = rng.choice(senders)
        seq = rng.randint(1, acked) if rng.random() < 0.6 else rng.randint(10**9, 2**62)
        lowest_sendable = rng.randint(1, min(seq, acked))
        records = [stat_record(f"T{sender[-1]}", "v", 0, 0, pack_values([POISON])), write_record("Poisoned", 1)]
        if rng.random() < 0.2:
            records.append([42])  # a bad record too: never consumed, it is not the next seq
        return encode_frame(sender.rsplit("#", 1)[0], seq, lowest_sendable, 0, records)

    families = [random_bytes, truncated, huge_headers, deep, wrong_types, non_string_keys, bad_utf8,
                unknown_version_or_kind, out_of_range, oversized_strings, nan_inf_valid, replay]
    frames = [families[i % len(families)]() for i in range(count)]
    rng.shuffle(frames)
    return frames


# --- the live run ---------------------------------------------------------------------------------


class Fleet:
    """Trainer subprocesses; each killed and reaped in ``close``."""

    def __init__(self, tmp_path, address: str) -> None:
        self.marks = str(tmp_path / "marks")
        os.makedirs(self.marks)
        env = dict(os.environ)
        env.update(STATBUS_ADDRESS=address, STATBUS_AUTOSTART="0", STATBUS_RUN_ID="run",
                   STATBUS_RESULTS_DIR=str(tmp_path / "elsewhere"),
                   PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
        env.pop("STATBUS_CLIENT_KEY", None)
        env.pop("STATBUS_SERVER_KEY", None)
        self.logs = [str(tmp_path / f"trainer-{n}.log") for n in range(TRAINERS)]
        self.processes: List[subprocess.Popen] = []
        for n in range(TRAINERS):
            with open(self.logs[n], "wb") as log:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-c", TRAINER, str(n), self.marks], env=env, stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                ))

    def started(self) -> Dict[str, int]:
        """``{sender#n: acked seq}`` once every trainer has its first values acked."""
        def ready():
            for n, process in enumerate(self.processes):
                assert process.poll() is None, self.log(n)
            return all(os.path.exists(os.path.join(self.marks, f"t{n}.json")) for n in range(TRAINERS))

        wait_for(ready, timeout=60, interval=0.05, what="trainers to start")
        found = {}
        for n in range(TRAINERS):
            with open(os.path.join(self.marks, f"t{n}.json"), encoding="utf-8") as handle:
                info = json.load(handle)
            found[f"{info['sender']}#{n}"] = info["acked"]
        return found

    def finish(self) -> List[int]:
        with open(os.path.join(self.marks, "stop"), "w"):
            pass
        totals = []
        for n, process in enumerate(self.processes):
            code = process.wait(timeout=100)
            assert code == 0, f"trainer {n} exited {code}:\n{self.log(n)}"
            line = [l for l in self.log(n).splitlines() if l.startswith("VALUES ")][-1]
            totals.append(int(line.split()[1]))
        return totals

    def log(self, n: int) -> str:
        with open(self.logs[n], encoding="utf-8", errors="replace") as handle:
            return handle.read()[-4000:]

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def send_all(sockets: List[zmq.Socket], frames: List[bytes], watch) -> None:
    """Round-robin over the sockets, NOBLOCK; a full socket is skipped until it drains."""
    poller = zmq.Poller()
    for sock in sockets:
        poller.register(sock, zmq.POLLOUT)
    index = 0
    deadline = time.monotonic() + 100
    while index < len(frames):
        ready = [s for s, _ in poller.poll(100)]
        for sock in ready:
            try:
                while index < len(frames):
                    sock.send(frames[index], zmq.NOBLOCK)
                    index += 1
                    if index % 257 == 0:
                        break
            except zmq.Again:
                pass
        watch()
        assert time.monotonic() < deadline, f"attack stalled after {index} frames"


def test_live_fuzz_leaves_honest_data_exact(tmp_path, context):
    collector = CollectorProcess(str(tmp_path / "results"), extra=["--no-plugins"])
    fleet = None
    sockets: List[zmq.Socket] = []
    try:
        collector.start()
        address = collector.layout.data_address
        ctl = collector.layout.control_address
        proc = psutil.Process(collector.process.pid)
        fleet = Fleet(tmp_path, address)
        honest = fleet.started()
        frames = hostile_frames(random.Random(20261125), honest, HOSTILE_FRAMES)
        expected_rejects: Dict[str, int] = {}
        for frame in frames:
            try:
                decode_frame(frame)
            except WireError as exc:
                expected_rejects[exc.reason.value] = expected_rejects.get(exc.reason.value, 0) + 1
        # A few frames past the wire limit (counted, too_large) and past MAXMSGSIZE (the
        # connection is dropped by libzmq before buffering it), on a socket of their own.
        big = context.socket(zmq.DEALER)
        big.setsockopt(zmq.LINGER, 0)
        sockets.append(big)
        big.connect(address)
        for _ in range(2):
            # Valid msgpack past MAX_FRAME_BYTES without a media record (only a frame holding one may be larger).
            big.send(encode_frame("big", 1, 1, 0, [property_record("c", "hyperparameters", b"\x00" * MAX_FRAME_BYTES)]))
        big.send(b"\x00" * (DATA_MAXMSGSIZE + 1))
        expected_rejects["too_large"] = expected_rejects.get("too_large", 0) + 2

        for _ in range(ATTACK_SOCKETS):
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 20_000)
            sockets.append(sock)
            sock.connect(address)

        rss = [proc.memory_info().rss]
        before = {t["sender"]: t["values"] for t in control_request(ctl, {"op": "status"}, 10)["trainers"]}
        send_all(sockets[1:], frames, lambda: rss.append(proc.memory_info().rss))

        def all_rejects_counted() -> bool:
            rss.append(proc.memory_info().rss)
            rejects = control_request(ctl, {"op": "status"}, 10)["intake"]["rejects"]
            return all(rejects.get(reason, 0) >= n for reason, n in expected_rejects.items())

        wait_for(all_rejects_counted, timeout=100, interval=0.2, what="every hostile frame to be judged")
        status = control_request(ctl, {"op": "status"}, 10)
        # Honest trainers went on being journaled and acked during the flood.
        during = {t["sender"]: t["values"] for t in status["trainers"]}
        for sender in honest:
            name = sender.rsplit("#", 1)[0]
            assert during[name] > before[name], f"{name} made no progress during the attack"
        totals = fleet.finish()

        assert collector.process.poll() is None, collector.log()
        assert control_request(ctl, {"op": "ping"}, 10)["ok"]
        summaries = journal_summaries(collector.layout.journal_dir)
        for n, total in enumerate(totals):
            assert [s for s in summaries if s[0] == f"T{n}"] == honest_summaries(n, total)
        assert not [s for s in summaries if s[0] == "Poisoned"]
        status = control_request(ctl, {"op": "status"}, 10)
        rejects = status["intake"]["rejects"]
        for reason in RejectReason:
            assert rejects.get(reason.value, 0) >= expected_rejects.get(reason.value, 0) > 0, (reason, rejects)
        assert status["intake"]["rejected"] >= sum(expected_rejects.values()) >= HOSTILE_FRAMES // 2
        assert status["intake"]["duplicates"] > 0 and status["intake"]["gaps"] > 0  # the replays
        attackers = {s for s, _ in journal_frames(collector.layout.journal_dir) if s.startswith("attacker-")}
        assert 0 < len(attackers) <= VALID_ATTACKER_SENDERS
        rss.append(proc.memory_info().rss)
        assert max(rss) < RSS_LIMIT, f"collector RSS peaked at {max(rss) >> 20} MiB"
    finally:
        for sock in sockets:
            sock.close(linger=0)
        if fleet is not None:
            fleet.close()
        collector.close()


# --- per-sender bounds, in process ----------------------------------------------------------------


def _frame(sender: str, seq: int, lowest_sendable: int = 1, records=()) -> bytes:
    return encode_frame(sender, seq, lowest_sendable, 0, list(records))


def test_strangers_gaps_and_unconsumed_bad_records_leave_no_sender_state():
    intake = Intake(clock=lambda: 0.0)
    assert intake.receive(_frame("stranger", 5), "peer").verdict is Verdict.GAP
    bad = intake.receive(_frame("stranger2", 7, records=[[42]]), "peer")
    assert bad.verdict is Verdict.REJECT and bad.ack == 0 and bad.substitute is None
    assert dict(intake.senders) == {}
    assert intake.gaps == 1 and intake.rejects["bad_record"] == 1
    # the first frame is accepted (and a bad next frame consumed), and only then is the sender known
    assert intake.receive(_frame("s", 1), "peer").verdict is Verdict.ACCEPT
    assert intake.receive(_frame("s", 2, records=[[42]]), "peer").substitute is not None
    assert list(intake.senders) == ["s"] and intake.senders["s"].last_seq == 2


def test_replayed_and_out_of_order_frames_change_nothing():
    intake = Intake(clock=lambda: 0.0)
    for seq in range(1, 6):
        assert intake.receive(_frame("honest", seq), "trainer").verdict is Verdict.ACCEPT
    poison = [stat_record("T", "v", 0, 0, pack_values([POISON]))]
    for seq, lowest_sendable in ((1, 1), (5, 1), (3, 3), (10**9, 1), (10**9, 5)):
        decision = intake.receive(_frame("honest", seq, lowest_sendable, poison), "attacker")
        assert decision.verdict in (Verdict.DUPLICATE, Verdict.GAP) and decision.ack == 5
    assert intake.senders["honest"].last_seq == 5 and intake.accepted_frames == 5
    assert intake.receive(_frame("honest", 6, 6), "trainer").verdict is Verdict.ACCEPT


def test_sender_table_is_capped_and_forgets_the_least_recent():
    intake = Intake(clock=lambda: 0.0, max_senders=3)
    for name in ("a", "b", "c"):
        intake.receive(_frame(name, 1), "p")
    intake.receive(_frame("a", 2), "p")  # a is now the most recent
    for i in range(100):
        assert intake.receive(_frame(f"x{i}", 1), "p").verdict is Verdict.ACCEPT
        assert len(intake.senders) <= 3
    assert intake.evicted == 100
    assert list(intake.senders) == ["x97", "x98", "x99"]
    # A forgotten trainer that speaks again is taken from its lowest_sendable on, as a stranger would be.
    assert intake.receive(_frame("a", 7, 7), "p").verdict is Verdict.ACCEPT
    assert "a" in intake.senders and len(intake.senders) == 3


def test_reject_log_lines_are_bounded_over_all_senders(caplog):
    now = [0.0]
    intake = Intake(clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="statbus.pipeline.collector.intake"):
        for i in range(500):
            intake.receive(msgpack.packb([1, f"s{i}", 0, 0, 0, []]), "p")
        assert len(caplog.records) == 20
        now[0] = 11.0
        intake.receive(msgpack.packb([1, "late", 0, 0, 0, []]), "p")
    assert "480 more lines" in caplog.records[20].getMessage()
    assert intake.rejects["bad_envelope"] == 501


def test_oversized_message_costs_its_sender_the_connection_not_the_collector(tmp_path, context):
    collector = CollectorProcess(str(tmp_path / "results"), extra=["--no-plugins"])
    big = context.socket(zmq.DEALER)
    big.setsockopt(zmq.LINGER, 0)
    mon = big.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    sockets: List[zmq.Socket] = [mon, big]
    try:
        collector.start()
        address = collector.layout.data_address
        big.connect(address)
        big.send(b"\x00" * (DATA_MAXMSGSIZE + 1))  # 72 MiB: past even a frame holding a media value
        assert mon.poll(60_000), "the collector kept a connection that sent 72 MiB in one message"
        honest = context.socket(zmq.DEALER)
        sockets.append(honest)
        honest.setsockopt(zmq.LINGER, 0)
        honest.connect(address)
        honest.send(_frame("honest", 1, records=[hello_record({"pid": 1})]))
        assert honest.poll(30_000), "no ack"
        status = control_request(collector.layout.control_address, {"op": "status"}, 10)
        assert status["intake"]["frames"] == 1 and status["intake"]["rejected"] == 0
        assert psutil.Process(collector.process.pid).memory_info().rss < RSS_LIMIT
    finally:
        big.disable_monitor()
        for sock in sockets:
            sock.close(linger=0)
        collector.close()
