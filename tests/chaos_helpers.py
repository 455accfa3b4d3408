"""Helpers for the chaos tests: a collector with plugins, trainer subprocesses, output readers.

Trainer ``i`` records into its own category ``T<i>`` and closes its own
periods, so what every summary must hold is known exactly in advance (periods
of one process are ordered by its own frames; periods shared across processes
would depend on arrival order).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import psutil

from collector_helpers import REPO, CollectorProcess, wait_for
from statbus.pipeline.control import ControlError, control_request
from zoo import zoo_env

RUN_ID = "chaos"

TRAINER = r"""
import json, sys, time
from statbus.pipeline import StatsAggregationMethod, StatsReporter, configure, flush, shutdown

results_dir, run_id, index, steps, per_step, pause, poison_at = sys.argv[1:8]
index, steps, per_step, pause, poison_at = int(index), int(steps), int(per_step), float(pause), int(poison_at)
configure(run_id=run_id, results_dir=results_dir, autostart=False)
reporter = StatsReporter(f"T{index}")
poison = StatsReporter("Poison")
longest = 0.0
calls = 0
clock = time.perf_counter
for step in range(1, steps + 1):
    for j in range(per_step):
        start = clock()
        reporter.add_stat("reward", index * 1000 + step + j / 8)
        longest = max(longest, clock() - start)
    start = clock()
    reporter.add_stat("count", 1.0, StatsAggregationMethod.SUM)
    if step == poison_at:
        poison.add_stat("bad", float(step))
        poison.write_stats(step)
    reporter.write_stats(step)
    longest = max(longest, clock() - start)
    calls += per_step + 2
    if pause:
        time.sleep(pause)  # paces the training, so that kills land in the middle of a run
