"""One plugin under supervision (workers/supervision/watcher.py), through the supervisor with real
stand-in hosts: hangs (no heartbeat, a writer call past its timeout) and the memory cap abort the
host, TERM then KILL of its whole group after the grace; a record that kills it three times is set
aside; a kill from outside never fails the plugin; a spawn that cannot start fails it at once.
First one PluginWatcher on its own, on a fake clock.
"""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import pytest

from statbus.pipeline.layout import RunLayout
from statbus.plugins import RunOptions
from statbus.workers.statepage import StatePage
from statbus.workers.supervision.context import WatchContext
from statbus.workers.supervision.policy import PolicyConfig, RestartPolicy
from statbus.workers.supervision.states import WorkerState
from statbus.workers.supervision.watcher import PluginWatcher
from supervision_harness import FAST, FakeClock, Harness, _alive, config, plugin
from waiting import holds_for, wait_for


@pytest.fixture
def watcher(tmp_path: Path, stub: Any) -> Iterator[Callable[..., PluginWatcher]]:
    """Builds one PluginWatcher of a stand-in host on a fake clock; its host is killed at teardown."""
    made: List[PluginWatcher] = []

    def build(spawn: Any = stub, **settings: Any) -> PluginWatcher:
        clock = FakeClock()
        context = WatchContext(
            RunLayout(str(tmp_path), "run").worker_paths, RunOptions.create("run", results_dir=str(tmp_path)),
            "ipc://" + str(tmp_path / "work"), head=lambda: 0, stopping=lambda: False, clock=clock, spawn=spawn,
            grace=0.3,
        )
        built = PluginWatcher(plugin("one"), config(one=settings).for_plugin("one"),
                              RestartPolicy(FAST, clock=clock, rng=random.Random(0)), context)
        made.append(built)
        return built

    try:
        yield build
    finally:
        for built in made:
            if built.host is not None:
                built.signal_group(signal.SIGKILL)
                wait_for(built.reap, what="the host reaped")
            built.close_page()


def ticked(one: PluginWatcher, state: WorkerState) -> Callable[[], bool]:
    def reached() -> bool:
        one.tick(one.context.clock())
        return one.state is state
    return reached


def test_one_watcher_takes_its_host_through_ready_restart_and_disable(watcher: Callable[..., PluginWatcher]) -> None:
    one = watcher()
    one.spawn()
    assert one.state is WorkerState.STARTING and one.spawns == 1
    wait_for(ticked(one, WorkerState.READY), what="READY")
    first = one.host.pid
    one.restart()  # a running host: stopped first, then a new one
    assert one.state is WorkerState.STOPPING
    wait_for(ticked(one, WorkerState.READY), what="READY again")
    assert one.host.pid != first and not _alive(first) and one.spawns == 2
    second = one.host.pid
    one.disable()
    wait_for(ticked(one, WorkerState.STOPPED), what="STOPPED")
    assert one.host is None and not _alive(second) and one.last_exit == 0
    one.enable()
    assert one.state is WorkerState.STARTING and one.spawns == 3


def test_a_host_that_cannot_be_spawned_fails_its_plugin_at_once(watcher: Callable[..., PluginWatcher]) -> None:
    def spawn(argv: List[str], **kwargs: Any) -> Any:
        raise OSError("exec format error")

    one = watcher(spawn=spawn)
    one.spawn()
    assert one.state is WorkerState.FAILED and one.host is None and one.spawns == 0
    assert one.last_error.startswith("cannot start ") and one.last_error.endswith(": exec format error")


# --- through the supervisor -------------------------------------------------------------------


def test_hung_host_group_is_killed_and_replaced(make: Callable[..., Harness], tmp_path: Path) -> None:
    grandchild_file = tmp_path / "grandchild"
    counter = str(tmp_path / "count")
    h = make(
        ["stuck"],
        config(stuck={"heartbeat_timeout": 0.5, "options": {
            "mode": "hang", "grandchild": str(grandchild_file), "counter": counter, "ok_after": 1}}),
    )
    h.sup.start()
    h.wait(grandchild_file.exists, what="the grandchild")
    grandchild = int(grandchild_file.read_text())
    first_pid = h.status("stuck")["pid"]
    assert _alive(grandchild) and os.getpgid(grandchild) == first_pid
    h.wait(lambda: h.status("stuck")["state"] == "ABORTING", what="hang detected")
    assert "hung: no heartbeat" in h.status("stuck")["last_error"], "shown while it is being stopped"
    h.wait(lambda: h.status("stuck")["restarts"] >= 1 and h.status("stuck")["state"] == "READY", what="replacement")
    assert "hung: no heartbeat" in h.status("stuck")["last_error"]
    assert not _alive(first_pid)
    assert not _alive(grandchild), "the whole process group is killed"


