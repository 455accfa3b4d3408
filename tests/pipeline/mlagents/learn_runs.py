"""Running :mod:`learn_driver` in a subprocess and reading back what a run wrote."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from typing import Dict, List, NamedTuple, Optional, Tuple

from waiting import wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "learn_driver.py")
MLZOO_DIR = os.path.join(HERE, "..", "..", "fixtures", "mlagents_zoo")
BEHAVIOR = "Target"
RUN_TIMEOUT = 240.0

CONFIG = """\
behaviors:
  Target:
    trainer_type: ppo
    hyperparameters:
      batch_size: 64
      buffer_size: 640
      learning_rate: 3.0e-4
    network_settings:
      hidden_units: 16
      num_layers: 1
    max_steps: {max_steps}
    summary_freq: 500
    time_horizon: 10
    threaded: {threaded}
    checkpoint_interval: 100000
"""


class Run(NamedTuple):
    code: int
    stdout: str
    stderr: str
    report: Dict
    run_dir: str


def write_config(directory: str, max_steps: int = 3000, threaded: bool = False) -> str:
    path = os.path.join(directory, f"config-{max_steps}-{threaded}.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(CONFIG.format(max_steps=max_steps, threaded=str(threaded).lower()))
    return path


def _stop_collector(run_dir: str) -> None:
    """A collector left behind by a launcher that failed: end it (it is this test's grandchild)."""
    try:
        with open(os.path.join(run_dir, "statbus", "collector.pid"), encoding="utf-8") as handle:
            pid = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, 10, what=f"the left-behind collector {pid} to end after SIGKILL", interval=0.05)


def train(
    mode: str,
    directory: str,
    run_id: str,
    config: str,
    *extra: str,
    mlzoo: Optional[str] = None,
) -> Run:
    """Train ``run_id`` under ``mode`` (``statbus`` or ``plain``) with seed 7 in ``directory``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", STATBUS_IDLE_EXIT="5")
    if mlzoo is not None:
        env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(MLZOO_DIR), env.get("PYTHONPATH", "")])
        env["MLZOO_PLUGINS"] = mlzoo
    report = os.path.join(directory, f"{run_id}.report.json")
    command = [sys.executable, DRIVER, mode, report, config, f"--run-id={run_id}", "--seed=7",
               "--results-dir=results", *extra]
    run_dir = os.path.join(directory, "results", run_id)
    out_path, err_path = os.path.join(directory, f"{run_id}.stdout"), os.path.join(directory, f"{run_id}.stderr")
    # Files, not pipes, and a session of its own: a training process that dies at once
    # (os._exit) leaves its forked env worker behind, holding whatever it inherited.
    with open(out_path, "w", encoding="utf-8") as out, open(err_path, "w", encoding="utf-8") as err:
        process = subprocess.Popen(command, cwd=directory, env=env, stdout=out, stderr=err, start_new_session=True)
    try:
        process.wait(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        try:
            os.killpg(process.pid, signal.SIGKILL)  # what is left of the session (orphaned env workers)
        except ProcessLookupError:
            pass
        _stop_collector(run_dir)
    with open(out_path, encoding="utf-8") as out, open(err_path, encoding="utf-8") as err:
        stdout, stderr = out.read(), err.read()
    try:
        with open(report, encoding="utf-8") as handle:
            loaded = json.load(handle)
    except FileNotFoundError:
        loaded = {}
    return Run(process.returncode, stdout, stderr, loaded, run_dir)


def scalars(run_dir: str, behavior: str = BEHAVIOR) -> Dict[str, List[Tuple[int, float]]]:
    """Every scalar of the behavior's event files, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(os.path.join(run_dir, behavior), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


_ELAPSED = re.compile(r"Time Elapsed: [0-9.]+ s\. ")


def progress_lines(stdout: str) -> List[str]:
    """ML-Agents' console lines per summary, without the elapsed time."""
    return [_ELAPSED.sub("", line) for line in stdout.splitlines() if line.startswith(f"[INFO] {BEHAVIOR}. Step: ")]


def hyperparameter_lines(stdout: str) -> List[str]:
    lines = stdout.splitlines()
    start = lines.index(f"[INFO] Hyperparameters for behavior name {BEHAVIOR}: ")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("["))
    return lines[start:end]


def gauges(run_dir: str) -> Dict[str, Dict[str, float]]:
    with open(os.path.join(run_dir, "run_logs", "timers.json"), encoding="utf-8") as handle:
        return json.load(handle)["gauges"]


def jsonl_summaries(run_dir: str) -> List[Dict]:
    with open(os.path.join(run_dir, "stats.jsonl"), encoding="utf-8") as handle:
        entries = [json.loads(line) for line in handle if line.strip()]
    return [e for e in entries if e.get("category") == BEHAVIOR and "step" in e]


def collector_log(run_dir: str, tail: int = 4000) -> str:
    """The end of the run's collector log: what a failed assertion on the plugins' output shows."""
    try:
        with open(os.path.join(run_dir, "statbus", "collector.log"), encoding="utf-8", errors="replace") as handle:
            return handle.read()[-tail:]
    except OSError as exc:
        return f"(no collector log: {exc})"


def mlzoo_records(run_dir: str, name: str) -> List[Dict]:
    path = os.path.join(run_dir, "mlzoo", f"{name}.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
