"""What the soak watches while it runs: memory, descriptors, journal size, and ``statbus status``.

:class:`Sampler` reads the collector's and each worker host's RSS and open file
descriptors (psutil) and the journal's bytes on disk (its segment files); the
figure reports, for each series, the slope of a least-squares line through the
samples after the first minute.  :class:`StatusCheck` asks the collector for its
status about once a second and holds it to what the soak knows: which collector
serves, which workers and trainers live; every disagreement is a violation.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import psutil

from .fleet import Collector

MB = float(1 << 20)
GRACE = 5.0
"""Seconds status may take to notice a death the soak caused (a worker's, a trainer's)."""


def slope_per_minute(points: Sequence[Tuple[float, float]]) -> Optional[float]:
    """Slope of the least-squares line through ``(seconds, value)`` points, per minute; None for < 3 points."""
    if len(points) < 3:
        return None
    n = float(len(points))
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return 60.0 * sum((t - mean_t) * (y - mean_y) for t, y in points) / var


def journal_bytes(directory: str) -> int:
    total = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(".seg"):
                    try:
                        total += entry.stat().st_size
                    except OSError:
                        pass  # deleted by retention meanwhile
    except OSError:
        pass
    return total


MIN_AGE = 10.0
"""Seconds a process must have run to be sampled: a worker importing its plugin (the example plugin
imports mlagents, and with it torch) or a collector replaying its journal is not yet what it will be."""


def _measure(process: psutil.Process) -> Optional[Tuple[float, int]]:
    try:
        if time.time() - process.create_time() < MIN_AGE:
            return None
        return process.memory_info().rss / MB, process.num_fds()
    except psutil.Error:
        return None


class Sampler:
    """Time series ``name → [(seconds, value)]`` of the collector, each worker host, the journal."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.series: Dict[str, List[Tuple[float, float]]] = {}
        self.strays_max = 0

    def _add(self, name: str, t: float, value: float) -> None:
        self.series.setdefault(name, []).append((t, value))

    def sample(self, t: float, pid: Optional[int]) -> None:
        self._add("journal_mb", t, journal_bytes(self.collector.layout.journal_dir) / MB)
        if pid is None:
            return
        try:
            main = _measure(psutil.Process(pid))
        except psutil.Error:
            main = None
        if main is not None:
            self._add("collector_rss_mb", t, main[0])
            self._add("collector_fds", t, main[1])
        for name, process in sorted(self.collector.workers(pid).items()):
            found = _measure(process)
            if found is not None:
                self._add(f"worker_rss_mb:{name}", t, found[0])
                self._add(f"worker_fds:{name}", t, found[1])
        self.strays_max = max(self.strays_max, len(self.collector.strays(pid)))

    def summary(self, after: float) -> Dict[str, Dict[str, Optional[float]]]:
        """Per series: slope per minute after ``after`` s, and the first, last, median and largest value after it;
        ``start`` and ``peak``: the first and largest of the whole run."""
        out: Dict[str, Dict[str, Optional[float]]] = {}
        for name, points in sorted(self.series.items()):
            late = [p for p in points if p[0] >= after] or points
            values = [v for _, v in late]
            out[name] = {"slope_per_min": slope_per_minute(late), "first": values[0], "last": values[-1],
                         "max": max(values), "samples": float(len(late)),
                         "median": statistics.median(values),
                         "start": points[0][1], "peak": max(v for _, v in points)}
        return out


def _alive(pid: Any) -> bool:
    if type(pid) is not int or pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclasses.dataclass
class Known:
    """What the soak knows at a poll: the serving collector, live and killed trainers, recent worker kills."""

    collector_pid: int
    t: float
    live_trainer_pids: Set[int]
    """Trainers alive that had something acked (so the collector has heard of them)."""
    killed_trainers: Mapping[int, float]
    """pid → when it was killed (soak seconds)."""
    killed_workers: Mapping[int, float]


