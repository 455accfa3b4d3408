"""The state page: fields, persistence of ``committed``, reads from another process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from statbus.workers.statepage import NO_INFLIGHT, PAGE_SIZE, HostState, StatePage, StatePageError, read_state
from waiting import wait_for


def test_fresh_page_defaults_and_fields_round_trip(tmp_path):
    path = str(tmp_path / "consumers" / "p.state")
    with StatePage(path, create=True, initial_committed=1234) as page:
        assert os.path.getsize(path) == PAGE_SIZE
        assert page.committed == 1234
        assert page.inflight == NO_INFLIGHT
        assert page.state == HostState.STARTING
        page.committed = 2**64 - 1
        page.inflight = 77
        page.heartbeat = 1.5
        page.busy_since = 2.25
        page.pid = 4242
        page.state = HostState.READY
        page.delivered = 9
        page.summaries = 3
        page.disk_full_since = 5.5
        snap = page.snapshot()
    assert snap == (2**64 - 1, 77, 1.5, 2.25, 4242, HostState.READY, 9, 3, 5.5)
    assert read_state(path) == snap


def test_existing_page_keeps_committed_and_host_reset_keeps_it_too(tmp_path):
    path = str(tmp_path / "p.state")
    with StatePage(path, create=True) as page:
        page.committed = 500
        page.inflight = 480
        page.delivered = 10
    # initial_committed applies only to a page that does not exist yet.
    with StatePage(path, create=True, initial_committed=7) as page:
        assert page.committed == 500
        assert page.inflight == 480  # the supervisor reads it after an exit
        page.reset_for_host(pid=99, now=10.0)
        assert page.snapshot() == (500, NO_INFLIGHT, 10.0, 0.0, 99, HostState.STARTING, 0, 0, 0.0)


def test_missing_short_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(StatePageError, match="does not exist"):
        StatePage(str(tmp_path / "missing.state"))
    short = tmp_path / "short.state"
    short.write_bytes(b"x" * 100)
    with pytest.raises(StatePageError, match="100 bytes"):
        StatePage(str(short), create=True)
    foreign = tmp_path / "foreign.state"
    foreign.write_bytes(b"\0" * PAGE_SIZE)
    with pytest.raises(StatePageError, match="magic"):
        StatePage(str(foreign))
    assert read_state(str(foreign)) is None
    assert read_state(str(tmp_path / "missing.state")) is None


def test_readonly_page_cannot_be_written(tmp_path):
    path = str(tmp_path / "p.state")
    StatePage(path, create=True).close()
    with StatePage(path, readonly=True) as page:
        with pytest.raises(TypeError):
            page.committed = 5


WRITER = textwrap.dedent(
    """
    import sys, threading
    from statbus.workers.statepage import StatePage, HostState
    page = StatePage(sys.argv[1], create=True)
    page.committed = 0x0101010101010101
    page.heartbeat = 1.0
    page.state = HostState.READY
    print("ready", flush=True)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    n = 0
    # Every byte of committed changes at every write: a torn read would show
    # a value whose bytes differ.
    while not done.is_set():
        n += 1
        page.committed = (n % 255 + 1) * 0x0101010101010101
        page.heartbeat = float(n + 1)
    page.close()
    """
)


def test_another_process_reads_whole_fields_while_they_change(tmp_path):
    path = str(tmp_path / "p.state")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        with StatePage(path, readonly=True) as page:
            assert page.state == HostState.READY
            committed_seen = set()
            heartbeats = set()
            def seen_enough() -> bool:
                committed = page.committed.to_bytes(8, "little")
                heartbeat = page.heartbeat
                assert len(set(committed)) == 1 and committed[0] != 0, committed.hex()
                assert heartbeat >= 1.0 and heartbeat == int(heartbeat), heartbeat
                committed_seen.add(committed)
                heartbeats.add(heartbeat)
                return len(committed_seen) > 20 and len(heartbeats) > 20

            # The writer may be starved on a busy machine: 30 s.
            wait_for(seen_enough, 30, "the writer's updates, seen by the reader", interval=0)
    finally:
        writer.stdin.close()
        try:
            writer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            writer.kill()
            writer.wait()
        writer.stdout.close()
    assert writer.returncode == 0
