"""The Collector (collector/loop.py) as a process and in-process: frames journaled, aggregated and
acked across senders; the drain keeping worker fetches served during a burst; control and stop signals;
plugins in workers; retention, quota, poison and plugin control with a stand-in supervisor.

The collector's parts have their own files: test_intake.py, test_fetch_server.py, test_status.py,
test_aggregator.py, test_idle.py; CURVE and tcp binds are in ../security/test_curve_collector.py.
"""

from __future__ import annotations

import os
import signal

import pytest

from collector_helpers import CollectorProcess, RawTrainer, Worker, journal_summaries, settle, wait_for
from statbus.pipeline.control import control_request
from statbus.pipeline.wire import hello_record, stat_record, write_record
from statbus.plugins.records import pack_values


def stat(category, key, values, agg=0, op=0):
    return stat_record(category, key, agg, op, pack_values(values))


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