class StatusCheck:
    """Polls of the control socket's status, each checked against :class:`Known`."""

    def __init__(self, collector: Collector, limit: int = 50) -> None:
        self.collector = collector
        self.polls = 0
        self.answered = 0
        self.unanswered: List[float] = []
        self.violations: List[str] = []
        self.violation_count = 0
        self._limit = limit
        self._head = 0
        self._intake: Dict[int, Tuple[int, int]] = {}

    def _violate(self, t: float, text: str) -> None:
        self.violation_count += 1
        if len(self.violations) < self._limit:
            self.violations.append(f"{t:.1f} s: {text}")

    def poll(self, known: Known) -> Optional[Dict[str, Any]]:
        self.polls += 1
        try:
            status = self.collector.status(timeout=5.0)
        except Exception as exc:  # noqa: BLE001 — not answering is what is counted
            self.unanswered.append(known.t)
            self._violate(known.t, f"the serving collector (pid {known.collector_pid}) did not answer: {exc}")
            return None
        self.answered += 1
        self.check(status, known)
        return status

    def check(self, status: Dict[str, Any], known: Known) -> None:
        t = known.t
        if status.get("pid") != known.collector_pid:
            self._violate(t, f"status says pid {status.get('pid')}, the collector serving is {known.collector_pid}")
        head = int(status.get("journal", {}).get("head") or 0)
        if head < self._head:
            self._violate(t, f"journal head went back from {self._head} to {head}")
        self._head = max(self._head, head)
        intake = status.get("intake", {})
        counts = (int(intake.get("values") or 0), int(intake.get("summaries") or 0))
        before = self._intake.get(known.collector_pid)
        if before is not None and (counts[0] < before[0] or counts[1] < before[1]):
            self._violate(t, f"intake values/summaries went back from {before} to {counts}")
        self._intake[known.collector_pid] = counts
        self._check_plugins(status.get("plugins", []), known, head)
        self._check_trainers(status.get("trainers", []), known)

    def _check_plugins(self, plugins: Iterable[Dict[str, Any]], known: Known, head: int) -> None:
        t = known.t
        for plugin in plugins:
            name, pid = plugin.get("name"), plugin.get("pid")
            committed = int(plugin.get("committed") or 0)
            if committed > head or (plugin.get("lag_records") or 0) < 0:
                self._violate(t, f"plugin {name}: committed {committed}, lag {plugin.get('lag_records')}, head {head}")
            if plugin.get("state") != "READY":
                continue
            recent = known.killed_workers.get(pid) if type(pid) is int else None
            if recent is not None and t - recent < GRACE:
                continue
            try:
                parent = psutil.Process(pid).ppid() if _alive(pid) else None
            except psutil.Error:
                parent = None
            if parent != known.collector_pid:
                self._violate(t, f"plugin {name} shown READY with pid {pid}, which is "
                              + ("not running" if parent is None else f"a child of {parent}"))

    def _check_trainers(self, trainers: Iterable[Dict[str, Any]], known: Known) -> None:
        t = known.t
        listed: Dict[int, Dict[str, Any]] = {}
        for trainer in trainers:
            if type(trainer.get("pid")) is int:
                listed[trainer["pid"]] = trainer
        for pid in sorted(known.live_trainer_pids):
            entry = listed.get(pid)
            if entry is None:
                self._violate(t, f"live trainer pid {pid} (acked) is not in status")
            elif entry.get("bye") or entry.get("gone"):
                self._violate(t, f"live trainer pid {pid} is shown gone")
        for pid, killed in sorted(known.killed_trainers.items()):
            entry = listed.get(pid)
            if entry is not None and t - killed >= GRACE and not entry.get("gone"):
                self._violate(t, f"trainer pid {pid}, killed {t - killed:.0f} s ago, is shown as connected")

    def summary(self) -> Dict[str, Any]:
        return {"polls": self.polls, "answered": self.answered, "unanswered": len(self.unanswered),
                "violations": self.violation_count, "first_violations": self.violations}


def cli_status(env: Mapping[str, str], run_id: str, results_dir: str, timeout: float = 60.0) -> Tuple[int, str]:
    """``statbus status`` as a user types it: its exit code and output."""
    proc = subprocess.run([sys.executable, "-m", "statbus.pipeline.cli", "status", "--run-id", run_id,
                           "--results-dir", results_dir], env=dict(env), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr
