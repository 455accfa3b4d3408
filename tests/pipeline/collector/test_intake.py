"""The collector's intake (collector/intake.py): the delivery rule on a fake clock, then through a
collector process with real sockets (duplicates, gaps, malformed frames)."""

from __future__ import annotations

import msgpack
import zmq

from collector_helpers import RawTrainer, journal_frames, journal_summaries, settle, wait_for
from statbus.pipeline.collector.intake import Intake, Verdict
from statbus.pipeline.control import control_request
from statbus.pipeline.wire import encode_frame, hello_record, stat_record, write_record
from statbus.plugins.records import pack_values


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



# --- through a collector process ------------------------------------------------------------


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

