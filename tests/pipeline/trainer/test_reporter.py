"""The trainer API in this process, against a real ZeroMQ ack peer over ipc://."""

from __future__ import annotations

import os
import threading
from typing import Iterator, List

import numpy as np
import pytest

import statbus.pipeline as sp
from ackpeer import AckPeer, PeerState, stat_ops, wait_for
from waiting import holds_for
from statbus.pipeline import StatsAggregationMethod as Agg
from statbus.pipeline import StatsPropertyType, StatsReporter
from statbus.pipeline.trainer import reporter as reporter_module
from statbus.pipeline.trainer.clock import FakeClock
from statbus.pipeline.trainer.sender import RESEND_AFTER
from statbus.pipeline.wire import Bye, Hello, WriteMarker
from statbus.plugins.records import PropertyRecord, StatOp, StatRecord

# Each test starts and ends with no client and no configure() of an earlier test.
pytestmark = pytest.mark.usefixtures("fresh_trainer_state")


@pytest.fixture
def address(tmp_path) -> Iterator[str]:
    address = "ipc://" + os.path.join(str(tmp_path), "d")
    sp.configure(run_id="t", results_dir=str(tmp_path), address=address, autostart=False, linger=0.5)
    try:
        yield address
    finally:
        sp.shutdown(timeout=0.5)


@pytest.fixture
def fake_clock(monkeypatch) -> FakeClock:
    """The client this test starts runs on a clock the test advances (end such a test with
    ``sp.shutdown(0)``, or advance past what the exit waits for)."""
    clock = FakeClock()
    monkeypatch.setattr(reporter_module, "_clock", clock)
    return clock


def _setup(tmp_path, **kwargs) -> str:
    address = "ipc://" + os.path.join(str(tmp_path), "d")
    sp.configure(**{"run_id": "t", "results_dir": str(tmp_path), "address": address, "autostart": False,
                    "linger": 0.5, **kwargs})
    return address


# --- input validation -------------------------------------------------------

@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda r: r.add_stat("Loss", "1.0"), TypeError, ["'Loss'", "number", "str"]),
        (lambda r: r.add_stat("Loss", b"1"), TypeError, ["'Loss'", "bytes"]),
        (lambda r: r.add_stat("Loss", None), TypeError, ["'Loss'", "NoneType"]),
        (lambda r: r.add_stat("Loss", [1.0]), TypeError, ["'Loss'", "list"]),
        (lambda r: r.add_stat("Loss", 1 + 2j), TypeError, ["'Loss'", "complex"]),
        (lambda r: r.add_stat(7, 1.0), TypeError, ["stat key", "int"]),
        (lambda r: r.add_stat("", 1.0), ValueError, ["stat key", "1 to"]),
        (lambda r: r.add_stat("k" * 2000, 1.0), ValueError, ["stat key"]),
        (lambda r: r.add_stat("Loss", 1.0, 2), ValueError, ["'Loss'", "aggregation"]),
        (lambda r: r.add_stat("Loss", 1.0, "SUM"), ValueError, ["'Loss'", "aggregation"]),
        (lambda r: r.set_stat("Step", "3"), TypeError, ["'Step'"]),
        (lambda r: r.set_stat(None, 3.0), TypeError, ["stat key"]),
        (lambda r: r.write_stats(-1), ValueError, ["'Cat'", ">= 0"]),
        (lambda r: r.write_stats(1.5), TypeError, ["'Cat'", "float"]),
        (lambda r: r.write_stats(True), TypeError, ["'Cat'", "bool"]),
        (lambda r: r.write_stats(2**63), ValueError, ["'Cat'"]),
        (lambda r: r.add_property("hyperparameters", {}), ValueError, ["property type"]),
        (lambda r: r.add_property(StatsPropertyType.HYPERPARAMETERS, {str(i): i for i in range(5000)}),
         ValueError, ["map", "5000"]),
        (lambda r: r.add_property(StatsPropertyType.HYPERPARAMETERS, ["x" * 60000] * 30), ValueError, ["bytes"]),
    ],
)
def test_bad_input_is_refused_at_the_call_naming_the_key(address, call, error, words) -> None:
    reporter = StatsReporter("Cat")
    with pytest.raises(error) as info:
        call(reporter)
    for word in words:
        assert word in str(info.value)
    assert sp.client_counters().get("values_queued", 0) == 0


