"""The trainer client in real trainer processes: env configuration, exit, fork."""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import sys
import textwrap
from typing import Dict, Iterator

import msgpack
import pytest

import statbus.pipeline as sp
from ackpeer import AckPeer, PeerState, wait_for
from statbus.pipeline import StatsReporter
from statbus.pipeline.trainer import config as trainer_config
from statbus.pipeline.trainer.framing import (
    BATCH_VALUES,
    FrameBuilder,
    SetStatEvent,
    StatsEvent,
    WriteEvent,
    drain_events,
)
from statbus.pipeline.trainer.handoff import MAX_PENDING_EVENTS
from statbus.pipeline.trainer.resend_buffer import FRAME_OVERHEAD, FrameBuffer
from statbus.pipeline.wire import MAX_FRAME_BYTES, Hello, decode_frame, encode_frame, stat_record, write_record
from statbus.plugins import ConfigError
from statbus.plugins.records import StatOp, pack_values

PRELUDE = """
import os, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a threaded process, 3.12+
import statbus.pipeline as sp
from statbus.pipeline import StatsReporter, StatsAggregationMethod as Agg
def mark(name):
    with open(os.path.join(os.environ["MARKS"], name), "w"):
        pass
"""


# Each test starts and ends with no client and no configure() of an earlier test.
pytestmark = pytest.mark.usefixtures("fresh_trainer_state")


def _env(tmp_path, address: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        STATBUS_ADDRESS=address,
        STATBUS_RUN_ID="envrun",
        STATBUS_RESULTS_DIR=str(tmp_path / "results"),
        STATBUS_AUTOSTART="0",
        MARKS=str(tmp_path),
    )
    return env


@contextlib.contextmanager
def trainer(tmp_path, address: str, body: str) -> Iterator[subprocess.Popen]:
    code = PRELUDE + textwrap.dedent(body)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=_env(tmp_path, address),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def _finish(proc: subprocess.Popen, timeout: float = 60) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"trainer exited {proc.returncode}: {err}"
    assert "Traceback" not in err, err
    return err


def _address(tmp_path) -> str:
    return "ipc://" + os.path.join(str(tmp_path), "d")


def test_trainer_configured_by_environment_started_before_the_peer(tmp_path) -> None:
    address = _address(tmp_path)
    body = """
        r = StatsReporter("Env")
        for i in range(5000):
            r.add_stat("a", i)
            if i % 1000 == 999:
                r.write_stats(i)
        mark("recorded")
        sys.exit(0 if sp.flush(60) else 3)
    """
    with trainer(tmp_path, address, body) as proc:
        wait_for(lambda: (tmp_path / "recorded").exists() or proc.poll() is not None, what="trainer to record")
        with AckPeer(address) as peer:
            _finish(proc)
            assert peer.state.values("Env", "a") == [float(i) for i in range(5000)]
            assert [w.step for w in peer.state.writes()] == [999, 1999, 2999, 3999, 4999]
            [hello] = peer.state.hellos()
            assert hello.info["run_id"] == "envrun" and hello.info["pid"] == proc.pid
            assert len(peer.state.byes()) == 1  # the exit hook said goodbye


def test_exit_with_the_peer_down_returns_within_linger(tmp_path) -> None:
    body = """
        sp.configure(linger=0.5)
        r = StatsReporter("Cat")
        for i in range(10000):
            r.add_stat("a", i)
        r.write_stats(1)
        print("done", flush=True)
    """
    with trainer(tmp_path, _address(tmp_path), body) as proc:
        # Only a bound, no timing claim: a hang would hit it.
        proc.wait(timeout=60)
        _finish(proc)


def test_exit_sends_what_is_pending(tmp_path) -> None:
    address = _address(tmp_path)
    body = """
        sp.configure(batch_interval=5.0)
        r = StatsReporter("Cat")
        for i in range(300):
            r.add_stat("a", i)
        r.set_stat("Step", 300)
    """
    with AckPeer(address) as peer, trainer(tmp_path, address, body) as proc:
        _finish(proc)
        assert peer.state.values("Cat", "a") == [float(i) for i in range(300)]
        assert peer.state.values("Cat", "Step") == [300.0]
        assert len(peer.state.byes()) == 1


def test_fork_with_pending_data_each_process_sends_its_own(tmp_path) -> None:
    address = _address(tmp_path)
    # The peer is down at the fork: the parent holds an unacked frame (write 1)
    # and, with a 5 s batch interval, queued values; the child must send neither.
    body = """
        sp.configure(batch_interval=5.0)
        r = StatsReporter("Cat")
        for i in range(100):
            r.add_stat("p", i)
        r.write_stats(1)
        for i in range(100, 200):
            r.add_stat("p", i)
        pid = os.fork()
        if pid == 0:
            for i in range(50):
                r.add_stat("c", i)
            r.write_stats(2)
            ok = sp.flush(60)
            sp.shutdown(5)
            os._exit(0 if ok else 3)
        mark("forked")
        _, status = os.waitpid(pid, 0)
        ok = sp.flush(60)
        sys.exit(0 if ok and os.waitstatus_to_exitcode(status) == 0 else 3)
    """
    with trainer(tmp_path, address, body) as proc:
        wait_for(lambda: (tmp_path / "forked").exists() or proc.poll() is not None, what="fork")
        state = PeerState()
        with AckPeer(address, state):
            _finish(proc)
    hellos = {r.info["sender"]: r.info for _, r in state.records() if isinstance(r, Hello)}
    assert len(hellos) == 2
    parent = next(s for s, info in hellos.items() if info["pid"] == proc.pid)
    (child,) = set(hellos) - {parent}
    assert state.values("Cat", "p", sender=parent) == [float(i) for i in range(200)]
    assert state.values("Cat", "p", sender=child) == []
    assert state.values("Cat", "c", sender=child) == [float(i) for i in range(50)]
    assert state.values("Cat", "c", sender=parent) == []
    assert [w.step for w in state.writes(sender=parent)] == [1]
    assert [w.step for w in state.writes(sender=child)] == [2]
    assert state.gaps == 0


# --- the pieces, without processes -----------------------------------------

def _stats(n: int) -> list:
    return [stat_record("Cat", "k", 0, 0, pack_values(range(n)))]


def test_frame_buffer_strips_oldest_stats_keeps_markers_and_raises_lowest_sendable() -> None:
    buffer = FrameBuffer("me", limit=1 << 20)
    buffer.add(_stats(100), 100)                                    # 1: stats only
    buffer.add(_stats(100) + [write_record("Cat", 1)], 100)          # 2: stats + write
    buffer.add(_stats(100), 100)                                    # 3: stats only
    # Room for one whole frame and two stripped ones: frames 1 and 2 must go.
    buffer.limit = buffer.frames[2].nbytes + 2 * (FRAME_OVERHEAD + 100)
    dropped, lost = buffer.enforce()
    assert (dropped, lost) == (200, 0)
    assert [f.seq for f in buffer.frames] == [2, 3]  # 1 was left empty at the bottom: dropped
    assert buffer.lowest_sendable == 2 and buffer.nbytes <= buffer.limit
    frame2, frame3 = (decode_frame(buffer.payload(f)) for f in buffer.frames)
    assert frame2.lowest_sendable == 2 and [type(r).__name__ for r in frame2.records] == ["WriteMarker"]
    assert frame3.lowest_sendable == 2 and len(frame3.records[0].values) == 100
    assert buffer.ack(2) == 1 and buffer.acked == 2
    assert buffer.ack(1) == 0 and buffer.ack(99) == 1 and not buffer.frames


def test_a_full_frame_buffer_leaves_nothing_for_the_garbage_collector_to_walk() -> None:
    # Buffered records as Python lists made every collection in the training process walk
    # them (millions in a full buffer): the buffer keeps encoded bytes only.
    import gc

    buffer = FrameBuffer("me", limit=1 << 30)
    records = [[0, "Cat", f"k{i}", 0, 0, pack_values([float(i)])] for i in range(1000)]
    gc.collect()
    tracked_before = len(gc.get_objects())
    for _ in range(200):
        buffer.add([list(r) for r in records] + [write_record("Cat", 1)], 1000)
    del records
    gc.collect()
    assert len(buffer.frames) == 200
    assert len(gc.get_objects()) - tracked_before < 200 + 50  # the 200 Outgoing slots objects, not 200,000 records
    first = buffer.frames[0]
    assert len(first.records) == 1001 and first.nrecords == 1001  # decoded again on demand


def test_frame_buffer_merges_unsent_marker_frames_under_pressure() -> None:
    buffer = FrameBuffer("me", limit=1 << 20)
    for step in range(50):
        buffer.add(_stats(10) + [write_record("Cat", step)], 10)
    buffer.limit = 50 * 200
    dropped, lost = buffer.enforce()
    assert dropped == 500 and lost == 0 and buffer.nbytes <= buffer.limit
    # Every write survives, in order, in fewer frames; lowest_sendable moved past the merged ones.
    frames = [decode_frame(buffer.payload(f)) for f in buffer.frames]
    assert [r.step for f in frames for r in f.records] == list(range(50))
    assert len(frames) < 50 and buffer.lowest_sendable == frames[0].seq


