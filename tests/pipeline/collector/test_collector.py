"""The collector: delivery rule, intake, journal, acks, fetch serving, control — with real sockets and processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import msgpack
import pytest
import zmq

from collector_helpers import CollectorProcess, RawTrainer, Worker, journal_frames, journal_summaries, settle, wait_for
from statbus.pipeline.collector.fetch_server import FetchServer
from statbus.pipeline.collector.intake import Intake, Verdict
from statbus.pipeline.control import ControlError, control_request
from statbus.pipeline.journal.writer import EntryType, Journal, JournalReader
from statbus.pipeline.wire import encode_frame, frame_records_bytes, hello_record, property_record, stat_record, write_record
from statbus.plugins.records import PropertyRecord, StatRecord, decode_batch, pack_values
from statbus.workers.fetch_protocol import MAX_FETCH_BYTES, FetchProtocolError, decode_fetch, encode_fetch


def stat(category, key, values, agg=0, op=0):
    return stat_record(category, key, agg, op, pack_values(values))


# --- the delivery rule, without sockets ------------------------------------------------------


def test_delivery_rule_accepts_in_order_and_drops_duplicates_and_gaps():
    intake = Intake(clock=lambda: 0.0)
    f = lambda seq, lowest=1: encode_frame("a", seq, lowest, 0, [stat("C", "k", [seq])])  # noqa: E731
    assert intake.receive(f(1), "x")[:1] + (intake.receive(f(1), "x").ack,) == (Verdict.ACCEPT, 1)
    assert intake.receive(f(3), "x")[0] is Verdict.GAP and intake.senders["a"].last_seq == 1
    decision = intake.receive(f(3), "x")
    assert (decision.verdict, decision.ack) == (Verdict.GAP, 1)
    assert intake.receive(f(2), "x").verdict is Verdict.ACCEPT
    assert intake.receive(f(3), "x").verdict is Verdict.ACCEPT
    assert intake.receive(f(2), "x")[:1] == (Verdict.DUPLICATE,)
    # lowest_sendable: the sender dropped 4..6 for good; 7 is the next expected
    assert intake.receive(f(7, lowest=7), "x").verdict is Verdict.ACCEPT
    assert intake.senders["a"].last_seq == 7
    assert intake.duplicates == 2 and intake.gaps == 2
    assert intake.accepted_values == 4


def test_rejects_are_counted_per_reason_and_sender_and_a_bad_record_is_consumed():
    intake = Intake(clock=lambda: 0.0)
    assert intake.receive(b"\xc1garbage", "conn1").verdict is Verdict.REJECT
    assert intake.receive(encode_frame("a", 1, 1, 0, [stat("C", "k", [1])]), "c").verdict is Verdict.ACCEPT
    bad = encode_frame("a", 2, 1, 0, [[0, "C", "k", 0, 0, b"\x00" * 7]])
    decision = intake.receive(bad, "c")
    assert decision.verdict is Verdict.REJECT and decision.ack == 2
    assert decision.substitute is not None  # an empty frame with seq 2 goes to the journal instead
    assert intake.receive(encode_frame("a", 3, 1, 0, []), "c").verdict is Verdict.ACCEPT
    assert dict(intake.rejects) == {"not_msgpack": 1, "bad_record": 1}
    assert intake.rejects_by_source["conn1"] == 1 and intake.senders["a"].rejects == 1


def test_hello_and_bye_fill_the_sender_table():
    intake = Intake(clock=lambda: 5.0)
    intake.receive(encode_frame("a", 1, 1, 7, [hello_record({"pid": 42, "host": "h", "secret": "x"})]), "c")
    state = intake.senders["a"]
    assert (state.info, state.dropped, state.bye) == ({"pid": 42, "host": "h"}, 7, False)
    restored = Intake()
    restored.restore(msgpack.unpackb(msgpack.packb(intake.snapshot()), raw=False))
    assert restored.senders["a"].last_seq == 1 and restored.senders["a"].info["pid"] == 42


def test_frame_records_bytes_is_the_records_array():
    records = [property_record("C", "hyperparameters", {"lr": 0.1}), stat("C", "k", [1.0, 2.0]), write_record("C", 3)]
    sliced = frame_records_bytes(encode_frame("sender-x", 12, 3, 4, records))
    assert msgpack.unpackb(sliced, raw=False) == msgpack.unpackb(msgpack.packb(records, use_bin_type=True), raw=False)
    decoded = decode_batch(sliced)
    assert [type(r) for r in decoded] == [PropertyRecord, StatRecord]


@pytest.mark.parametrize("bad", [
    b"", msgpack.packb([1, "p", -1, 5]), msgpack.packb([2, "p", 0, 5]), msgpack.packb({}),
    msgpack.packb([1, "p", 0, 0]), msgpack.packb([1, "p", 0, 2**63]), msgpack.packb([1, "", 0, 5]),
    msgpack.packb([1, "p" * 300, 0, 5]), msgpack.packb([1, "p", 0, 5]) + b"\x00" * 5000,
])
def test_bad_fetch_requests_are_refused(bad):
    with pytest.raises(FetchProtocolError):
        decode_fetch(bad)


def test_a_fetch_asking_for_too_much_is_capped():
    # One rule for both ends: any 1 <= max_bytes < 2**63 is valid, and the reply stays bounded.
    assert decode_fetch(encode_fetch("p", 7, 2**63 - 1)) == ("p", 7, MAX_FETCH_BYTES)
    assert decode_fetch(encode_fetch("p", 7, 1)) == ("p", 7, 1)


def test_control_request_without_a_collector_times_out(tmp_path):
    with pytest.raises(ControlError):
        control_request("ipc://" + str(tmp_path / "nobody"), {"op": "ping"}, timeout=0.2)


# --- a collector process ----------------------------------------------------------------------


def test_frames_are_journaled_aggregated_and_acked_across_senders(collector, context):
    layout = collector.layout
    a, b, learner = (RawTrainer(context, layout.data_address, name) for name in ("env-a", "env-b", "learner"))
    try:
        for t in (a, b, learner):
            t.frame([hello_record({"pid": 1, "host": "h"})])
        settle([a, b, learner])
        for step in range(1, 6):
            a.frame([stat("Env", "reward", [step, step + 0.5])])
            settle([a])
            b.frame([stat("Env", "reward", [-step]), stat("Env", "len", [step * 10], agg=2)])
            settle([b])
            learner.frame([stat("Policy", "lr", [0.1], op=1, agg=1), write_record("Env", step), write_record("Policy", step)])
            settle([learner])
        learner.frame([write_record("Env", 99)])  # nothing since the last write: an empty summary
        settle([learner])
        summaries = journal_summaries(layout.journal_dir)
        expected = []
        for step in range(1, 6):
            expected.append(("Env", step, {"reward": (0, [step, step + 0.5, -step]), "len": (2, [step * 10])}))
            expected.append(("Policy", step, {"lr": (1, [0.1])}))
        expected.append(("Env", 99, {}))
        assert summaries == expected
        status = control_request(layout.control_address, {"op": "status"}, timeout=10)
        assert status["ok"] and status["intake"]["values"] == 5 * 5
        assert {t["sender"]: t["last_seq"] for t in status["trainers"]} == {"env-a": 6, "env-b": 6, "learner": 7}
        assert status["journal"]["head"] > 0
    finally:
        for t in (a, b, learner):
            t.close()


def test_status_tells_a_trainer_that_ended_without_a_bye_from_a_connected_one(collector, context):
    from statbus.pipeline.cli.status import format_status
    from statbus.pipeline.wire import bye_record

    layout = collector.layout
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    host = socket.gethostname()
    names = ("alive", "killed", "left", "elsewhere")
    trainers = {name: RawTrainer(context, layout.data_address, name) for name in names}
    try:
        pids = {"alive": os.getpid(), "killed": dead_pid.pid, "left": dead_pid.pid, "elsewhere": dead_pid.pid}
        for name, trainer in trainers.items():
            trainer.frame([hello_record({"pid": pids[name], "host": "other-host" if name == "elsewhere" else host})])
        trainers["left"].frame([bye_record({"pid": dead_pid.pid})])
        settle(list(trainers.values()))
        status = control_request(layout.control_address, {"op": "status"}, timeout=10)
        gone = {t["sender"]: (t["gone"], t["bye"]) for t in status["trainers"]}
        # Killed (its pid on this host is dead, no bye) is gone; on another host it cannot be told from a quiet one.
        assert gone == {"alive": (False, False), "killed": (True, False), "left": (True, True),
                        "elsewhere": (False, False)}
        states = [line.rsplit("  ", 1)[-1] for line in format_status(status).splitlines()
                  if line.startswith(f"  {host} ") or line.startswith("  other-host ")]
        assert sorted(states) == ["connected", "connected", "ended, no bye", "gone"], states
    finally:
        for trainer in trainers.values():
            trainer.close()


def test_duplicates_and_out_of_order_frames(collector, context):
    layout = collector.layout
    t = RawTrainer(context, layout.data_address, "dup")
    try:
        f1 = encode_frame("dup", 1, 1, 0, [stat("C", "k", [1])])
        f2 = encode_frame("dup", 2, 1, 0, [stat("C", "k", [2])])
        f3 = encode_frame("dup", 3, 1, 0, [stat("C", "k", [3]), write_record("C", 1)])
        wait_for(lambda: t.socket.poll(10, zmq.POLLOUT), what="connection")
        # One at a time: acks are cumulative, so frames drained together get one ack.
        for data in (f1, f1, f3, f2, f2, f3, f1, f3):
            count = len(t.acks)
            t.send_raw(data)
            wait_for(lambda: t.pump() or len(t.acks) > count, what="an ack")
        # 1 accept, 1 dup (ack 1), 3 gap (ack 1), 2 accept, 2 dup, 3 accept, 1 dup, 3 dup
        assert t.acks == [1, 1, 1, 2, 2, 3, 3, 3]
        assert journal_frames(layout.journal_dir) == [("dup", 1), ("dup", 2), ("dup", 3)]
        assert journal_summaries(layout.journal_dir) == [("C", 1, {"k": (0, [1.0, 2.0, 3.0])})]
        status = control_request(layout.control_address, {"op": "status"}, timeout=10)
        assert (status["intake"]["duplicates"], status["intake"]["gaps"]) == (4, 1)
    finally:
        t.close()


def test_malformed_frames_are_rejected_while_good_traffic_continues(collector, context):
    layout = collector.layout
    good = RawTrainer(context, layout.data_address, "good")
    evil = RawTrainer(context, layout.data_address, "evil")
    try:
        wait_for(lambda: evil.socket.poll(10, zmq.POLLOUT), what="connection")
        bad_frames = [
            b"",
            b"\xc1\xc1",
            msgpack.packb([1, "evil", 1]),
            msgpack.packb([2, "evil", 1, 1, 0, []]),
            msgpack.packb({"v": 1}),
            b"\x92" + b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
            encode_frame("evil", 1, 1, 0, [[0, "C", "k", 0, 0, "not bytes"]]),
            encode_frame("evil", 2, 1, 0, [[1, "C", 5, []]]),  # a summary from a trainer
        ]
        for step in range(1, 21):
            good.frame([stat("C", "k", [step]), write_record("C", step)])
            evil.send_raw(bad_frames[step % len(bad_frames)])
        settle([good])
        summaries = journal_summaries(layout.journal_dir)
        assert summaries == [("C", step, {"k": (0, [float(step)])}) for step in range(1, 21)]
        status = control_request(layout.control_address, {"op": "status"}, timeout=10)
        rejects = status["intake"]["rejects"]
        assert sum(rejects.values()) == status["intake"]["rejected"] == 20
        assert {"not_msgpack", "bad_envelope", "bad_version", "bad_record"} <= set(rejects)
        assert status["intake"]["rejects_by_source"].get("evil", 0) >= 2
        assert "rejected a frame from evil" in collector.log()
        # the two bad records from "evil" were consumed in its seq order: they are journaled empty
        assert ("evil", 1) in journal_frames(layout.journal_dir)
    finally:
        good.close()
        evil.close()


def test_a_burst_of_heavy_frames_does_not_hold_worker_fetches_until_it_is_all_in(collector, context):
    # Each frame below costs tens of ms to decode and aggregate.  A drain bounded only by
    # bytes (32 MiB) took the whole burst before serving a fetch — seconds, with real
    # trainers — and every worker gave the collector up for lost (LOST_COLLECTOR).
    layout = collector.layout
    t = RawTrainer(context, layout.data_address, "t")
    worker = Worker(context, layout.worker_address, "probe")
    try:
        t.frame([stat("C", "k", [0.0])])
        settle([t])
        start = worker.fetch(0).head
        records = [stat("C", f"k{i % 12}", [float(i)]) for i in range(15_000)]
        for _ in range(20):
            t.frame(records)
        worker.request(start)
        head_when_served = worker.reply(timeout=60).head
        settle([t], timeout=120)
        head_after_burst = worker.fetch(start, max_bytes=1).head
        assert start < head_when_served < head_after_burst
    finally:
        t.close()
        worker.close()


def test_fetch_round_trip_parks_and_wakes(collector, context):
    layout = collector.layout
    t = RawTrainer(context, layout.data_address, "t")
    worker = Worker(context, layout.worker_address, "probe")
    try:
        t.frame([property_record("C", "hyperparameters", {"lr": 0.5}), stat("C", "k", [1, 2]), write_record("C", 7)])
        settle([t])
        entries, next_after, head, skipped = worker.fetch(0)
        assert skipped == 0 and next_after == head
        assert [e.kind for e in entries] == [0, 1]  # the snapshot is never sent
        batch = decode_batch(entries[0].data)
        assert isinstance(batch[0], PropertyRecord) and batch[0].value == {"lr": 0.5}
        assert batch[1].values == [1.0, 2.0]
        summary = msgpack.unpackb(entries[1].data, raw=False)
        assert summary[:3] == [1, "C", 7]
        # small max_bytes: one entry at a time, and next_after resumes exactly
        collected, after, replies = [], 0, 0
        while after < head:
            got, after, _, _ = worker.fetch(after, max_bytes=1)
            assert len(got) <= 1
            collected += got
            replies += 1
        assert collected == entries and after == head and replies == 3  # snapshot, batch, summary
        # a fetch at the head parks; data arriving wakes it
        worker.request(head)
        assert not worker.socket.poll(100)
        t.frame([stat("C", "k", [3])])
        woke, woke_next, woke_head, _ = worker.reply()
        assert [e.kind for e in woke] == [0] and woke_next == woke_head > head
        # with nothing arriving, the parked fetch is answered empty (the liveness signal)
        assert worker.fetch(woke_next).entries == []
        status = control_request(layout.control_address, {"op": "status"}, timeout=10)
        assert [c["plugin"] for c in status["consumers"]] == ["probe"]
    finally:
        t.close()
        worker.close()


def test_control_stop_is_graceful(collector):
    layout = collector.layout
    assert control_request(layout.control_address, {"op": "ping"}, timeout=10)["ok"]
    reply = control_request(layout.control_address, {"op": "restart", "plugin": "x"}, timeout=10)
    assert reply["ok"] is False and "no plugins" in reply["error"]
    assert control_request(layout.control_address, {"op": "nonsense"}, timeout=10)["ok"] is False
    # The collector closes its sockets right after this answer: the reply must still be read.
    assert control_request(layout.control_address, {"op": "stop", "timeout": 5}, timeout=10) == {
        "ok": True, "stopping": True,
    }
    assert collector.process.wait(timeout=30) == 0
    assert not os.path.exists(collector.ready_file)
    assert not os.path.exists(layout.pid_file)


def test_sigterm_stops_and_a_second_collector_is_refused(collector, tmp_path):
    second = CollectorProcess(collector.layout.results_dir, collector.layout.run_id)
    try:
        second.process = None
        with pytest.raises(AssertionError, match="exited with 75"):
            second.start(timeout=30)
    finally:
        second.close()
    assert collector.terminate() == 0
    assert "statbus collector stopped" in collector.log()


def test_a_second_sigterm_stops_at_once_while_a_plugin_hangs(tmp_path, context):
    from zoo import zoo_env

    process = CollectorProcess(
        str(tmp_path / "results"),
        extra=["--plugins", "hangs", "--set", "hangs.call_timeout=600", "--stop-timeout", "600"],
        env=zoo_env(),
    )
    t = None
    try:
        process.start()
        t = RawTrainer(context, process.layout.data_address, "t")
        t.frame([stat("C", "k", [1.0]), write_record("C", 1)])
        settle([t])

        def inflight():
            status = control_request(process.layout.control_address, {"op": "status"}, timeout=10)
            return status["plugins"][0]["inflight"] not in (None, -1)

        wait_for(inflight, what="the hanging plugin to take the summary")
        process.process.send_signal(signal.SIGTERM)
        wait_for(
            lambda: control_request(process.layout.control_address, {"op": "ping"}, 10)["phase"] == "draining",
            what="draining",
        )
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(timeout=60) == 0
        assert "stopping at once" in process.log()
    finally:
        if t is not None:
            t.close()
        process.close()


def test_plugins_in_workers_receive_every_summary(tmp_path, context):
    import json

    from zoo import zoo_env, zoo_output

    results = str(tmp_path / "results")
    process = CollectorProcess(results, extra=["--plugins", "good,jsonl"], env=zoo_env())
    t = None
    try:
        process.start()
        t = RawTrainer(context, process.layout.data_address, "t")
        for step in range(1, 31):
            t.frame([stat("C", "k", [step, -step]), write_record("C", step)])
        settle([t])
        # a fetch from a plugin the supervisor does not run is served, not fatal
        probe = Worker(context, process.layout.worker_address, "not-a-plugin")
        try:
            assert probe.fetch(0).head > 0  # a reply, valid by the codec's rules
        finally:
            probe.close()
        assert control_request(process.layout.control_address, {"op": "stop", "timeout": 60}, 10)["ok"]
        assert process.process.wait(timeout=90) == 0
        with open(zoo_output(results, "run", "good"), encoding="utf-8") as handle:
            lines = [json.loads(line) for line in handle if '"write_stats"' in line]
        assert [(x["step"], x["values"]) for x in lines] == [(s, {"k": [s, -s]}) for s in range(1, 31)]
        with open(os.path.join(results, "run", "stats.jsonl"), encoding="utf-8") as handle:
            assert sum(1 for line in handle if '"step"' in line) >= 30
    finally:
        if t is not None:
            t.close()
        process.close()


def test_plain_tcp_with_the_insecure_flag(tmp_path, context):
    import json

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


def test_curve_trainers_and_a_revoked_key_on_an_open_connection(tmp_path, context):
    import json
    from types import SimpleNamespace

    from statbus.pipeline.cli.keys import run_authorize, run_revoke
    from statbus.pipeline.security import keyfiles
    from statbus.pipeline.security.curve import ClientSecurity

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


def test_insecure_tcp_is_refused(tmp_path):
    process = CollectorProcess(str(tmp_path / "results"), extra=["--no-plugins", "--bind", "tcp://127.0.0.1:0"])
    try:
        with pytest.raises(AssertionError, match="exited with 64"):
            process.start(timeout=30)
        assert "CURVE" in process.log()
    finally:
        process.close()


def test_sigint_stops_at_once(collector):
    collector.process.send_signal(signal.SIGINT)
    assert collector.process.wait(timeout=30) == 0
    assert "stopping at once" in collector.log()


# --- an in-process collector with a stand-in supervisor: retention, quota, poison, control -----


class FakeSupervisor:
    """The supervisor's API with cursors the test sets (the collector thread only reads them)."""

    def __init__(self) -> None:
        self.cursors = {"fast": 0, "slow": 0}
        self.attached = False
        """Until the test sets it, the plugins are not consumers yet: retention deletes nothing."""
        self.skips: dict = {}
        self.started = None
        self.stopped = False
        self.ops: list = []

    def start(self, head_position: int = 0) -> None:
        self.started = head_position

    def tick(self, head_position: int) -> None:
        pass

    def committed(self, plugin: str) -> int:
        return self.cursors[plugin]

    def skip_positions(self, plugin: str):
        return frozenset(self.skips.get(plugin, ()))

    def consumers(self):
        return list(self.cursors) if self.attached else []

    def status(self):
        return [{"name": name, "state": "ready", "committed": c} for name, c in self.cursors.items()]

    def _op(self, op: str, name: str) -> None:
        if name not in self.cursors:
            from statbus.plugins import StatbusError

            raise StatbusError(f"no plugin {name!r}")
        self.ops.append((op, name))

    def restart(self, name: str) -> None:
        self._op("restart", name)

    def enable(self, name: str) -> None:
        self._op("enable", name)

    def disable(self, name: str) -> None:
        self._op("disable", name)

    def all_caught_up(self, head_position: int) -> bool:
        return all(c >= head_position for c in self.cursors.values())

    def settled(self) -> bool:
        return True

    def stop(self, timeout: float) -> None:
        self.stopped = True


