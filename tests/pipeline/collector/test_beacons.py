"""The collector's repeated acks while frames wait (collector/beacons.py): when, to whom, bounded."""

from __future__ import annotations

from statbus.pipeline.collector import beacons
from statbus.pipeline.collector.beacons import BEACON_INTERVAL, BEACON_WINDOW, Beacons


def test_repeats_go_out_only_while_frames_wait_and_once_per_interval():
    b = Beacons()
    b.acked(b"\0a", 3, now=10.0)
    b.acked(b"\0b", 7, now=10.0)
    assert b.due(backlog=False, now=10.0) == []  # an idle collector wakes nobody
    assert b.due(backlog=True, now=10.0) == [(b"\0a", 3), (b"\0b", 7)]
    assert b.due(backlog=True, now=10.0 + BEACON_INTERVAL / 2) == []
    b.acked(b"\0a", 4, now=10.3)  # the latest ack is the one repeated
    assert b.due(backlog=True, now=10.0 + BEACON_INTERVAL) == [(b"\0b", 7), (b"\0a", 4)]
    assert b.sent == 4


def test_connections_not_acked_within_the_window_are_forgotten():
    b = Beacons()
    b.acked(b"\0old", 1, now=0.0)
    b.acked(b"\0new", 2, now=BEACON_WINDOW)
    assert b.due(backlog=True, now=BEACON_WINDOW + 0.1) == [(b"\0new", 2)]
    assert b.due(backlog=True, now=2 * BEACON_WINDOW + 1) == []


def test_the_table_is_bounded(monkeypatch):
    monkeypatch.setattr(beacons, "MAX_HEARD", 3)
    b = Beacons()
    for i in range(5):
        b.acked(bytes([0, i]), i, now=1.0 + i)
    assert b.due(backlog=True, now=6.0) == [(bytes([0, 2]), 2), (bytes([0, 3]), 3), (bytes([0, 4]), 4)]
