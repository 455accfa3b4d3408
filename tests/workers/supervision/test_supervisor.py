"""The supervisor with real processes: stand-in worker hosts driven by plugin options
(supervision_harness.py), then real hosts with zoo plugins.

Process tests wait for conditions with deadlines; timing-policy tests use a fake clock.  What
one plugin's watcher does (hangs, memory cap, poison, kills from outside) is in test_watcher.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import msgpack
import psutil
import pytest
import zmq

from statbus.plugins import StatsAggregationMethod
from statbus.plugins.records import SummaryRecord, pack_values
from statbus.workers.fetch_protocol import EntryKind, FetchedEntry, decode_fetch, encode_reply
from statbus.workers.supervision.config import Config
from statbus.workers.supervision.policy import PolicyConfig
from statbus.workers.supervision.states import WorkerState
from statbus.workers.supervision.supervisor import SupervisorError, describe_exit, last_error_line
from supervision_harness import FakeClock, Harness, _alive, config
from zoo import zoo_env, zoo_output, zoo_plugin


def test_start_ready_status_and_stop(make: Callable[..., Harness], tmp_path: Path) -> None:
    h = make(["alpha", "beta"], config(beta={"enabled": False}))
    h.sup.start()
    h.wait_state("alpha", WorkerState.READY)
    alpha = h.status("alpha")
    assert alpha["pid"] and alpha["restarts"] == 0 and alpha["last_error"] is None
    assert h.status("beta")["state"] == "DISABLED" and h.status("beta")["pid"] is None
    assert h.sup.consumers() == ["alpha"]
    h.wait(lambda: (h.status("alpha")["rss_mb"] or 0) > 1, what="an RSS sample")
    assert (h.statbus_dir / "consumers" / "alpha.state").exists()
    assert not (h.statbus_dir / "consumers" / "beta.state").exists()
    assert "starting worker host for alpha" in (h.statbus_dir / "logs" / "alpha.log").read_text()
    # Its own process group, so that signals reach everything it started.
    assert os.getpgid(alpha["pid"]) == alpha["pid"]
    h.sup.stop(timeout=5.0)
    assert h.status("alpha")["state"] == "STOPPED" and h.status("alpha")["pid"] is None
    assert not _alive(alpha["pid"])


def test_hosts_run_their_nice_setting_lower_than_the_collector(make: Callable[..., Harness]) -> None:
    h = make(["background", "level"], config(level={"nice": 0}))
    h.sup.start()
    h.wait_state("background", WorkerState.READY)
    h.wait_state("level", WorkerState.READY)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        # Every thread of the host, started after the renice, inherits it (the heartbeat's too).
        for name, lower in (("background", 10), ("level", 0)):
            host = psutil.Process(h.status(name)["pid"])
            assert {psutil.Process(t.id).nice() for t in host.threads()} == {min(19, ours + lower)}, name
    finally:
        h.sup.stop(timeout=5.0)


def test_crash_then_backoff_then_restart_resumes(make: Callable[..., Harness], tmp_path: Path) -> None:
    counter = str(tmp_path / "count")
    h = make(["crashy"], config(crashy={"options": {"mode": "crash", "inflight": 7, "counter": counter, "ok_after": 2}}))
    h.sup.start()
    h.wait(lambda: h.status("crashy")["restarts"] == 2 and h.status("crashy")["state"] == "READY", what="2 restarts")
    status = h.status("crashy")
    assert status["last_error"] == "WRITER_CRASH: boom at 7"
    assert status["last_exit"] == 70
    assert Path(counter).read_text() == "3"
    assert h.sup.skip_positions("crashy") == frozenset(), "two strikes are not poison"


def test_budget_spent_means_failed_and_others_carry_on(make: Callable[..., Harness], tmp_path: Path) -> None:
    counter = str(tmp_path / "count")
    h = make(
        ["loop", "fine"],
        config(loop={"max_restarts": 2, "options": {"mode": "crash", "counter": counter}}),
    )
    h.sup.start()
    h.wait_state("loop", WorkerState.FAILED)
    loop = h.status("loop")
    assert loop["restarts"] == 2 and Path(counter).read_text() == "3"
    assert "restart budget spent" in loop["last_error"] and "WRITER_CRASH" in loop["last_error"]
    h.wait_state("fine", WorkerState.READY)
    # FAILED keeps its backlog (retention) but does not hold up draining.
    assert "loop" in h.sup.consumers()
    h.sup.tick(0)
    assert h.status("loop")["state"] == "FAILED", "nothing restarts a FAILED plugin by itself"
    # An explicit restart is a clean slate.
    h.sup.restart("loop")
    assert h.status("loop")["state"] == "STARTING"
    h.wait_state("loop", WorkerState.FAILED)
    assert Path(counter).read_text() == "6"


def test_fatal_exit_fails_at_once(make: Callable[..., Harness]) -> None:
    h = make(["broken"], config(broken={"options": {"mode": "exit", "code": 65, "message": "No module named x"}}))
    h.sup.start()
    h.wait_state("broken", WorkerState.FAILED)
    status = h.status("broken")
    assert status["restarts"] == 0
    assert status["last_error"] == "IMPORT_FAILURE: No module named x"


def test_disable_enable_restart(make: Callable[..., Harness]) -> None:
    h = make(["a"], config())
    h.sup.start()
    h.wait_state("a", WorkerState.READY)
    first = h.status("a")["pid"]
    h.sup.restart("a")
    h.wait(lambda: h.status("a")["state"] == "READY" and h.status("a")["pid"] != first, what="restarted")
    assert not _alive(first)
    second = h.status("a")["pid"]
    h.sup.disable("a")
    h.wait(lambda: h.status("a")["state"] == "DISABLED", what="disabled")
    assert not _alive(second)
    assert h.sup.consumers() == []
    with pytest.raises(SupervisorError, match="disabled"):
        h.sup.restart("a")
    h.sup.enable("a")
    h.wait_state("a", WorkerState.READY)
    with pytest.raises(SupervisorError, match="no plugin named"):
        h.sup.disable("nope")


def test_initial_cursor_head_or_backfill(make: Callable[..., Harness]) -> None:
    h = make(
        ["late", "filler"],
        config(late={"enabled": False}, filler={"enabled": False, "backfill": True}),
        count_entries=lambda after, head: (head - after) // 100,
    )
    h.sup.start()
    h.head = 5000
    h.sup.tick(h.head)
    h.sup.enable("late")
    h.sup.enable("filler")
    h.wait(lambda: all(h.status(n)["state"] == "READY" for n in ("late", "filler")), what="both ready")
    assert h.sup.committed("late") == 5000, "enabled mid-run: starts at the head"
    assert h.sup.committed("filler") == 0, "backfill: from the start of the journal"
    assert h.status("late")["lag_bytes"] == 0 and h.status("filler")["lag_bytes"] == 5000
    assert h.status("late")["lag_records"] == 0 and h.status("filler")["lag_records"] == 50
    assert not h.sup.all_caught_up(5000)
    assert h.sup.all_caught_up(0)


def test_committed_cursor_survives_restart(make: Callable[..., Harness], tmp_path: Path) -> None:
    counter = str(tmp_path / "count")
    h = make(["p"], config(p={"options": {"progress": 100, "counter": counter}}))
    h.sup.start()
    h.wait(lambda: h.sup.committed("p") == 100, what="first progress")
    h.sup.restart("p")
    h.wait(lambda: h.sup.committed("p") == 200, what="progress after restart")


def test_interpreter_without_statbus_shows_why(make: Callable[..., Harness], tmp_path: Path) -> None:
    fake = tmp_path / "fakepython"
    fake.write_text("#!/bin/sh\necho \"$0: No module named statbus\" >&2\nexit 1\n")
    fake.chmod(0o755)
    h = make(["other"], config(other={"interpreter": str(fake), "max_restarts": 1}))
    h.sup.start()
    h.wait_state("other", WorkerState.FAILED)
    assert h.status("other")["last_error"].endswith("last: exit status 1: " + str(fake) + ": No module named statbus")


def test_stop_kills_hosts_that_ignore_term(make: Callable[..., Harness], tmp_path: Path) -> None:
    h = make(["deaf"], config(deaf={"call_timeout": 3600, "options": {"mode": "busy"}}), grace=0.2)
    h.sup.start()
    h.wait_state("deaf", WorkerState.READY)
    pid = h.status("deaf")["pid"]
    h.sup.stop(timeout=5.0)
    assert not _alive(pid)
    assert h.status("deaf")["state"] == "STOPPED"


def test_backoff_waits_on_the_injected_clock(make: Callable[..., Harness], tmp_path: Path) -> None:
    clock = FakeClock()
    counter = str(tmp_path / "count")
    h = make(
        ["c"],
        config(c={"options": {"mode": "crash", "counter": counter, "ok_after": 1}}),
        clock=clock,
        policy=PolicyConfig(backoff_initial=10.0, backoff_jitter=0.0),
    )
    h.sup.start()
    h.wait_state("c", WorkerState.BACKOFF)
    assert h.status("c")["restart_in"] == 10.0
    for _ in range(20):
        h.sup.tick(0)
    assert h.status("c")["state"] == "BACKOFF", "not due yet on the fake clock"
    clock.now += 9.9
    h.sup.tick(0)
    assert h.status("c")["state"] == "BACKOFF"
    clock.now += 0.2
    h.sup.tick(0)
    assert h.status("c")["state"] == "STARTING"
    h.wait_state("c", WorkerState.READY)


def test_describe_exit_and_error_line(tmp_path: Path) -> None:
    assert describe_exit(-signal.SIGSEGV, None) == "killed by SIGSEGV"
    assert describe_exit(68, None) == "LOST_COLLECTOR"
    assert describe_exit(3, None) == "exit status 3"
    assert describe_exit(1, None, "No module named statbus") == "exit status 1: No module named statbus"
    assert describe_exit(70, None, "noise") == "WRITER_CRASH"
    assert describe_exit(70, "WRITER_CRASH: x") == "WRITER_CRASH: x"
    log = tmp_path / "p.log"
    log.write_bytes(b"statbus-worker-error: WRITER_CRASH: old\n")
    offset = log.stat().st_size
    with open(log, "ab") as handle:
        handle.write(b"noise\nstatbus-worker-error: IMPORT_FAILURE: a\nmore noise\n")
    assert last_error_line(str(log), offset) == "IMPORT_FAILURE: a"
    assert last_error_line(str(log), log.stat().st_size) is None, "errors of an earlier host do not count"


# --- the real worker host, fed by a minimal in-test fetch server ---------------------

STEP = 100
"""Distance between two entry positions in the fake journal."""


def summary_entry(position: int, category: str, step: int) -> FetchedEntry:
    record = SummaryRecord(category, step, (("reward", StatsAggregationMethod.AVERAGE, pack_values([float(step)])),))
    return FetchedEntry(position, EntryKind.SUMMARY, msgpack.packb(record.to_msgpack(), use_bin_type=True))


class FetchServer:
    """Serves a fixed list of entries per the fetch protocol, honouring the skip sets."""

    def __init__(self, context: zmq.Context, address: str, entries: List[FetchedEntry], skip: Callable[[str], frozenset]):
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(address)
        self.entries = entries
        self.head = entries[-1].position + STEP if entries else 0
        self.skip = skip
        self.parked: List[tuple] = []

    def pump(self) -> None:
        while self.socket.poll(10):
            frames = self.socket.recv_multipart()
            request = decode_fetch(frames[-1])
            skip = self.skip(request.plugin)
            todo = [e for e in self.entries if e.position >= request.after]
            sent = [e for e in todo if e.position not in skip][:5]
            if not todo:
                self.parked.append((time.monotonic(), frames[:-1], request.after))
                continue
            next_after = sent[-1].position + STEP if sent else self.head
            skipped = sum(1 for e in todo if e.position in skip and e.position < next_after)
            self.socket.send_multipart(frames[:-1] + [encode_reply(sent, next_after, self.head, skipped)])
        now = time.monotonic()
        for parked in [p for p in self.parked if now - p[0] > 0.2]:
            self.parked.remove(parked)
            self.socket.send_multipart(parked[1] + [encode_reply([], parked[2], self.head, 0)])

    def close(self) -> None:
        self.socket.close(linger=0)


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture
def real_host(tmp_path: Path, context: zmq.Context) -> Iterator[Callable[..., tuple]]:
    made: List[tuple] = []

    def factory(names: List[str], settings: Config, entries: List[FetchedEntry]) -> tuple:
        harness = Harness(tmp_path, subprocess.Popen, [zoo_plugin(n) for n in names], settings, env=zoo_env(), grace=1.0)
        server = FetchServer(context, "ipc://" + str(tmp_path / "work"), entries, harness.sup.skip_positions)
        harness.pump = server.pump
        harness.head = server.head
        made.append((harness, server))
        return harness, server

    try:
        yield factory
    finally:
        for harness, server in made:
            harness.sup.stop(timeout=10.0)
            server.close()


def test_real_hosts_catch_up_and_poison_is_set_aside(real_host: Callable[..., tuple], tmp_path: Path) -> None:
    entries = [summary_entry(i * STEP, "Poison" if i == 4 else "Env", i) for i in range(10)]
    h, server = real_host(["good", "poison", "import_error"], config(), entries)
    h.sup.start()
    h.wait(lambda: h.sup.all_caught_up(server.head), timeout=90, what="all caught up")
    assert h.status("good")["state"] == "READY" and h.status("good")["restarts"] == 0
    assert h.sup.skip_positions("good") == frozenset()
    assert h.sup.skip_positions("poison") == frozenset({400})
    assert h.status("poison")["restarts"] == 3 and "WRITER_CRASH" in h.status("poison")["last_error"]
    assert h.dead_letter_calls == [("poison", 400)]
    import_error = h.status("import_error")
    assert import_error["state"] == "FAILED" and import_error["last_error"].startswith("IMPORT_FAILURE")
    assert import_error["restarts"] == 0
    good_steps = [line["step"] for line in read_jsonl(zoo_output(str(tmp_path), "run", "good"))]
    assert good_steps == list(range(10))
    poison_steps = [line["step"] for line in read_jsonl(zoo_output(str(tmp_path), "run", "poison"))]
    assert sorted(set(poison_steps)) == [0, 1, 2, 3, 5, 6, 7, 8, 9], "every other summary reached it"
    # A graceful stop: TERM, the hosts exit 0 on their own.
    pids = [h.status(name)["pid"] for name in ("good", "poison")]
    h.sup.stop(timeout=10.0)
    assert h.status("good")["state"] == "STOPPED" and h.status("good")["last_exit"] == 0
    assert not any(_alive(pid) for pid in pids)


def test_real_hosts_segfault_hang_and_leak_are_contained(real_host: Callable[..., tuple], tmp_path: Path) -> None:
    entries = [summary_entry(i * STEP, "Env", i) for i in range(4)]
    h, server = real_host(
        ["segfault", "hangs", "leaks", "good"],
        config(hangs={"call_timeout": 0.5}, leaks={"memory_cap_mb": 200, "options": {"megabytes": 60}}),
        entries[:1],
    )
    server.entries = entries[:1]
    h.sup.start()
    # Every summary crashes or hangs these two: the first record is set aside
    # after three strikes each, and then they are caught up (nothing else to do).
    h.wait(lambda: h.sup.skip_positions("segfault") == {0} and h.sup.skip_positions("hangs") == {0},
           timeout=90, what="both poisoned")
    assert "SIGSEGV" in h.status("segfault")["last_error"]
    assert "hung" in h.status("hangs")["last_error"] or "WRITER_CRASH" in h.status("hangs")["last_error"]
    h.wait(lambda: all(h.sup.committed(n) == server.head for n in ("segfault", "hangs", "good")), timeout=60,
           what="caught up after the set-aside")
    assert h.status("good")["restarts"] == 0
    # The leaker keeps 60 MB per summary: more summaries push it over its cap of 200 MB.
    server.entries = entries
    server.head = h.head = entries[-1].position + STEP
    h.wait(lambda: "memory cap" in (h.status("leaks")["last_error"] or ""), timeout=60, what="memory cap")
    assert h.sup.skip_positions("leaks") == frozenset()


