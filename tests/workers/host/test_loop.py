"""The worker host's commit cadence, on an injected clock: by count, by time, one by one while replaying."""

from __future__ import annotations

from typing import List

from statbus.workers.fetch_protocol import EntryKind, FetchedEntry
from statbus.workers.host.config import HostConfig
from statbus.workers.host.loop import COMMIT_ENTRIES, COMMIT_INTERVAL, StopFlag, WorkerHost
from statbus.workers.statepage import StatePage


class _Writers:
    """Counts deliveries; remembers how many had been delivered at each flush (a commit follows each)."""

    def __init__(self, clock: "_Clock", step: float) -> None:
        self.clock, self.step = clock, step
        self.delivered = 0
        self.flushed_at: List[int] = []

    def deliver(self, entry: FetchedEntry) -> bool:
        self.delivered += 1
        self.clock.now += self.step  # each delivery takes this long
        return entry.kind is EntryKind.SUMMARY

    def flush(self) -> None:
        self.flushed_at.append(self.delivered)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _host(tmp_path, step: float, replaying: bool = False):
    clock = _Clock()
    writers = _Writers(clock, step)
    page = StatePage(str(tmp_path / "p.state"), create=True)
    config = HostConfig("p", "g", "m:f", "ipc://x", str(tmp_path / "p.state"), {})
    host = WorkerHost(config, writers, page, client=None, stop=StopFlag(), clock=clock)  # type: ignore[arg-type]
    host._replaying = replaying
    return host, writers, page


def _entries(count: int, kind: EntryKind = EntryKind.BATCH) -> List[FetchedEntry]:
    return [FetchedEntry(10 * i, kind, b"") for i in range(count)]


def test_a_fast_plugin_commits_every_commit_entries(tmp_path):
    host, writers, page = _host(tmp_path, step=0.0)
    try:
        host._deliver_reply(_entries(100), next_after=1000, committed=0)
        assert writers.flushed_at == [32, 64, 96, 100]
        assert COMMIT_ENTRIES == 32 and page.committed == 1000
    finally:
        page.close()


def test_a_slow_plugin_commits_every_commit_interval(tmp_path):
    step = COMMIT_INTERVAL * 0.4  # the third delivery crosses the interval
    host, writers, page = _host(tmp_path, step=step)
    try:
        host._deliver_reply(_entries(10), next_after=100, committed=0)
        assert writers.flushed_at == [3, 6, 9, 10]
        assert page.committed == 100
    finally:
        page.close()


def test_a_replaying_host_commits_summary_by_summary(tmp_path):
    host, writers, page = _host(tmp_path, step=0.0, replaying=True)
    try:
        host._deliver_reply(_entries(5, EntryKind.SUMMARY), next_after=50, committed=0)
        assert writers.flushed_at == [1, 2, 3, 4, 5]
    finally:
        page.close()


def test_entries_before_the_cursor_are_not_delivered_again(tmp_path):
    host, writers, page = _host(tmp_path, step=0.0)
    try:
        host._deliver_reply(_entries(10), next_after=100, committed=50)
        assert writers.delivered == 5  # positions 50..90
    finally:
        page.close()
