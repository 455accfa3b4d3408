"""A worker host as a real process, and the stand-in collector it fetches from (shared by the
host's test files: test_worker_host.py, test_heartbeat.py).

The stand-in is a real zmq ROUTER (in a thread of the test) serving entries from a list per
the fetch protocol and recording every FETCH's ``after``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

import msgpack
import zmq

from statbus.plugins import RunOptions, StatsAggregationMethod, StatsPropertyType
from statbus.plugins.discovery import PluginInfo
from statbus.plugins.records import PropertyRecord, StatOp, StatRecord, SummaryRecord, pack_values
from statbus.workers.exits import parse_error_line
from statbus.workers.fetch_protocol import decode_fetch, encode_reply
from statbus.workers.statepage import HostState, StatePage
from waiting import wait_for
from zoo import zoo_env

BATCH, SUMMARY = 0, 1
FIRST_POSITION = 100  # as if a snapshot entry sat at 0: next_after must move past it



# --- records -------------------------------------------------------------------

def stat(category: str, key: str, values: List[float], agg=StatsAggregationMethod.AVERAGE) -> list:
    return StatRecord(category, key, agg, StatOp.ADD, pack_values(values)).to_msgpack()


def prop(category: str, value: object) -> list:
    return PropertyRecord(category, StatsPropertyType.HYPERPARAMETERS, value).to_msgpack()


def batch(*records: list) -> Tuple[int, bytes]:
    return BATCH, msgpack.packb(list(records), use_bin_type=True)


def summary(category: str, step: int, **values: List[float]) -> Tuple[int, bytes]:
    entries = tuple((key, StatsAggregationMethod.AVERAGE, pack_values(v)) for key, v in values.items())
    return SUMMARY, msgpack.packb(SummaryRecord(category, step, entries).to_msgpack(), use_bin_type=True)


# --- the fetch server ------------------------------------------------------------

class FakeCollector:
    """Serves ``[position, kind, data]`` entries after the asked position; parks empty fetches."""

    PARK = 0.2

    def __init__(self, context: zmq.Context, address: str) -> None:
        self.context = context
        self.address = address
        self.entries: List[Tuple[int, int, bytes]] = []
        self.end = FIRST_POSITION
        self.fetches: List[int] = []
        self.serving = True
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-collector", daemon=True)

    def add(self, kind: int, data: bytes) -> int:
        with self._lock:
            position = self.end
            self.entries.append((position, kind, data))
            self.end = position + 9 + len(data)  # a journal header is 9 bytes
            return position

    def __enter__(self) -> "FakeCollector":
        self._thread.start()
        assert self._bound.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the fake collector's thread did not stop"

    def _reply(self, after: int) -> Optional[bytes]:
        with self._lock:
            entries = [list(e) for e in self.entries if e[0] >= after]
            next_after = max(after, self.end)
        if not entries and next_after == after:
            return None
        return encode_reply(entries, next_after, self.end, 0)

    def _run(self) -> None:
        with self.context.socket(zmq.ROUTER) as sock:
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(self.address)
            self._bound.set()
            parked: List[Tuple[List[bytes], int, float]] = []
            while not self._stop.is_set():
                if sock.poll(20):
                    *envelope, data = sock.recv_multipart()
                    after = decode_fetch(data).after
                    with self._lock:
                        self.fetches.append(after)
                    parked.append((envelope, after, time.monotonic() + self.PARK))
                if not self.serving:
                    parked.clear()  # a dead collector: requests vanish
                    continue
                still = []
                for envelope, after, deadline in parked:
                    reply = self._reply(after)
                    if reply is None and time.monotonic() >= deadline:
                        reply = encode_reply([], after, self.end, 0)
                    if reply is None:
                        still.append((envelope, after, deadline))
                    else:
                        sock.send_multipart([*envelope, reply])
                parked = still


# --- the host process --------------------------------------------------------------

class Host:
    def __init__(self, tmp_path, plugin: PluginInfo, address: str, options: Optional[Dict] = None,
                 extra_args: Tuple[str, ...] = (), state_file: Optional[str] = None) -> None:
        os.makedirs(tmp_path, exist_ok=True)
        self.results = str(tmp_path / "results")
        self.state_file = state_file or str(tmp_path / "consumers" / f"{plugin.name}.state")
        self.stderr_path = str(tmp_path / f"{plugin.name}.{time.monotonic_ns()}.log")
        run_options = RunOptions.create("run1", results_dir=self.results).with_plugin_options(options or {})
        self.args = [
            sys.executable, "-m", "statbus.workers",
            "--plugin", plugin.name, "--group", plugin.group, "--target", plugin.target,
            "--address", address, "--state-file", self.state_file,
            "--run-options", json.dumps(run_options.as_dict()), *extra_args,
        ]
        self.proc: Optional[subprocess.Popen] = None
        self._page: Optional[StatePage] = None

    def start(self) -> "Host":
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.args, env=zoo_env(), stdout=err, stderr=err)
        return self

    @property
    def page(self) -> StatePage:
        if self._page is None:
            wait_for(lambda: os.path.exists(self.state_file), what="the state page")
            self._page = StatePage(self.state_file, readonly=True)
        return self._page

    def wait_ready(self) -> None:
        wait_for(lambda: self.page.pid == self.proc.pid and self.page.state == HostState.READY
                 or self.proc.poll() is not None, what="READY")
        assert self.proc.poll() is None, self.log()

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        with open(self.stderr_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def last_error(self) -> Optional[str]:
        lines = [line for line in self.log().splitlines() if line.strip()]
        return parse_error_line(lines[-1]) if lines else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        if self._page is not None:
            self._page.close()


def start(hosts: List[Host], *args, **kwargs) -> Host:
    host = Host(*args, **kwargs).start()
    hosts.append(host)
    return host


def read_lines(path: str) -> List[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
