"""Helpers of the SummaryWriter and SB3 tests: a collector for a log_dir's run, children, readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Sequence

from collector_helpers import REPO, CollectorProcess
from zoo import zoo_env

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "summary_writer_child.py")
PLUGINS = "tensorboard,jsonl,recorder,write_raises"


def child_env(**extra: str) -> Dict[str, str]:
    # The test's collector serves the run: a child must not start its own.
    env = zoo_env(STATBUS_AUTOSTART="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = REPO + os.pathsep + env["PYTHONPATH"]
    return env


def start_collector(results_dir: str, run_id: str, plugins: str = PLUGINS) -> CollectorProcess:
    """The run's collector with torch's layout, as a SummaryWriter's on-demand one is started."""
    from statbus.pipeline.summary_writer import TORCH_LAYOUT_ARGS

    return CollectorProcess(results_dir, run_id, env=zoo_env(),
                            extra=["--plugins", plugins, *TORCH_LAYOUT_ARGS, "--stop-timeout", "30"]).start()


def run_child(*args: str, timeout: float = 120.0, script: str = CHILD) -> subprocess.CompletedProcess:
    """Run the child script to its end (killed and reaped on timeout); fails with its output."""
    process = subprocess.Popen([sys.executable, script, *args], env=child_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, f"child {args} exited {process.returncode}:\n{out[-4000:]}"
    return subprocess.CompletedProcess(args, process.returncode, out, "")


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def event_dirs(root: str) -> List[str]:
    """Directories under ``root`` (relative, sorted) that hold event files."""
    found = []
    for directory, _, files in os.walk(root):
        if any(name.startswith("events.out.tfevents.") for name in files):
            found.append(os.path.relpath(directory, root))
    return sorted(found)


def accumulator(directory: str) -> Any:
    """TensorBoard's EventAccumulator of one run directory, loaded, keeping every point."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(directory, size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def read_run(directory: str) -> Dict[str, Any]:
    """What TensorBoard's reader sees in one run directory: scalars, histograms, texts by tag."""
    acc = accumulator(directory)
    tags = acc.Tags()
    return {
        "scalars": {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]},
        "histograms": {t: [(e.step, e.histogram_value) for e in acc.Histograms(t)] for t in tags["histograms"]},
        "texts": {t: [(e.step, list(e.tensor_proto.string_val)) for e in acc.Tensors(t)] for t in tags["tensors"]},
    }


def stop(collector: CollectorProcess, names: Sequence[str] = ()) -> None:
    """Graceful stop: every plugin catches up before the collector exits."""
    assert collector.terminate(timeout=60) == 0, collector.log()