def test_bad_category_is_refused() -> None:
    with pytest.raises(TypeError, match="category"):
        StatsReporter(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="category"):
        StatsReporter("")


def test_numbers_of_every_kind_arrive_as_floats(address) -> None:
    reporter = StatsReporter("Cat")
    with AckPeer(address) as peer:
        for value in (1.5, 2, True, np.float32(0.25), np.int64(7), np.float64("nan"), float("inf")):
            reporter.add_stat("v", value)
        assert sp.flush(30)
        got = peer.state.values("Cat", "v")
    assert got[:5] == [1.5, 2.0, 1.0, 0.25, 7.0]
    assert np.isnan(got[5]) and got[6] == float("inf")


# --- batching, order, set_stat ----------------------------------------------

def _kind(record: object) -> int:
    return {Hello: 0, PropertyRecord: 1, StatRecord: 2, WriteMarker: 3, Bye: 4}[type(record)]


def test_frames_hold_properties_then_periods_each_closed_by_its_write(address) -> None:
    reporter, other = StatsReporter("Cat"), StatsReporter("Other")
    with AckPeer(address) as peer:
        for step in range(1, 21):
            for i in range(5):
                reporter.add_stat("x", step * 100 + i)
                other.add_stat("y", step)
            if step % 7 == 0:
                reporter.add_property(StatsPropertyType.SELF_PLAY, {"elo": step})
            reporter.write_stats(step)
        reporter.add_stat("x", 9999)
        assert sp.flush(30)
        frames = peer.state.frames()
    assert isinstance(frames[0].records[0], Hello)
    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
    for frame in frames:
        kinds = [_kind(r) for r in frame.records]
        # Hello and properties first; then periods (stats, then the write that
        # closes them), possibly several when writes come fast; a bye last.
        head = [k for k in kinds if k < 2]
        assert kinds[:len(head)] == sorted(head), f"frame {frame.seq} out of order: {kinds}"
        assert all(k in (2, 3) for k in kinds[len(head):] if k != 4), kinds
        assert 4 not in kinds or kinds[-1] == 4
    # Walk the stream: the values each write closes are exactly those added before it.
    pending: list = []
    closed = {}
    for _, record in peer.state.records():
        if isinstance(record, StatRecord) and record.key == "x":
            pending.extend(record.values)
        elif isinstance(record, WriteMarker):
            closed[record.step] = pending
            pending = []
    assert sorted(closed) == list(range(1, 21))
    for step in range(1, 21):
        assert closed[step] == [step * 100 + i for i in range(5)]
    assert pending == [9999]
    assert peer.state.values("Other", "y") == [s for s in range(1, 21) for _ in range(5)]
    assert [p.value for p in peer.state.properties()] == [{"elo": 7}, {"elo": 14}]


def test_set_stat_replaces_pending_values_and_later_adds_follow(tmp_path) -> None:
    # A long batch interval keeps all calls before the flush in one frame.
    address = _setup(tmp_path, batch_interval=5.0)
    try:
        reporter = StatsReporter("Cat")
        with AckPeer(address) as peer:
            reporter.add_stat("k", 1.0, Agg.SUM)
            reporter.add_stat("k", 2.0, Agg.SUM)
            reporter.set_stat("k", 5.0)
            reporter.add_stat("k", 7.0, Agg.HISTOGRAM)
            reporter.add_stat("k", 8.0, Agg.HISTOGRAM)
            reporter.add_stat("only", 3.0, Agg.SUM)
            assert sp.flush(30)
            reporter.set_stat("k", 6.0)
            reporter.set_stat("k", 6.5)
            assert sp.flush(30)
            ops = stat_ops(peer.state, "Cat", "k")
            assert stat_ops(peer.state, "Cat", "only") == [(StatOp.ADD, Agg.SUM.value, [3.0])]
    finally:
        sp.shutdown(0.5)
    assert ops == [
        (StatOp.SET, Agg.MOST_RECENT.value, [5.0]),
        (StatOp.ADD, Agg.HISTOGRAM.value, [7.0, 8.0]),
        (StatOp.SET, Agg.MOST_RECENT.value, [6.5]),
    ]


