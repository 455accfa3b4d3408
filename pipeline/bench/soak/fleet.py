"""The soak's processes: its trainers and the run's collector, started, killed and always reaped.

The collector is started the way a script or a service manager starts it —
:func:`~statbus.pipeline.collector.lifecycle.daemon.start_detached`, what
``statbus collector start`` runs — or, with ``autostart``, by the trainers
themselves (a client starts one whenever none serves its run).  Either way it is
found through the run's pidfile, and every pid the soak ever saw (collectors,
worker hosts, trainers) is remembered with its creation time, so that
:meth:`Collector.close` and :meth:`Fleet.close` kill exactly those and no reused pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import psutil

from ...collector.lifecycle.daemon import start_detached, wait_for_exit
from ...collector.lifecycle.pidfile import running_pid
from ...control import control_request
from ...layout import RunLayout
from ..collector import BenchError, kill_pids


def plugin_of(process: psutil.Process) -> Optional[str]:
    """The plugin a worker host serves (its ``--plugin``), or None for another process."""
    try:
        cmdline = process.cmdline()
    except psutil.Error:
        return None
    return cmdline[cmdline.index("--plugin") + 1] if "--plugin" in cmdline[:-1] else None


class Collector:
    """The run's collector, whoever starts it; worker hosts are its children."""

    def __init__(self, layout: RunLayout, extra: Sequence[str], env: Mapping[str, str]) -> None:
        self.layout = layout
        self.extra = list(extra)
        self.env = dict(env)
        self.seen: Dict[int, float] = {}
        """Every collector and worker pid seen → its creation time."""

    def _remember(self, process: psutil.Process) -> None:
        with contextlib.suppress(psutil.Error):
            self.seen.setdefault(process.pid, process.create_time())

    def start(self, timeout: float = 60.0) -> int:
        """Start it as ``statbus collector start`` does (detached, its log in the run); its pid once ready."""
        started = start_detached(self.layout, self.extra, timeout=timeout, env=self.env)
        with contextlib.suppress(psutil.Error):
            self._remember(psutil.Process(started.pid))
        return started.pid

    def pid(self) -> Optional[int]:
        """The pid holding the run's pidfile lock, or None."""
        pid = running_pid(self.layout.pid_file)
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                self._remember(psutil.Process(pid))
        return pid

    def ping(self, timeout: float = 0.5) -> Optional[int]:
        """The pid of a collector that answers, or None."""
        try:
            reply = control_request(self.layout.control_address, {"op": "ping"}, timeout=timeout)
        except Exception:  # noqa: BLE001 — any failure to answer is "not serving"
            return None
        return int(reply["pid"]) if reply.get("ok") else None

    def wait_serving(self, timeout: float, not_pid: Optional[int] = None) -> int:
        """Until a collector (other than ``not_pid``) answers; its pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.ping()
            if pid is not None and pid != not_pid:
                self.pid()
                return pid
            time.sleep(0.1)
        raise BenchError(f"no collector served run {self.layout.run_id!r} within {timeout:.0f} s")

    def status(self, timeout: float = 5.0) -> Dict[str, Any]:
        return control_request(self.layout.control_address, {"op": "status"}, timeout=timeout)

    def workers(self, pid: Optional[int]) -> Dict[str, psutil.Process]:
        """The worker hosts of collector ``pid`` by plugin name."""
        found: Dict[str, psutil.Process] = {}
        if pid is None:
            return found
        try:
            children = psutil.Process(pid).children()
        except psutil.Error:
            return found
        for child in children:
            name = plugin_of(child)
            if name is not None:
                self._remember(child)
                found[name] = child
        return found

    def strays(self, pid: Optional[int]) -> List[int]:
        """Worker hosts seen earlier that still run but belong to no live collector (``pid`` is the live one)."""
        left = []
        for seen, created in list(self.seen.items()):
            try:
                process = psutil.Process(seen)
                if abs(process.create_time() - created) > 0.01 or process.status() == psutil.STATUS_ZOMBIE:
                    continue
                if plugin_of(process) is not None and process.ppid() != pid:
                    left.append(seen)
            except psutil.Error:
                continue
        return left

    def kill9(self, pid: int, timeout: float = 30.0) -> None:
        """SIGKILL the collector ``pid`` (its workers notice and leave by themselves) and wait until it is gone."""
        self.workers(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not wait_for_exit(pid, timeout):
            raise BenchError(f"the collector (pid {pid}) was still there {timeout:.0f} s after SIGKILL")

    def stop(self, timeout: float = 60.0) -> Optional[int]:
        """A graceful stop, as ``statbus collector stop`` makes it; the pid that stopped, or None."""
        pid = self.pid()
        if pid is None:
            return None
        with contextlib.suppress(Exception):
            control_request(self.layout.control_address, {"op": "stop", "timeout": timeout}, timeout=5.0)
        if not wait_for_exit(pid, timeout + 15.0):
            raise BenchError(f"the collector (pid {pid}) did not stop within {timeout + 15:.0f} s")
        return pid

    def close(self) -> None:
        """Kill every collector and worker host this soak saw that still runs, and wait for them."""
        self.pid()
        kill_pids(list(self.seen), self.seen)


class Trainer:
    """One trainer process of the soak (one category, one incarnation of a slot)."""

    def __init__(self, slot: int, generation: int, category: str, proc: subprocess.Popen, out_path: str) -> None:
        self.slot = slot
        self.generation = generation
        self.category = category
        self.proc = proc
        self.out_path = out_path
        self.killed_at: Optional[float] = None
        self.started_at = time.monotonic()

    def lines(self) -> List[Dict[str, Any]]:
        """Every complete JSON line the trainer wrote so far."""
        try:
            with open(self.out_path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            return []
        return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]

    def last(self, field: str) -> int:
        """The last value of an integer ``field`` (``acked``, ``w``) in its lines, 0 if none."""
        found = [line[field] for line in self.lines() if field in line]
        return int(found[-1]) if found else 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()


class Fleet:
    """The soak's trainers: one per slot, replaced with a new category when killed."""

    def __init__(self, root: str, layout: RunLayout, args: Sequence[str], env: Mapping[str, str]) -> None:
        self.root = root
        self.layout = layout
        self.args = list(args)
        self.env = dict(env)
        self.live: Dict[int, Trainer] = {}
        self.all: List[Trainer] = []

    def start(self, slot: int) -> Trainer:
        generation = sum(1 for t in self.all if t.slot == slot)
        category = f"soak-s{slot:02d}-g{generation}"
        out_path = os.path.join(self.root, f"{category}.out")
        with open(out_path, "wb") as out, open(os.path.join(self.root, f"{category}.err"), "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "statbus.pipeline.bench.soak.trainer", "--run-id", self.layout.run_id,
                 "--results-dir", self.layout.results_dir, "--category", category, *self.args],
                stdin=subprocess.PIPE, stdout=out, stderr=err, env=self.env, close_fds=True,
            )
        trainer = Trainer(slot, generation, category, proc, out_path)
        self.live[slot] = trainer
        self.all.append(trainer)
        return trainer

    def kill(self, slot: int) -> Trainer:
        """SIGKILL the slot's trainer and reap it."""
        trainer = self.live.pop(slot)
        trainer.killed_at = time.monotonic()
        trainer.close()
        return trainer

    def stop(self, timeout: float) -> List[Trainer]:
        """Ask every live trainer to finish its step, flush and exit; those that did not exit 0 in time."""
        for trainer in self.live.values():
            assert trainer.proc.stdin is not None
            with contextlib.suppress(OSError):
                trainer.proc.stdin.write(b"stop\n")
                trainer.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        failed = []
        for trainer in self.live.values():
            try:
                code = trainer.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                failed.append(trainer)
            trainer.close()
        return failed

    def close(self) -> None:
        for trainer in self.all:
            trainer.close()


def kill_leftovers(collector: Optional[Collector], fleet: Optional[Fleet]) -> None:
    """The soak's ``finally``: every trainer, collector and worker host it started or saw, killed and reaped."""
    try:
        if fleet is not None:
            fleet.close()
    finally:
        if collector is not None:
            collector.close()