def test_frame_buffer_last_resort_drops_whole_frames_to_stay_bounded() -> None:
    buffer = FrameBuffer("me", limit=1 << 20)
    for step in range(50):
        buffer.add([write_record("Cat", step)], 0).first_sent = 1.0  # sent once: never merged
    buffer.limit = 10 * (FRAME_OVERHEAD + 60)
    _, lost = buffer.enforce()
    assert lost > 0 and buffer.nbytes <= buffer.limit and buffer.frames_lost == lost
    assert buffer.lowest_sendable == buffer.frames[0].seq


def test_frame_builder_groups_keys_in_first_seen_order() -> None:
    agg = sp.StatsAggregationMethod
    builder = FrameBuilder()
    for event in [("C", "b", 1.0, agg.AVERAGE), ("C", "a", 2.0, agg.SUM), ("C", "b", 3.0, agg.HISTOGRAM)]:
        builder.add(*event)
    builder.property("C", "selfplay", {"x": 1}, 10)
    builder.write("C", 4)
    records = builder.records()
    assert [r[0] for r in records] == [2, 0, 0, 3]
    assert records[1][2] == "b" and records[1][3] == agg.HISTOGRAM.value and records[2][2] == "a"
    msgpack.packb(records)


def test_drained_frames_stay_within_the_wire_limits_whatever_the_keys() -> None:
    agg = sp.StatsAggregationMethod.AVERAGE
    queue = collections.deque()
    for i in range(20_000):  # distinct 1000-character keys: ~20 MB of names
        key = f"{i:06d}" + "k" * 994
        queue.append(StatsEvent({("C" * 1000, key): [agg, -1.0]}))
        queue.append(SetStatEvent("C" * 1000, key, float(i)))  # set_stat replaces the -1
    builders = list(drain_events(queue, lambda: []))
    assert len(builders) > 1 and not queue
    period: Dict[str, list] = {}  # what the collector makes of them
    for seq, builder in enumerate(builders, 1):
        payload = encode_frame("me", seq, 1, 0, builder.records())
        assert len(payload) < MAX_FRAME_BYTES
        for record in decode_frame(payload).records:
            if record.op == StatOp.SET:
                period[record.key] = record.values
            else:
                period.setdefault(record.key, []).extend(record.values)
    assert [v for values in period.values() for v in values] == [float(i) for i in range(20_000)]


def test_config_arguments_then_environment_then_defaults(tmp_path) -> None:
    env = {"STATBUS_RUN_ID": "envrun", "STATBUS_RESULTS_DIR": str(tmp_path), "STATBUS_BUFFER_BYTES": "123456",
           "STATBUS_AUTOSTART": "0"}
    config = trainer_config.build_config(environ=env)
    assert (config.run_id, config.results_dir, config.buffer_bytes, config.autostart) == (
        "envrun", str(tmp_path), 123456, False)
    assert config.address.startswith("ipc://") and config.address.endswith("/data")
    config = trainer_config.build_config("argrun", address="ipc:///x/y", autostart=True, environ=env)
    assert (config.run_id, config.address, config.autostart) == ("argrun", "ipc:///x/y", True)
    default = trainer_config.build_config(environ={})
    assert (default.run_id, default.results_dir, default.autostart) == ("ppo", "results", True)
    with pytest.raises(ConfigError, match="STATBUS_BUFFER_BYTES"):
        trainer_config.build_config(environ={"STATBUS_BUFFER_BYTES": "lots"})
    with pytest.raises(ConfigError, match="address"):
        trainer_config.build_config(address="http://x", environ={})
    with pytest.raises(ConfigError, match="buffer_bytes"):
        trainer_config.build_config(buffer_bytes=10, environ={})
    with pytest.raises(ConfigError, match="run id"):
        trainer_config.build_config(run_id="a/b", environ={})


def test_configure_after_use_restarts_the_client_at_the_new_address(tmp_path) -> None:
    first, second = _address(tmp_path), "ipc://" + os.path.join(str(tmp_path), "e")
    reporter = StatsReporter("Cat")
    try:
        with AckPeer(first) as one, AckPeer(second) as two:
            sp.configure(run_id="t", results_dir=str(tmp_path), address=first, autostart=False, linger=5)
            reporter.add_stat("a", 1.0)
            sp.configure(run_id="t", results_dir=str(tmp_path), address=second, autostart=False, linger=5)
            reporter.add_stat("a", 2.0)
            assert sp.flush(30)
            assert one.state.values("Cat", "a") == [1.0] and len(one.state.byes()) == 1
            assert two.state.values("Cat", "a") == [2.0]
    finally:
        sp.shutdown(0.2)