@pytest.mark.parametrize("prompt", [True, False])
def test_a_summary_goes_at_once_or_with_the_next_batch(tmp_path, fake_clock, prompt) -> None:
    # statbus learn sends summaries with its 1 s batches: one wake-up of every process fewer each.
    address = _setup(tmp_path, batch_interval=3.0, prompt_summaries=prompt)
    try:
        reporter = StatsReporter("Cat")
        with AckPeer(address) as peer:
            reporter.add_stat("k", 1.0)
            wait_for(lambda: fake_clock.waiters, what="the sender waiting on its clock (its batch timer set)")
            reporter.write_stats(7)
            if not prompt:
                # The batch timer cannot fire before its interval from the sender's start ...
                fake_clock.advance(2.75)
                holds_for(lambda: not peer.state.writes("Cat"), 0.3, what="no summary before the batch interval")
                fake_clock.advance(0.25)
            # ... and on a clock that does not move, only a prompt summary sends itself.
            wait_for(lambda: peer.state.writes("Cat"), what="the summary")
            assert [w.step for w in peer.state.writes("Cat")] == [7]
            assert peer.state.values("Cat", "k") == [1.0]
    finally:
        sp.shutdown(0)


def test_properties_are_made_msgpack_safe(address) -> None:
    class Opaque:
        def __str__(self) -> str:
            return "<opaque>"

    reporter = StatsReporter("Cat")
    value = {
        "lr": np.float32(0.5), "steps": np.int64(3), "obj": Opaque(), 7: "int key",
        "nested": {"t": (1, 2), "s": {"only"}, "deep": [[[[[[[[[[[[[[[[[["bottom"]]]]]]]]]]]]]]]]]]},
        "long": "é" * 40000, "big": 2**70, "none": None, "flag": True, "array": np.arange(3),
    }
    with AckPeer(address) as peer:
        reporter.add_property(StatsPropertyType.HYPERPARAMETERS, value)
        assert sp.flush(30)
        [record] = peer.state.properties()
    got = record.value
    assert record.property_type is StatsPropertyType.HYPERPARAMETERS
    assert got["lr"] == 0.5 and got["steps"] == 3 and got["obj"] == "<opaque>" and got["7"] == "int key"
    assert got["nested"]["t"] == [1, 2] and got["nested"]["s"] == ["only"]
    assert isinstance(got["nested"]["deep"][0][0][0][0][0][0][0][0][0][0][0][0][0], str)
    assert got["long"].startswith("éé") and len(got["long"].encode()) <= 64 * 1024
    assert got["big"] == str(2**70) and got["none"] is None and got["flag"] is True and got["array"] == [0, 1, 2]


# --- delivery -------------------------------------------------------------------

def test_flush_is_true_once_acked_and_false_without_a_collector(address) -> None:
    reporter = StatsReporter("Cat")
    assert sp.flush(1.0)  # nothing recorded yet
    reporter.add_stat("a", 1.0)
    reporter.write_stats(1)
    assert sp.flush(0.3) is False
    state = PeerState()
    with AckPeer(address, state):
        assert sp.flush(30)
        counters = sp.client_counters()
        assert counters["acked_seq"] == counters["last_seq"] >= 1
        assert counters["buffer_frames"] == 0 and counters["buffer_bytes"] == 0
        assert state.values("Cat", "a") == [1.0]
    with AckPeer(address, state, ack=False):
        reporter.add_stat("a", 2.0)
        assert sp.flush(0.3) is False
        wait_for(lambda: state.values("Cat", "a") == [1.0, 2.0], what="unacked frame to arrive")


def test_a_collector_that_lost_its_sender_table_accepts_the_trainer_mid_stream(address) -> None:
    reporter = StatsReporter("Cat")
    with AckPeer(address):
        reporter.add_stat("a", 1.0)
        assert sp.flush(30)
    # A new peer that never heard of this sender (its journal is gone): the
    # trainer's lowest_sendable says everything below its next frame is settled.
    fresh = PeerState()
    with AckPeer(address, fresh):
        reporter.add_stat("a", 2.0)
        reporter.write_stats(2)
        assert sp.flush(30)
    assert fresh.values("Cat", "a") == [2.0]
    assert fresh.gaps == 0


