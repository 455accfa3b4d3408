"""The hand-off between training threads and the sender (trainer/handoff.py).

Unit tests of the Handoff on its real wake-up pipe: sealing keeps the order of calls, a value
appended after the sender copied its entry is re-added exactly once, the queue stays bounded when
the sender is slow or gone; then a real client whose sender never drains.
"""

from __future__ import annotations

import select

import pytest

import statbus.pipeline as sp
from statbus.pipeline import StatsReporter
from statbus.pipeline.trainer import handoff as handoff_module
from statbus.pipeline.trainer.framing import BATCH_VALUES, SetStatEvent, StatsEvent, WriteEvent
from statbus.pipeline.trainer.handoff import ENTRY_VALUES, MAX_CURRENT_ENTRIES, MAX_PENDING_EVENTS, Handoff

AVERAGE, SUM = sp.StatsAggregationMethod.AVERAGE, sp.StatsAggregationMethod.SUM


@pytest.fixture
def handoff():
    h = Handoff({"events_dropped": 0})
    try:
        yield h
    finally:
        h.close_pipe()


def add(h: Handoff, category: str, key: str, value: float, aggregation=AVERAGE) -> None:
    """``add_stat`` as the reporter does it: the lock-free append, else the slow path under the lock."""
    values = h.current.get((category, key))
    if values is not None and values[0] is aggregation and len(values) <= ENTRY_VALUES:
        values.append(value)
        return
    with h.lock:
        wake = h.open_entry_locked((category, key), value, aggregation)
    if wake:
        h.wake()


def woken(h: Handoff) -> bool:
    return bool(select.select([h.wake_fd], [], [], 0)[0])


def test_a_call_other_than_add_seals_the_values_before_it_so_order_is_kept(handoff) -> None:
    add(handoff, "C", "k", 1.0)
    add(handoff, "C", "k", 2.0)
    handoff.add_event(SetStatEvent("C", "k", 9.0), wake=False)
    add(handoff, "C", "k", 3.0)
    handoff.add_event(WriteEvent("C", 1), wake=False)
    add(handoff, "C", "j", 4.0, SUM)
    events = list(handoff.take_all())
    assert events == [StatsEvent({("C", "k"): [AVERAGE, 1.0, 2.0]}), SetStatEvent("C", "k", 9.0),
                      StatsEvent({("C", "k"): [AVERAGE, 3.0]}), WriteEvent("C", 1),
                      StatsEvent({("C", "j"): [SUM, 4.0]})]  # the current entries last
    assert not handoff.queue and not handoff.current and handoff.snapshot()["values_queued"] == 0


def test_a_new_aggregation_a_full_entry_or_too_many_keys_seal_the_current_entries(handoff) -> None:
    add(handoff, "C", "k", 1.0, AVERAGE)
    add(handoff, "C", "k", 2.0, SUM)  # a new aggregation: the AVERAGE value goes first
    assert [e.sealed for e in handoff.queue] == [{("C", "k"): [AVERAGE, 1.0]}]
    for i in range(ENTRY_VALUES + 1):
        add(handoff, "C", "k", float(i), SUM)
    assert len(handoff.queue) == 2 and len(handoff.current[("C", "k")]) - 1 <= ENTRY_VALUES
    for i in range(MAX_CURRENT_ENTRIES + 1):
        add(handoff, "C", f"key{i}", 0.0)
    assert len(handoff.current) <= MAX_CURRENT_ENTRIES
    values = [v for e in handoff.take_all() for entry in e.sealed.values() for v in entry[1:]]
    assert len(values) == 2 + (ENTRY_VALUES + 1) + MAX_CURRENT_ENTRIES + 1  # nothing lost on the way


def test_a_value_appended_after_the_senders_copy_is_re_added_exactly_once(handoff) -> None:
    add(handoff, "C", "k", 1.0)
    entry = handoff.current[("C", "k")]
    sealed = handoff.current
    (taken,) = handoff.take_all()  # the sender copied [1.0]
    # Two training threads had found the entry before the take and append after it.
    entry.append(2.0)
    entry.append(3.0)
    for _ in range(3):  # a third late caller finds nothing left to claim
        handoff.settle_late(sealed, ("C", "k"))
    assert taken.sealed[("C", "k")] == [AVERAGE, 1.0]
    assert handoff.current[("C", "k")] == [AVERAGE, 2.0, 3.0]


def test_the_wake_pipe_is_written_once_until_the_sender_consumes_it(handoff) -> None:
    assert not woken(handoff)
    handoff.add_event(WriteEvent("C", 1), wake=True)
    handoff.add_event(WriteEvent("C", 2), wake=True)
    assert woken(handoff)
    handoff.consume_wake()
    assert not woken(handoff)
    handoff.add_event(WriteEvent("C", 3), wake=False)  # a marker alone does not wake...
    assert not woken(handoff)
    for step in range(BATCH_VALUES):  # ...a long queue does
        handoff.add_event(WriteEvent("C", step), wake=False)
    assert woken(handoff)


def test_with_the_sender_gone_values_are_counted_dropped_and_the_queue_discarded() -> None:
    h = Handoff({"events_dropped": 0})
    h.close_pipe()
    add(h, "C", "k", 1.0)
    h.add_event(WriteEvent("C", 1), wake=False)  # seals [1.0]: dropped, the sender is gone
    assert h.counters["events_dropped"] == 1 and list(h.queue) == [WriteEvent("C", 1)]
    for step in range(MAX_PENDING_EVENTS + 1):
        h.queue.append(WriteEvent("C", step))
    h.wake()
    assert not h.queue and h.pending() == (h.counters["events_dropped"], 0)


def test_pending_counts_what_the_sender_has_not_taken(handoff) -> None:
    add(handoff, "C", "k", 1.0)
    add(handoff, "C", "k", 2.0)
    handoff.add_event(WriteEvent("C", 1), wake=False)
    handoff.add_event(SetStatEvent("C", "k", 3.0), wake=False)
    add(handoff, "C", "j", 4.0)
    assert handoff.pending() == (4, 1)
    handoff.take_all()
    assert handoff.pending() == (0, 0)


# --- a real client whose sender never drains --------------------------------------------------


@pytest.mark.usefixtures("fresh_trainer_state")
def test_client_seals_keep_order_across_aggregation_changes_and_cap_memory(tmp_path, monkeypatch) -> None:
    # A sender that never drains (a long batch interval, and never woken): the
    # current entries and the sealed values stay bounded, the rest is counted as dropped.
    monkeypatch.setattr(handoff_module, "MAX_PENDING_VALUES", 4 * handoff_module.ENTRY_VALUES)
    monkeypatch.setattr(handoff_module.Handoff, "wake", lambda self: None)
    sp.configure(run_id="t", results_dir=str(tmp_path), address=f"ipc://{tmp_path}/d", autostart=False,
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