def test_a_sender_that_cannot_start_drops_stats_and_never_raises(tmp_path, monkeypatch) -> None:
    # Half a CURVE configuration: the sender thread fails to connect and ends.
    monkeypatch.setenv("STATBUS_CLIENT_KEY", str(tmp_path / "missing.key"))
    monkeypatch.delenv("STATBUS_SERVER_KEY", raising=False)
    sp.configure(run_id="t", results_dir=str(tmp_path), address="tcp://127.0.0.1:9", autostart=False, linger=0.2)
    try:
        reporter = StatsReporter("Cat")
        reporter.add_stat("a", 0.0)
        wait_for(lambda: sp.client_counters()["errors"] >= 1, what="the sender to fail")
        for i in range(3 * BATCH_VALUES):
            reporter.add_stat("a", i)
        reporter.write_stats(1)
        assert sp.flush(0.2) is False
        counters = sp.client_counters()
        assert counters["events_dropped"] >= BATCH_VALUES
        assert counters["values_queued"] <= MAX_PENDING_EVENTS + 1
    finally:
        sp.shutdown(0.2)


def test_sealed_entries_are_split_across_frames_in_order() -> None:
    # One sealed dict far past a frame's values: no frame exceeds BATCH_VALUES, order holds.
    agg = sp.StatsAggregationMethod
    n = 3 * BATCH_VALUES + 17
    sealed = {("C", "big"): [agg.AVERAGE] + [float(i) for i in range(n)], ("C", "small"): [agg.SUM, 1.0, 2.0]}
    queue = collections.deque([StatsEvent(sealed), WriteEvent("C", 5), StatsEvent({("C", "big"): [agg.AVERAGE, -1.0]})])
    builders = list(drain_events(queue, lambda: []))
    assert not queue and all(b.nvalues <= BATCH_VALUES for b in builders)
    assert sum(b.nvalues for b in builders) == n + 3
    values, kinds = [], []
    for seq, builder in enumerate(builders, 1):
        for record in decode_frame(encode_frame("me", seq, 1, 0, builder.records())).records:
            kinds.append(type(record).__name__)
            if kinds[-1] == "StatRecord" and record.key == "big":
                values.extend(record.values)
    assert values == [float(i) for i in range(n)] + [-1.0]
    # The write closes the period after every value sealed before it, and before the later one.
    assert kinds.index("WriteMarker") == len(kinds) - 2


def test_client_seals_keep_order_across_aggregation_changes_and_cap_memory(tmp_path, monkeypatch) -> None:
    import statbus.pipeline.trainer.handoff as handoff_module

    # A sender that never drains (a long batch interval, and never woken): the
    # current entries and the sealed values stay bounded, the rest is counted as dropped.
    monkeypatch.setattr(handoff_module, "MAX_PENDING_VALUES", 4 * handoff_module.ENTRY_VALUES)
    monkeypatch.setattr(handoff_module.Handoff, "wake", lambda self: None)
    sp.configure(run_id="t", results_dir=str(tmp_path), address=_address(tmp_path), autostart=False,
                 linger=0.2, batch_interval=10.0)
    agg = sp.StatsAggregationMethod
    try:
        reporter = StatsReporter("Cat")
        reporter.add_stat("k", 1.0, agg.SUM)
        reporter.add_stat("k", 2.0, agg.HISTOGRAM)   # a new aggregation seals what came before
        reporter.add_stat("k", 3.0, agg.HISTOGRAM)
        client = sp.trainer.reporter._client
        with client.lock:
            assert [list(event.sealed.values()) for event in client.queue] == [[[agg.SUM, 1.0]]]
            assert list(client.current.values()) == [[agg.HISTOGRAM, 2.0, 3.0]]
        total = 40 * handoff_module.ENTRY_VALUES
        for i in range(total):
            reporter.add_stat(f"k{i % 3}", float(i))
        counters = client.snapshot()  # this client's own, not earlier tests' retired ones
        queued, dropped = counters["values_queued"], counters["events_dropped"]
        assert counters["values_recorded"] == 0 and queued + dropped == total + 3
        assert queued <= handoff_module.MAX_PENDING_VALUES + 3 * (handoff_module.ENTRY_VALUES + 1) + 3
        assert dropped >= total - queued > 0
    finally:
        monkeypatch.undo()  # a sender that can be woken again, to stop
        sp.shutdown(0.2)