def test_retention_quota_poison_and_plugin_control_with_a_supervisor(tmp_path, context):
    import threading

    from statbus.pipeline.collector.loop import Collector
    from statbus.pipeline.collector.options import CollectorOptions
    from statbus.pipeline.collector.entry_records import read_entry_record
    from statbus.pipeline.journal.writer import EntryType, iter_entries
    from statbus.pipeline.layout import RunLayout

    layout = RunLayout(str(tmp_path / "results"), "run")
    fake = FakeSupervisor()
    hooks_seen: list = []
    collector = Collector(
        layout,
        CollectorOptions(segment_bytes=4096, quota_bytes=12 * 1024),
        supervisor_factory=lambda hooks: hooks_seen.append(hooks) or fake,
    )
    codes = []
    thread = threading.Thread(target=lambda: codes.append(collector.run()), daemon=True)
    thread.start()
    t = RawTrainer(context, layout.data_address, "t")
    fast = Worker(context, layout.worker_address, "fast")
    slow = Worker(context, layout.worker_address, "slow")
    try:
        wait_for(lambda: os.path.exists(collector.ready_file), what="ready file")
        assert fake.started is not None
        for step in range(1, 61):
            t.frame([stat("C", "k", list(range(100))), write_record("C", step)])
        settle([t])

        def status():
            return control_request(layout.control_address, {"op": "status"}, timeout=10)

        # With consumers at cursor 0 a retention pass (one a second) would trim the journal to the
        # quota while the 60 frames still arrive: on a loaded machine it did, and left 3 segments.
        head = status()["journal"]["head"]
        assert status()["journal"]["segments"] > 5 and status()["journal"]["start"] == 0
        fake.cursors["fast"] = head
        fake.attached = True
        # slow has read nothing and is far over its quota: its quota position moves up, segments go
        wait_for(lambda: status()["journal"]["start"] > 0, what="retention")
        start = status()["journal"]["start"]
        assert head - start <= 12 * 1024 + 4096
        entries, next_after, _, skipped = slow.fetch(0)
        assert skipped > 0 and entries and entries[0].position >= start
        skipped_before = skipped
        assert {c["plugin"]: c["skipped_quota"] > 0 for c in status()["consumers"]}["slow"]
        # poison: a position set aside for "fast" only
        frames = [e for e in iter_entries(layout.journal_dir) if e.type == EntryType.FRAME]
        poison = frames[-1].position
        fake.skips["fast"] = {poison}
        got, _, _, skipped = fast.fetch(poison)
        assert skipped == 1 and poison not in [e.position for e in got] and got  # its summary still comes
        got, _, _, skipped = slow.fetch(poison)
        assert skipped == 0 and got[0].position == poison
        (hooks,) = hooks_seen
        assert hooks.worker_address == layout.worker_address
        assert hooks.count_entries(0, head) == len(list(iter_entries(layout.journal_dir, 0))) + skipped_before
        record = read_entry_record(frames[-1].payload, EntryType.FRAME)
        assert record["kind"] == "batch" and record["records"][0]["values"] == [float(v) for v in range(100)]
        # plugin control is the supervisor's
        assert control_request(layout.control_address, {"op": "restart", "plugin": "fast"}, 10)["ok"]
        assert control_request(layout.control_address, {"op": "disable", "plugin": "slow"}, 10)["ok"]
        reply = control_request(layout.control_address, {"op": "enable", "plugin": "nope"}, 10)
        assert reply["ok"] is False and "nope" in reply["error"]
        assert fake.ops == [("restart", "fast"), ("disable", "slow")]
        assert [p["name"] for p in status()["plugins"]] == ["fast", "slow"]
        # graceful stop waits until every plugin caught up, then stops the workers
        assert control_request(layout.control_address, {"op": "stop", "timeout": 60}, 10)["ok"]
        assert control_request(layout.control_address, {"op": "ping"}, 10)["phase"] == "draining"
        fake.cursors = {"fast": head, "slow": head}
        thread.join(timeout=30)
        assert not thread.is_alive() and codes == [0] and fake.stopped
    finally:
        collector.request_stop(graceful=False)
        thread.join(timeout=30)
        for s in (t, fast, slow):
            s.close()