def test_resend_after_the_peer_restarts_arrives_exactly_once(address) -> None:
    reporter = StatsReporter("Cat")
    state = PeerState()
    with AckPeer(address, state):
        for i in range(100):
            reporter.add_stat("a", i)
        reporter.write_stats(1)
        assert sp.flush(30)
    # Peer down: the trainer carries on, frames wait in its buffer.
    for i in range(100, 300):
        reporter.add_stat("a", i)
        if i % 50 == 0:
            reporter.write_stats(i)
    reporter.write_stats(300)
    assert sp.flush(0.2) is False
    # A peer that takes frames without acking, then dies: lost acks mean re-sends.
    with AckPeer(address, state, ack=False):
        wait_for(lambda: len(state.values("Cat", "a")) == 300, what="frames to reach the silent peer")
    with AckPeer(address, state):
        assert sp.flush(30)
    assert state.values("Cat", "a") == [float(i) for i in range(300)]
    assert [w.step for w in state.writes("Cat")] == [1, 100, 150, 200, 250, 300]
    assert state.gaps == 0 or state.duplicates > 0
    assert sp.client_counters()["frames_resent"] > 0
    assert len(state.senders()) == 1 and len(state.hellos()) == 1


def test_a_lost_frame_is_sent_again_after_the_ack_timeout(tmp_path, fake_clock) -> None:
    address = _setup(tmp_path)
    try:
        reporter = StatsReporter("Cat")
        with AckPeer(address) as peer:
            reporter.add_stat("a", 0.0)
            assert sp.flush(30)
            resent = sp.client_counters()["frames_resent"]
            peer.lose = 1  # the next frame vanishes; the ones after it are gaps to the peer
            sent = sp.client_counters()["frames_sent"]
            for i in range(1, 4):
                reporter.add_stat("a", i)
                reporter.write_stats(i)  # a prompt summary: each value in a frame of its own, sent at once
                wait_for(lambda: sp.client_counters()["frames_sent"] >= sent + i, what=f"value {i} sent")
            wait_for(lambda: peer.state.gaps == 2, what="values 2 and 3 at the peer after the lost one")
            # No reconnect and no acks: only the timer, on the client's clock, can bring them back.
            fake_clock.advance(RESEND_AFTER - 0.25)
            holds_for(lambda: sp.client_counters()["frames_resent"] == resent, 0.3,
                      what="nothing sent again before the ack timeout")
            fake_clock.advance(0.25)
            wait_for(lambda: peer.state.values("Cat", "a") == [0.0, 1.0, 2.0, 3.0], what="the lost value, sent again")
            assert sp.flush(30)
            assert sp.client_counters()["frames_resent"] - resent == 3  # the lost frame and the two after it
            assert peer.state.gaps == 2
    finally:
        sp.shutdown(0)


def test_exit_waits_its_linger_for_acks_and_no_longer(tmp_path, fake_clock) -> None:
    address = _setup(tmp_path, linger=2.0)
    with AckPeer(address, ack=False) as peer:
        reporter = StatsReporter("Cat")
        reporter.add_stat("a", 1.0)
        reporter.write_stats(1)
        wait_for(lambda: peer.state.writes("Cat"), what="the frame at the peer, which never acks")
        closed = threading.Event()
        closer = threading.Thread(target=lambda: (sp.shutdown(), closed.set()), name="closer")
        closer.start()
        try:
            # The sender thread waits on the clock at most once; two waiters: the exit waits too.
            wait_for(lambda: fake_clock.waiters >= 2, what="shutdown waiting for acks")
            fake_clock.advance(1.75)
            holds_for(lambda: not closed.is_set(), 0.3, what="shutdown waiting within its linger")
            fake_clock.advance(0.25)
            wait_for(closed.is_set, what="shutdown ending once its linger passed without a sign of life")
        finally:
            fake_clock.advance(3600.0)  # a failed test leaves no thread waiting
            closer.join(30)
        assert [b.info["pid"] for b in peer.state.byes()] == [os.getpid()]  # the goodbye went before the wait