def test_hang_thresholds_on_the_injected_clock(make: Callable[..., Harness], tmp_path: Path) -> None:
    clock = FakeClock()
    grandchild_file = tmp_path / "grandchild"
    h = make(
        ["stuck"],
        config(stuck={"heartbeat_timeout": 3.0, "options": {"mode": "hang", "grandchild": str(grandchild_file)}}),
        clock=clock,
        grace=2.0,
    )
    h.sup.start()
    h.wait_state("stuck", WorkerState.READY)
    h.wait(grandchild_file.exists, what="the grandchild")
    page = StatePage(str(h.statbus_dir / "consumers" / "stuck.state"))
    try:
        stable: List[float] = []
        h.wait(lambda: (stable.append(page.heartbeat), len(stable) > 10 and len(set(stable[-10:])) == 1)[1],
               what="the heartbeat to stop")
    finally:
        page.close()
    clock.now += 2.9
    h.sup.tick(0)
    assert h.status("stuck")["state"] == "READY", "2.9 s of silence is within the 3 s timeout"
    clock.now += 0.2
    h.sup.tick(0)
    assert h.status("stuck")["state"] == "ABORTING"
    pid = h.status("stuck")["pid"]
    # It ignores TERM: nothing happens until the grace has passed on the clock.
    holds_for(lambda: (h.sup.tick(0), _alive(pid) and h.status("stuck")["state"] == "ABORTING")[1], 0.1,
              what="a host that ignores TERM, alive and ABORTING within its grace", interval=0.01)
    assert _alive(pid) and h.status("stuck")["state"] == "ABORTING"
    clock.now += 2.1
    h.wait(lambda: h.status("stuck")["state"] == "BACKOFF", what="killed and reaped")
    assert not _alive(pid) and not _alive(int(grandchild_file.read_text()))
    assert h.status("stuck")["last_error"] == "hung: no heartbeat for 3.1 s"


def test_writer_call_timeout_is_a_hang_and_a_strike(make: Callable[..., Harness], tmp_path: Path) -> None:
    h = make(["slow"], config(slow={"call_timeout": 0.3, "options": {"mode": "busy", "inflight": 4096}}))
    h.sup.start()
    h.wait(lambda: len(h.dead_letter_calls) == 1, timeout=60, what="poison by hanging")
    assert h.dead_letter_calls == [("slow", 4096)]
    assert "writer call took over 0.3 s" in h.status("slow")["last_error"]
    assert h.sup.skip_positions("slow") == frozenset({4096})


def test_memory_cap_restarts(make: Callable[..., Harness], tmp_path: Path) -> None:
    counter = str(tmp_path / "count")
    h = make(
        ["hog"],
        config(hog={"memory_cap_mb": 150, "options": {"mode": "memory", "mb": 200, "counter": counter, "ok_after": 1}}),
    )
    h.sup.start()
    h.wait(lambda: h.status("hog")["restarts"] >= 1 and h.status("hog")["state"] == "READY", what="restart")
    assert "memory cap" in h.status("hog")["last_error"]
    assert h.sup.skip_positions("hog") == frozenset(), "over the cap is not a record's fault"


def test_poison_record_goes_to_dead_letter_and_skip_set(make: Callable[..., Harness], tmp_path: Path) -> None:
    counter = str(tmp_path / "count")
    h = make(["victim"], config(victim={"options": {
        "mode": "crash", "inflight": 1234, "counter": counter, "ok_after": 3}}))
    h.sup.start()
    h.wait(lambda: h.status("victim")["state"] == "READY" and h.status("victim")["restarts"] == 3, what="after poison")
    assert h.sup.skip_positions("victim") == frozenset({1234})
    assert h.dead_letter_calls == [("victim", 1234)]
    lines = (h.statbus_dir / "dead-letter" / "victim.jsonl").read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["plugin"] == "victim" and entry["position"] == 1234
    assert entry["record"] == {"kind": "summary", "category": "Poison", "position": 1234}
    assert entry["error"] == "WRITER_CRASH: boom at 1234" and entry["time"] > 0
    assert h.status("victim")["skipped"] == 1
    # A new supervisor (collector restart) reads the skip set back.
    h.sup.stop(timeout=5.0)
    again = make(["victim"], config())
    assert again.sup.skip_positions("victim") == frozenset({1234})


def test_poison_is_set_aside_even_when_the_record_cannot_be_read(make: Callable[..., Harness], tmp_path: Path) -> None:
    def broken_lookup(plugin: str, position: int) -> Optional[dict]:
        raise OSError("journal segment gone")

    h = make(["victim"], config(victim={"options": {"mode": "crash", "inflight": 77}}), on_dead_letter=broken_lookup)
    h.sup.start()
    h.wait(lambda: h.sup.skip_positions("victim") == {77}, what="set aside")
    entry = json.loads((h.statbus_dir / "dead-letter" / "victim.jsonl").read_text())
    assert entry["record"] is None and entry["position"] == 77


def test_kill_9_from_outside_never_fails_the_plugin(make: Callable[..., Harness]) -> None:
    h = make(["target"], config(target={"max_restarts": 1}), policy=PolicyConfig(backoff_initial=0.05))
    h.sup.start()
    killed = set()
    for _ in range(6):
        h.wait(lambda: h.status("target")["pid"] is not None, what="a host to kill")
        pid = h.status("target")["pid"]
        os.kill(pid, signal.SIGKILL)
        killed.add(pid)
        h.wait(lambda: h.status("target")["pid"] != pid, what="the kill noticed")
    h.wait_state("target", WorkerState.READY)
    status = h.status("target")
    assert status["restarts"] == 6 and len(killed) == 6
    assert status["last_error"] == "killed by SIGKILL"
    assert h.sup.skip_positions("target") == frozenset()


def test_enable_while_still_stopping_starts_again(make: Callable[..., Harness]) -> None:
    h = make(["a"], config())
    h.sup.start()
    h.wait_state("a", WorkerState.READY)
    first = h.status("a")["pid"]
    h.sup.disable("a")
    assert h.status("a")["state"] == "STOPPING"
    h.sup.enable("a")
    h.wait(lambda: h.status("a")["state"] == "READY" and h.status("a")["pid"] != first, what="running again")
    assert not _alive(first)


def test_interpreter_that_cannot_start_fails(make: Callable[..., Harness], tmp_path: Path) -> None:
    h = make(["bad"], config(bad={"interpreter": str(tmp_path / "no-such-python")}))
    h.sup.start()
    status = h.status("bad")
    assert status["state"] == "FAILED" and "cannot start" in status["last_error"]