def test_entry_index_counts_exactly_at_anchors_and_prunes():
    from statbus.pipeline.journal.retention import EntryIndex, quota_position

    index = EntryIndex()
    position = 0
    for n in range(5000):
        end = position + 100
        index.appended(position, end, anchor=(n % 1000 == 0))
        position = end
    assert index.count(0, position) == 5000
    assert index.count(100_000, 300_000) == 2000  # both are anchors (entries 1000 and 3000)
    assert 3500 <= index.count(150_000, position) <= 3500 + EntryIndex.SAMPLE_ENTRIES  # off by less than a sample
    before = len(index)
    index.prune(300_000)
    assert len(index) < before and index.count(300_000, position) == 2000
    # quota positions fall on segment starts, never into the newest segment
    assert quota_position(0, 1000, [0, 400, 800], 1000) == 0
    assert quota_position(0, 1001, [0, 400, 800], 1000) == 400
    assert quota_position(0, 5000, [0, 400, 800], 1000) == 800


def test_delivery_rule_over_a_lossy_reordering_network():
    """Property: whatever the network loses, doubles or reorders, and whatever the trainer re-sends,
    the collector accepts each frame exactly once and in seq order."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    ops = st.lists(st.tuples(st.sampled_from(["new", "resend", "deliver", "drop", "dup"]), st.integers(0, 50)), max_size=200)

    @settings(max_examples=200, deadline=None)
    @given(ops)
    def run(events):
        intake = Intake(clock=lambda: 0.0)
        accepted, in_flight, unacked, acked = [], [], [], 0
        sent = 0

        def deliver(data):
            nonlocal acked, unacked
            decision = intake.receive(data, "x")
            if decision.verdict is Verdict.ACCEPT:
                accepted.append(decision.frame.seq)
            if decision.ack is not None and decision.ack > acked:
                acked = decision.ack
                unacked = [(s, d) for s, d in unacked if s > acked]

        for op, n in events:
            if op == "new":
                sent += 1
                data = encode_frame("a", sent, 1, 0, [stat("C", "k", [sent])])
                unacked.append((sent, data))
                in_flight.append(data)
            elif op == "resend":
                in_flight.extend(d for _, d in unacked)
            elif op == "deliver" and in_flight:
                deliver(in_flight.pop(n % len(in_flight)))
            elif op == "drop" and in_flight:
                in_flight.pop(n % len(in_flight))
            elif op == "dup" and in_flight:
                in_flight.append(in_flight[n % len(in_flight)])
            assert accepted == list(range(1, len(accepted) + 1))
        # the network heals: the trainer re-sends until everything is acked
        for _ in range(sent + 1):
            for data in [d for _, d in unacked]:
                deliver(data)
        assert accepted == list(range(1, sent + 1))
        assert intake.accepted_values == sent

    run()


class _CountingReader(JournalReader):
    """A real reader that counts its reads (to see which fetches were served from memory)."""

    reads = 0

    def read(self, after, max_bytes=1 << 20, max_entries=10_000):
        self.reads += 1
        return super().read(after, max_bytes, max_entries)


def test_plugins_asking_for_the_same_positions_share_one_read_with_their_own_skips(tmp_path, context):
    journal = Journal(str(tmp_path / "journal"))
    journal.open()
    journal.rotate(b"snapshot")
    positions = [journal.append(EntryType.SUMMARY, msgpack.packb([1, "C", step, []])) for step in range(40)]
    journal.commit()
    reader = _CountingReader(str(tmp_path / "journal"))
    router = context.socket(zmq.ROUTER)
    address = "ipc://" + str(tmp_path / "work")
    router.bind(address)
    poison = {"b": frozenset({positions[1]})}
    server = FetchServer(router, reader, head=lambda: journal.end_position,
                         skip=lambda plugin: poison.get(plugin, frozenset()))
    a, b = Worker(context, address, "a"), Worker(context, address, "b")

    def fetch(worker, after, max_bytes):
        worker.request(after, max_bytes)
        assert router.poll(10_000)
        server.on_readable()
        return worker.reply()

    try:
        got_a, next_a, head, skipped_a = fetch(a, positions[0], 200)
        got_b, next_b, _, skipped_b = fetch(b, positions[0], 200)
        assert reader.reads == 1  # stopped at its byte limit, short of the head: kept for b
        assert next_a == next_b < head and len(got_a) > 2
        assert (skipped_a, skipped_b) == (0, 1)
        assert got_b == [e for e in got_a if e.position != positions[1]]
        # A read that reached the head is not kept: what is appended later is served.
        rest, end, _, _ = fetch(a, next_a, 1 << 20)
        assert end == head and rest[-1].position == positions[-1]
        more = journal.append(EntryType.SUMMARY, msgpack.packb([1, "C", 99, []]))
        journal.commit()
        again, _, _, _ = fetch(a, next_a, 1 << 20)
        assert [e.position for e in again] == [e.position for e in rest] + [more]
    finally:
        a.close()
        b.close()
        router.close(linger=0)
        reader.close()
        journal.close()