def test_trainer_started_before_the_peer(address) -> None:
    reporter = StatsReporter("Cat")
    before = sp.client_counters().get("values_recorded", 0)
    for i in range(1000):
        reporter.add_stat("a", i)
    reporter.write_stats(10)
    wait_for(lambda: sp.client_counters().get("values_recorded") == before + 1000, what="values framed")
    with AckPeer(address) as peer:
        assert sp.flush(30)
        assert peer.state.values("Cat", "a") == [float(i) for i in range(1000)]
        assert [w.step for w in peer.state.writes()] == [10]


def test_buffer_full_with_peer_down_stays_bounded_and_keeps_markers(tmp_path) -> None:
    limit = 64 * 1024
    address = _setup(tmp_path, buffer_bytes=limit)
    try:
        reporter = StatsReporter("Cat")
        before = sp.client_counters().get("values_dropped", 0)
        recorded = sp.client_counters().get("values_recorded", 0)
        total = 60_000
        for i in range(total):
            reporter.add_stat("a", i)
            if i % 1000 == 999:
                reporter.write_stats(i)
        reporter.add_property(StatsPropertyType.SELF_PLAY, {"elo": 1})
        wait_for(lambda: sp.client_counters()["values_queued"] == 0
                 and sp.client_counters()["values_recorded"] == recorded + total, what="queue drained")
        counters = sp.client_counters()
        assert counters["buffer_bytes_max"] <= limit
        assert counters["buffer_bytes"] <= limit
        dropped = counters["values_dropped"] - before
        assert dropped > total // 2
        assert counters["frames_dropped"] == 0
        with AckPeer(address) as peer:
            assert sp.flush(30)
            received = peer.state.values("Cat", "a")
            # Markers and properties are never dropped; stats are dropped oldest first.
            assert [w.step for w in peer.state.writes()] == [i for i in range(total) if i % 1000 == 999]
            assert [p.value for p in peer.state.properties()] == [{"elo": 1}]
            assert len(received) + dropped == total
            assert received == [float(i) for i in range(total - len(received), total)]
            assert peer.state.gaps == 0
    finally:
        sp.shutdown(0.5)


def test_eight_threads_adding_concurrently_lose_nothing(address) -> None:
    reporter = StatsReporter("Cat")
    per_thread = 20_000
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            reporter.add_stat(f"t{n}", i)
            reporter.add_stat("shared", 1.0, Agg.SUM)

    with AckPeer(address) as peer:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        reporter.write_stats(1)
        assert sp.flush(60)
        for n in range(8):
            assert peer.state.values("Cat", f"t{n}") == [float(i) for i in range(per_thread)]
        assert len(peer.state.values("Cat", "shared")) == 8 * per_thread
        assert peer.state.writes()[-1] == WriteMarker("Cat", 1)


def test_shutdown_says_goodbye_and_a_new_client_gets_a_new_identity(address) -> None:
    reporter = StatsReporter("Cat")
    with AckPeer(address) as peer:
        reporter.add_stat("a", 1.0)
        sp.shutdown(timeout=10)
        assert len(peer.state.byes()) == 1
        reporter.add_stat("a", 2.0)
        assert sp.flush(30)
        first, second = peer.state.senders()
        assert first != second
        assert peer.state.values("Cat", "a", sender=second) == [2.0]


def test_dropped_frames_raise_lowest_sendable_and_the_peer_accepts_what_follows(tmp_path) -> None:
    limit = 64 * 1024
    address = _setup(tmp_path, buffer_bytes=limit)
    try:
        reporter = StatsReporter("Cat")
        for chunk in range(30):
            for i in range(2000):
                reporter.add_stat("a", chunk * 2000 + i)
            sp.flush(0.0)  # closes a stats-only frame (no write marker to keep it)
        wait_for(lambda: sp.client_counters()["values_queued"] == 0 and sp.client_counters()["lowest_sendable"] > 1,
                 what="frames dropped at the bottom")
        counters = sp.client_counters()
        assert counters["buffer_bytes_max"] <= limit
        with AckPeer(address) as peer:
            assert sp.flush(30)
            received = peer.state.values("Cat", "a")
            assert received and received == [float(i) for i in range(60_000 - len(received), 60_000)]
            assert peer.state.gaps == 0
            assert peer.state.frames()[0].lowest_sendable == counters["lowest_sendable"] > 1
    finally:
        sp.shutdown(0.5)


