"""Figure 6 (issue 14): the caller's cost of ``add_scalar`` — torch's, tensorboardX's and statbus's.

The three writers run in one child process (``python -m statbus.pipeline.bench.figures.frameworks``,
so that torch stays out of the benchmark's own process and the SummaryWriter
binds the child's trainer client to the bench collector's run), rounds
alternated torch → tensorboardX → statbus, medians over the repetitions.  A
round logs ``tags`` scalars per step over ``calls`` calls, as a training loop
does; it is timed on the wall clock of the calling thread and on the process's
CPU clock (every thread: torch's and tensorboardX's event-writer threads,
statbus's sender).  The figure runs twice against the same collector: with
the built-in writers, and with a plugin that sleeps 50 ms per summary enabled.
Skipped, with the reason, where torch or tensorboardX is not installed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from ..children import run_json_child
from ..collector import BenchCollector, wait_for

PLUGINS = ("tensorboard", "jsonl", "sleepy")
CONFIG = """
[plugins.sleepy]
enabled = false
options = { write_sleep = 0.05 }
"""
KINDS = ("torch", "tensorboardX", "statbus")


@dataclasses.dataclass(frozen=True)
class FrameworksConfig:
    calls: int = 20_000
    tags: int = 4
    repetitions: int = 5


def missing() -> List[str]:
    """The libraries this figure needs that are not installed."""
    return [name for name in ("torch", "tensorboardX") if importlib.util.find_spec(name) is None]


def _writer(kind: str, log_dir: str) -> Any:
    if kind == "torch":
        from torch.utils.tensorboard import SummaryWriter
    elif kind == "tensorboardX":
        from tensorboardX import SummaryWriter
    else:
        from ...summary_writer import SummaryWriter  # type: ignore[assignment]
    return SummaryWriter(log_dir)


def _round(add: Callable[..., None], calls: int, tags: List[str], step0: int) -> Dict[str, float]:
    per_step = len(tags)
    cpu0, wall0 = time.process_time_ns(), time.perf_counter_ns()
    step = step0
    for i in range(calls // per_step):
        step = step0 + i
        for tag in tags:
            add(tag, 0.5, step)
    wall, cpu = time.perf_counter_ns() - wall0, time.process_time_ns() - cpu0
    done = (calls // per_step) * per_step
    return {"ns_per_call": wall / done, "cpu_ns_per_call": cpu / done, "last_step": step}


def child(run_dir: str, config: FrameworksConfig) -> Dict[str, Any]:
    """Runs in the child: the alternated rounds; returns medians per writer."""
    import torch

    torch.set_num_threads(1)
    writers = {kind: _writer(kind, os.path.join(run_dir, f"bench-{kind}")) for kind in KINDS}
    tags = [f"bench/tag{i}" for i in range(config.tags)]
    runs: Dict[str, List[Dict[str, float]]] = {kind: [] for kind in KINDS}
    step = 0
    try:
        for _ in range(config.repetitions):
            for kind in KINDS:
                result = _round(writers[kind].add_scalar, config.calls, tags, step)
                runs[kind].append(result)
            step = int(result["last_step"]) + 1
            for kind in KINDS:
                writers[kind].flush()  # each writes out what it holds, outside the timed rounds
    finally:
        for writer in writers.values():
            writer.close()
    return {kind: {"ns_per_call": statistics.median(r["ns_per_call"] for r in results),
                   "cpu_ns_per_call": statistics.median(r["cpu_ns_per_call"] for r in results)}
            for kind, results in runs.items()}


def _run_child(collector: BenchCollector, config: FrameworksConfig, scenario: str) -> Dict[str, Any]:
    out_path = os.path.join(collector.root, f"frameworks-{scenario}.json")
    env = dict(collector.env, STATBUS_AUTOSTART="0", OMP_NUM_THREADS="1")
    return run_json_child(__name__, [collector.layout.run_dir, out_path, json.dumps(dataclasses.asdict(config))],
                          out_path, env)


def with_and_without_slow_plugin(root: str, what: str, scenario: Callable[[BenchCollector, str], Any],
                                 between: Optional[Callable[[BenchCollector], Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Figure 6's set-up: a collector in torch's layout with the tensorboard and jsonl writers;
    ``scenario(collector, "normal")``, then what ``between`` measures, then, with a plugin that
    sleeps 50 ms per call enabled, ``scenario(collector, "sleepy")``."""
    from ...summary_writer import TORCH_LAYOUT_ARGS

    collector = BenchCollector(root, "runs", PLUGINS, CONFIG, extra_args=TORCH_LAYOUT_ARGS)
    results: Dict[str, Any] = {}
    try:
        collector.start()
        collector.wait_ready()
        wait_for(collector.workers_ready, 60.0, f"the {what} figure's workers")
        results["normal"] = scenario(collector, "normal")
        if between is not None:
            results.update(between(collector))
        collector.control({"op": "enable", "plugin": "sleepy"})
        wait_for(lambda: collector.plugin(collector.status(), "sleepy").get("state") == "READY", 60.0, "sleepy")
        results["sleepy"] = scenario(collector, "sleepy")
    finally:
        collector.close()
    return results


def run(root: str, config: FrameworksConfig) -> Dict[str, Any]:
    absent = missing()
    if absent:
        return {"skipped": f"{' and '.join(absent)} not installed (pip install -e '.[frameworks]')"}
    return with_and_without_slow_plugin(root, "frameworks", lambda collector, name: _run_child(collector, config, name))


if __name__ == "__main__":
    run_dir_arg, out_arg, config_arg = sys.argv[1:4]
    figures = child(run_dir_arg, FrameworksConfig(**json.loads(config_arg)))
    with open(out_arg, "w", encoding="utf-8") as out_file:
        json.dump(figures, out_file)
