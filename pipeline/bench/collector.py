"""A collector the benchmark owns: started cold, watched, killed and always reaped.

Unlike ``statbus collector start`` (a detached daemon), the benchmark keeps
the ``Popen`` of its collector and remembers every worker host pid it saw, so
that whatever happens (a failed figure, Ctrl-C) :meth:`BenchCollector.close`
leaves no process behind.  Runs live in a temporary results directory.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set

import psutil

from ...plugins import StatbusError
from ...workers.statepage import StatePage
from ..control import control_request
from ..layout import RunLayout
from .writers import ENTRY_POINTS

logger = logging.getLogger(__name__)

DIST_NAME = "statbus_bench_writers-0.1.dist-info"
LIVE_STATES = ("STARTING", "READY")


class BenchError(StatbusError):
    """A benchmark step did not reach the state it waits for."""


def make_plugin_dist(root: str) -> str:
    """Write a dist-info registering the bench writers under ``root``; returns ``root`` (for PYTHONPATH)."""
    info = os.path.join(root, DIST_NAME)
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as handle:
        handle.write("Metadata-Version: 2.1\nName: statbus-bench-writers\nVersion: 0.1\n")
    with open(os.path.join(info, "entry_points.txt"), "w", encoding="utf-8") as handle:
        handle.write("[mlagents.stats_writer]\n")
        for name, target in ENTRY_POINTS.items():
            handle.write(f"{name} = {target}\n")
    return root


def bench_env(root: str, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment for processes that must see the bench writers (collector and its workers)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [make_plugin_dist(root), env.get("PYTHONPATH")]))
    env.pop("STATBUS_ADDRESS", None)
    if extra:
        env.update(extra)
    return env


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something truthy; raises BenchError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def kill_pids(pids: Iterable[int], created: Mapping[int, float]) -> None:
    """SIGKILL each pid still alive *and still the process we saw* (pid reuse guard), then reap."""
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if created.get(pid) is not None and abs(proc.create_time() - created[pid]) > 0.01:
                continue
            proc.kill()
            try:
                proc.wait(5)
            except psutil.TimeoutExpired:
                logger.warning("bench: pid %s did not die after SIGKILL", pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, ChildProcessError):
            pass


class BenchCollector:
    """One run's collector process plus the worker hosts it spawns."""

    def __init__(self, root: str, run_id: str, plugins: Sequence[str], config_toml: str = "",
                 extra_args: Sequence[str] = ()) -> None:
        self.root = root
        self.layout = RunLayout(os.path.join(root, "results"), run_id)
        self.plugins = list(plugins)
        self.env = bench_env(os.path.join(root, "dist"))
        os.makedirs(self.layout.statbus_dir, exist_ok=True)
        self.config_path = os.path.join(root, f"{run_id}.toml")
        with open(self.config_path, "w", encoding="utf-8") as handle:
            handle.write(config_toml)
        self.extra_args = list(extra_args)
        self.proc: Optional[subprocess.Popen] = None
        self._seen: Dict[int, float] = {}  # every pid we started or saw in status → create time

    # --- life ----------------------------------------------------------------

    def command(self) -> List[str]:
        plugins = ["--plugins", ",".join(self.plugins)] if self.plugins else ["--no-plugins"]
        return [sys.executable, "-m", "statbus.pipeline", "--run-id", self.layout.run_id,
                "--results-dir", self.layout.results_dir, *plugins,
                "--config", self.config_path, "--log-level", "WARNING", *self.extra_args]

    def start(self) -> float:
        """Start the collector (cold); returns its ``time.monotonic()`` start instant."""
        if self.proc is not None and self.proc.poll() is None:
            raise BenchError("the bench collector is running already")
        log = open(self.layout.log_file, "ab")
        try:
            started = time.monotonic()
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env, close_fds=True)
        finally:
            log.close()
        self._remember(self.proc.pid)
        return started

    def ping(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            return bool(control_request(self.layout.control_address, {"op": "ping"}, timeout=0.5).get("ok"))
        except StatbusError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise BenchError(f"the bench collector exited with code {self.proc.returncode}; "
                                 f"see {self.layout.log_file}")
            return self.ping()

        wait_for(ready, timeout, "the collector to answer")

    def status(self, timeout: float = 5.0) -> Dict[str, Any]:
        reply = control_request(self.layout.control_address, {"op": "status"}, timeout=timeout)
        for plugin in reply.get("plugins", []):
            if plugin.get("pid"):
                self._remember(int(plugin["pid"]))
        return reply

    def control(self, request: Dict[str, Any]) -> Dict[str, Any]:
        reply = control_request(self.layout.control_address, request, timeout=5.0)
        if not reply.get("ok"):
            raise BenchError(f"control {request} failed: {reply.get('error')}")
        return reply

    def plugin(self, status: Dict[str, Any], name: str) -> Dict[str, Any]:
        for plugin in status.get("plugins", []):
            if plugin.get("name") == name:
                return plugin
        raise BenchError(f"no plugin {name!r} in the collector's status")

    def workers_ready(self, names: Optional[Iterable[str]] = None) -> Optional[Dict[str, Any]]:
        """The status when every named (default: every enabled) plugin is READY, else None."""
        try:
            status = self.status(timeout=1.0)
        except StatbusError:
            return None
        wanted = set(names) if names is not None else None
        for plugin in status.get("plugins", []):
            if wanted is not None and plugin.get("name") not in wanted:
                continue
            if wanted is None and not plugin.get("enabled", True):
                continue
            if plugin.get("state") != "READY":
                return None
        return status

    def caught_up(self, names: Optional[Iterable[str]] = None, head: Optional[int] = None) -> Optional[Dict[str, Any]]:
        """The status when the named plugins are READY with nothing left to read, else None.

        Caught up means ``lag_records == 0``, or, when ``head`` is given, a
        committed cursor at or past that journal position (new data may keep arriving).
        """
        status = self.workers_ready(names)
        if status is None:
            return None
        wanted = set(names) if names is not None else None
        for plugin in status.get("plugins", []):
            if (wanted is not None and plugin.get("name") not in wanted) or not plugin.get("enabled", True):
                continue
            if head is not None and (plugin.get("committed") or 0) >= head:
                continue
            if plugin.get("lag_records") != 0:
                return None
        return status

    def committed_past(self, names: Iterable[str], head: int) -> bool:
        """True once every named plugin's committed cursor is at or past ``head``.

        Read from the plugins' state pages, as the supervisor reads them: polling
        this costs the measured collector nothing, unlike a status request (about
        1 ms of its CPU each, which a 10 ms poll turned into a tenth of a core).
        """
        for name in names:
            try:
                with StatePage(self.layout.consumer_state_file(name), readonly=True) as page:
                    if page.committed < head:
                        return False
            except (StatbusError, OSError):
                return False
        return True

    def pid(self) -> int:
        if self.proc is None:
            raise BenchError("the bench collector is not started")
        return self.proc.pid

    def kill9(self) -> None:
        """``kill -9`` of the collector (its worker hosts notice and exit by themselves)."""
        if self.proc is not None and self.proc.poll() is None:
            self._snapshot_children()
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def close(self, grace: float = 15.0, graceful: bool = True) -> None:
        """Graceful stop (TERM), then KILL of the collector and every worker host it ever had; reaps all.

        ``graceful=False`` skips the TERM (a stalled plugin would hold the stop up to its grace).
        """
        try:
            if not graceful:
                self.kill9()
            if self.proc is not None and self.proc.poll() is None:
                self._snapshot_children()
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            kill_pids(list(self._seen), self._seen)

    def __enter__(self) -> "BenchCollector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pids ------------------------------------------------------------------

    def _remember(self, pid: int) -> None:
        if pid in self._seen:
            return
        try:
            self._seen[pid] = psutil.Process(pid).create_time()
        except psutil.Error:
            pass

    def _snapshot_children(self) -> None:
        if self.proc is None:
            return
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self._remember(child.pid)
        except psutil.Error:
            pass

    def process_tree(self) -> Set[int]:
        """Pids of the collector and its live descendants (for RSS sampling)."""
        pids: Set[int] = set()
        if self.proc is None or self.proc.poll() is not None:
            return pids
        try:
            parent = psutil.Process(self.proc.pid)
            pids.add(parent.pid)
            for child in parent.children(recursive=True):
                pids.add(child.pid)
                self._remember(child.pid)
        except psutil.Error:
            pass
        return pids