def test_a_checked_key_is_remembered_but_bad_keys_are_refused_every_time(address) -> None:
    from statbus.pipeline.trainer import reporter as reporter_module

    reporter = StatsReporter("Cat")
    for _ in range(2):  # the second time from the cache of checked keys
        with pytest.raises(TypeError, match="stat key must be a str"):
            reporter.add_stat(["not", "a", "key"], 1.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="stat key '' must have 1 to"):
            reporter.add_stat("", 1.0)
        with pytest.raises(ValueError, match="must have 1 to"):
            reporter.add_stat("k" * 1025, 1.0)
    reporter.add_stat("good", 1.0)
    reporter.add_stat("good", 2.0)
    assert reporter._idents == {"good": ("Cat", "good")}
    many = StatsReporter("Many")
    for i in range(reporter_module.MAX_CACHED_KEYS + 10):
        many.add_stat(f"k{i}", 1.0)
    assert len(many._idents) == reporter_module.MAX_CACHED_KEYS


def _periods(peer, category: str, key: str) -> List[List[float]]:
    """The values of ``key`` per period, in order (a period ends at each WriteMarker)."""
    periods: List[List[float]] = [[]]
    for _, record in peer.state.records():
        if isinstance(record, WriteMarker) and record.category == category:
            periods.append([])
        elif getattr(record, "category", None) == category and getattr(record, "key", None) == key:
            periods[-1].extend(record.values)
    return periods


def test_a_value_appended_after_the_sender_copied_its_entry_is_re_added_once(address) -> None:
    # The lock-free add_stat's one race, replayed step by step: a thread holds an entry's
    # list, the entries are sealed and taken by the sender, then the thread appends.
    reporter = StatsReporter("Cat")
    ident = ("Cat", "k")
    with AckPeer(address) as peer:
        reporter.add_stat("k", 1.0)
        client = sp.trainer.reporter._client
        sealed = client.current
        held = sealed[ident]
        reporter.write_stats(1)
        assert sp.flush(30)  # sealed, copied and sent without what follows
        held.append(2.0)  # three late appends, by "three threads"
        held.append(3.0)
        held.append(4.0)
        for _ in range(4):  # one more settle than late values: it must find nothing left
            client.settle_late(sealed, ident)
        # Not yet copied when the late thread settles: the sender's copy will hold the value.
        reporter.add_stat("k", 5.0)
        later = client.current
        with client.lock:
            client._seal_locked()
            later[ident].append(6.0)
        client.settle_late(later, ident)
        reporter.write_stats(2)
        assert sp.flush(30)
        assert _periods(peer, "Cat", "k") == [[1.0], [2.0, 3.0, 4.0, 5.0, 6.0], []]


def test_threads_racing_write_stats_lose_and_double_nothing(address) -> None:
    # Switch threads as often as the interpreter allows, so that appends land between
    # the sender's copies and the seals as often as they ever will.
    import sys

    reporter = StatsReporter("Race")
    per_thread, nthreads = 20_000, 6
    start = threading.Barrier(nthreads + 1)
    done = threading.Event()

    def add(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            reporter.add_stat("shared", float(n * per_thread + i), Agg.SUM)

    def write() -> None:
        start.wait()
        step = 0
        while not done.is_set():
            step += 1
            reporter.write_stats(step)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with AckPeer(address) as peer:
            adders = [threading.Thread(target=add, args=(n,)) for n in range(nthreads)]
            writer = threading.Thread(target=write)
            for thread in [*adders, writer]:
                thread.start()
            for thread in adders:
                thread.join()
            done.set()
            writer.join()
            reporter.write_stats(10**9)
            assert sp.flush(60)
            got = peer.state.values("Race", "shared")
            counters = sp.trainer.reporter._client.snapshot()  # this client's own, not earlier tests' retired ones
    finally:
        sys.setswitchinterval(interval)
    assert len(got) == nthreads * per_thread
    assert sorted(got) == [float(i) for i in range(nthreads * per_thread)]
    assert counters["values_dropped"] == 0 and counters["events_dropped"] == 0
