"""The supervisor's test harness, shared by test_supervisor.py and test_watcher.py.

A stand-in worker host (``STUB``, written to tmp_path by the ``stub`` fixture of conftest.py)
takes the real host's arguments, uses the real state page, heartbeats, and then does what its
plugin options say: run, crash with a record in flight, exit with a given code, hang (heartbeat
stops, TERM ignored, a grandchild in its group), hang in a writer call, or hold memory.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import psutil

from statbus.pipeline.layout import RunLayout
from statbus.plugins import RunOptions
from statbus.plugins.discovery import PluginInfo
from statbus.workers.supervision.config import Config, load_config
from statbus.workers.supervision.policy import PolicyConfig
from statbus.workers.supervision.states import WorkerState
from statbus.workers.supervision.supervisor import Supervisor
from waiting import wait_for

STUB = textwrap.dedent(
    r'''
    import argparse, json, os, signal, subprocess, sys, threading, time
    from statbus.workers.statepage import HostState, StatePage

    parser = argparse.ArgumentParser()
    for name in ("--plugin", "--group", "--target", "--address", "--state-file", "--run-options",
                 "--call-timeout", "--heartbeat-interval", "--parent-pid", "--log-level"):
        parser.add_argument(name)
    args = parser.parse_args()
    options = json.loads(args.run_options)["plugin_options"]
    mode = options.get("mode", "run")
    counter = options.get("counter")
    starts = 1
    if counter:
        if os.path.exists(counter):
            with open(counter) as handle:
                starts = int(handle.read()) + 1
        with open(counter, "w") as handle:
            handle.write(str(starts))
    if starts <= options.get("ok_after", 0):
        pass  # still failing: keep the mode
    elif "ok_after" in options:
        mode = "run"

    page = StatePage(args.state_file)
    page.reset_for_host(os.getpid(), time.time())
    beating = threading.Event()
    beating.set()

    def beat():
        while True:
            if beating.is_set():
                page.heartbeat = time.time()
            time.sleep(0.05)  # the heartbeat's own pace, as a real host beats

    threading.Thread(target=beat, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def fail(code, message):
        sys.stderr.write("statbus-worker-error: %s: %s\n" % (
            {64: "BAD_CONFIG", 65: "IMPORT_FAILURE", 70: "WRITER_CRASH"}.get(code, "X"), message))
        sys.stderr.flush()
        os._exit(code)

    if mode == "exit":
        fail(options["code"], options.get("message", "it failed"))
    page.state = HostState.READY
    if options.get("progress"):
        page.committed = page.committed + options["progress"]
    if mode == "crash":
        page.inflight = options.get("inflight", -1)
        time.sleep(options.get("delay", 0.0))
        fail(70, "boom at %d" % page.inflight)
    elif mode == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(options["grandchild"], "w") as handle:
            handle.write(str(child.pid))
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        beating.clear()
        time.sleep(600)
    elif mode == "busy":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        page.inflight = options.get("inflight", -1)
        page.busy_since = time.time()
        time.sleep(600)
    elif mode == "memory":
        hoard = bytearray(options["mb"] * 1024 * 1024)
        for index in range(0, len(hoard), 4096):
            hoard[index] = 1
    while not stop.is_set():
        stop.wait(0.05)
    page.state = HostState.STOPPING
    sys.exit(0)
    '''
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


FAST = PolicyConfig(backoff_initial=0.05, backoff_cap=0.2, backoff_jitter=0.0)


def plugin(name: str) -> PluginInfo:
    return PluginInfo("statbus.stats_writer", name, f"stub_{name}:register", None, None)


def config(**per_plugin: Dict[str, Any]) -> Config:
    return load_config(None, per_plugin)


class Harness:
    def __init__(self, tmp_path: Path, spawn: Any, plugins: List[Any], settings: Config, **kwargs: Any) -> None:
        self.statbus_dir = tmp_path / "run" / "statbus"
        self.head = 0
        self.pump: Callable[[], None] = lambda: None
        self.dead_letter_calls: List[tuple] = []
        kwargs.setdefault("policy", FAST)
        kwargs.setdefault("grace", 0.3)
        kwargs.setdefault("sample_interval", 0.1)
        kwargs.setdefault("on_dead_letter", self._dead_letter)
        self.sup = Supervisor(
            RunLayout(str(tmp_path), "run").worker_paths,
            [plugin(p) if isinstance(p, str) else p for p in plugins],
            settings,
            RunOptions.create("run", results_dir=str(tmp_path)),
            "ipc://" + str(tmp_path / "work"),
            spawn=spawn,
            **kwargs,
        )

    def _dead_letter(self, name: str, position: int) -> Optional[dict]:
        self.dead_letter_calls.append((name, position))
        return {"kind": "summary", "category": "Poison", "position": position}

    def status(self, name: str) -> Dict[str, Any]:
        return next(entry for entry in self.sup.status() if entry["name"] == name)

    def wait(self, condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
        def reached() -> bool:
            if condition():
                return True
            self.sup.tick(self.head)
            self.pump()
            return False

        wait_for(reached, timeout, lambda: f"{what or condition}: {self.sup.status()}")

    def wait_state(self, name: str, state: WorkerState, timeout: float = 30.0) -> None:
        self.wait(lambda: self.status(name)["state"] == state.value, timeout, f"{name} {state.value}")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