flushed = flush(120.0)
shutdown()
print(json.dumps({"max_call": longest, "calls": calls, "flushed": flushed}), flush=True)
"""


def expected_summaries(trainers: int, steps: int, per_step: int) -> Dict[Tuple[str, int], Dict[str, List[float]]]:
    """(category, step) → {key: values} of every summary the trainers produce (not the Poison ones)."""
    return {
        (f"T{index}", step): {
            "reward": [index * 1000 + step + j / 8 for j in range(per_step)],
            "count": [1.0],
        }
        for index in range(trainers)
        for step in range(1, steps + 1)
    }


class ChaosRun:
    """A collector with plugins and its trainer subprocesses; :meth:`close` kills and reaps them all."""

    def __init__(self, tmp_path: Any, plugins: Sequence[str], settings: Sequence[str] = (), **env: str) -> None:
        self.results = str(tmp_path / "results")
        extra = ["--plugins", ",".join(plugins), "--stop-timeout", "5"]
        for setting in settings:
            extra += ["--set", setting]
        self.collector = CollectorProcess(self.results, RUN_ID, extra=extra, env=zoo_env(**env))
        self.layout = self.collector.layout
        self.run_dir = os.path.join(self.results, RUN_ID)
        self.trainers: List[subprocess.Popen] = []
        self._logs: List[Any] = []

    # --- processes ---------------------------------------------------------------

    def start(self) -> "ChaosRun":
        self.collector.start()
        return self

    def start_trainers(
        self, count: int, steps: int, per_step: int, pause: float = 0.0, poison_at: int = 0
    ) -> None:
        env = dict(os.environ, STATBUS_AUTOSTART="0", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for index in range(count):
            log = open(os.path.join(self.results, f"trainer-{index}.log"), "ab")
            self._logs.append(log)
            self.trainers.append(subprocess.Popen(
                [sys.executable, "-c", TRAINER, self.results, RUN_ID, str(index), str(steps), str(per_step),
                 repr(pause), str(poison_at if index == 0 else 0)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env,
            ))

    def trainers_running(self) -> bool:
        return any(p.poll() is None for p in self.trainers)

    def finish_trainers(self, timeout: float = 90.0) -> List[Dict[str, Any]]:
        """Wait for every trainer to exit 0; their reports (max call time, calls, flushed)."""
        reports = []
        for process in self.trainers:
            out, _ = process.communicate(timeout=timeout)
            assert process.returncode == 0, f"trainer exited {process.returncode}:\n{self.collector.log()}"
            reports.append(json.loads(out.decode().strip().splitlines()[-1]))
        assert all(r["flushed"] for r in reports), f"a trainer's stats were never acked:\n{self.collector.log()}"
        return reports

    def close(self) -> None:
        for process in self.trainers:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()
        for log in self._logs:
            log.close()
        # Graceful first (the supervisor then stops and reaps its worker hosts), KILL after a deadline.
        process = self.collector.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.collector.close()

    # --- control -----------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        return control_request(self.layout.control_address, {"op": "status"}, timeout=10)

    def plugin(self, name: str) -> Dict[str, Any]:
        for plugin in self.status()["plugins"]:
            if plugin["name"] == name:
                return plugin
        raise AssertionError(f"no plugin {name} in status")

    def wait_plugin(self, name: str, condition: Any, timeout: float = 60.0, what: str = "") -> Dict[str, Any]:
        found: Dict[str, Any] = {}

        def check() -> bool:
            found.update(self.plugin(name))
            return bool(condition(found))

        try:
            wait_for(check, timeout, interval=0.1, what=what or f"plugin {name}")
        except AssertionError:
            raise AssertionError(f"{what or name}: last status {found}\n{self.collector.log()}") from None
        return dict(found)

    def wait_caught_up(self, names: Sequence[str], timeout: float = 60.0) -> None:
        """Until every plugin in ``names`` is READY and has committed up to the journal head."""
        last: Dict[str, Any] = {}

        def check() -> bool:
            status = self.status()
            head = status["journal"]["head"]
            plugins = {p["name"]: p for p in status["plugins"]}
            last.update({n: (plugins[n]["state"], plugins[n]["committed"], head) for n in names})
            return all(plugins[n]["committed"] >= head and plugins[n]["state"] == "READY" for n in names)

        try:
            wait_for(check, timeout, interval=0.1, what="catch-up")
        except AssertionError:
            raise AssertionError(f"not caught up: {last}\n{self.collector.log()}") from None

    def kill_worker(self, name: str) -> Optional[int]:
        """SIGKILL the plugin's worker host if it is READY; its pid, or None.

        The pid comes from status; it is killed only if it is still a child of
        our collector (a pid reused since cannot be hit).
        """
        try:
            plugin = self.plugin(name)
        except ControlError:
            return None
        pid = plugin["pid"]
        if plugin["state"] != "READY" or not pid:
            return None
        try:
            if psutil.Process(pid).ppid() != self.collector.process.pid:
                return None
            os.kill(pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError):
            return None
        return pid

    # --- outputs -----------------------------------------------------------------

    def path(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts)


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def zoo_summaries(path: str) -> List[Tuple[str, int, Dict[str, List[float]]]]:
    """(category, step, values) of every write_stats line of a zoo writer's output."""
    return [(x["category"], x["step"], x["values"]) for x in read_jsonl(path) if x.get("call") == "write_stats"]


def stats_jsonl_summaries(path: str) -> List[Tuple[str, int, Dict[str, Tuple[int, float]]]]:
    """(category, step, {key: (num, sum)}) of every summary line of the jsonl writer's stats.jsonl."""
    return [
        (x["category"], x["step"], {k: (v["num"], v["sum"]) for k, v in x["values"].items()})
        for x in read_jsonl(path)
        if "step" in x
    ]


def example_summaries(path: str) -> List[Tuple[str, int]]:
    """(category, step) of every line of the example plugin's ``example_plugin.txt``."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [(line.split()[0], int(line.split()[1])) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def tensorboard_steps(directory: str, tag: str) -> Tuple[List[int], List[int]]:
    """Steps of ``tag`` as TensorBoard's EventAccumulator shows them, and as every event file holds them.

    The second list counts raw events across all files: the accumulator alone
    could hide a duplicate (it purges what looks like a restarted run).
    """
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    accumulator = ea.EventAccumulator(directory, size_guidance={ea.SCALARS: 0})
    accumulator.Reload()
    shown = [event.step for event in accumulator.Scalars(tag)]
    raw = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("events.out.tfevents"):
            for event in LegacyEventFileLoader(os.path.join(directory, name)).Load():
                if event.HasField("summary") and any(v.tag == tag for v in event.summary.value):
                    raw.append(event.step)
    return shown, raw


@contextlib.contextmanager
def chaos_run(tmp_path: Any, plugins: Sequence[str], settings: Sequence[str] = (), **env: str) -> Iterator[ChaosRun]:
    run = ChaosRun(tmp_path, plugins, settings, **env)
    try:
        yield run.start()
    finally:
        run.close()

