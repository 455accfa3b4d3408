"""Figure ``scale``: 1 to 128 trainer processes at once, every value once.

For each N, a fresh collector (the jsonl plugin, whose ``stats.jsonl`` is read back)
and one fleet process that forks N trainers (:mod:`..fleet`): each records 20,000
values of 10 keys and exits, child 0 closing the period every 100 steps, all started
together — the load of issue 21, where 128 processes lost 43% of their values.

* values/s *acked*: from ``go`` to the last child's exit (a child exits once its
  values are acknowledged, its exit hook waiting for them);
* values/s *delivered*: to the jsonl plugin's cursor past the closing summary;
* collector CPU (user + system of the collector process, not its workers) per
  million values over that span;
* ``add_stat`` p99 and worst over every call of every child, next to the worst
  iteration of a plain loop timed beside it: on 2 cores shared by N processes the
  scheduler's preemptions land in both, statbus's own cost only in the first;
* exact: every key's count and sum in ``stats.jsonl`` as recorded, and no process
  saying anything (no value spooled or lost, no sender left running).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Dict, Sequence, Tuple

import psutil

from ..children import Children
from ..collector import BenchCollector, BenchError, wait_for
from ..fleet import CATEGORY, percentile_us

PLUGINS = ("jsonl",)


@dataclasses.dataclass(frozen=True)
class ScaleConfig:
    processes: Sequence[int] = (1, 8, 32, 64, 128)
    steps: int = 2000
    keys: int = 10
    write_every: int = 100
    timeout: float = 300.0
    enabled: bool = True


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _totals(path: str) -> Tuple[Dict[str, Tuple[int, float]], int]:
    """``{key: (values, sum)}`` over the summaries in ``stats.jsonl``, and how many there are."""
    totals: Dict[str, Tuple[int, float]] = {}
    summaries = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("category") != CATEGORY or "values" not in row:
                continue
            summaries += 1
            for key, value in row["values"].items():
                num, total = totals.get(key, (0, 0.0))
                totals[key] = (num + value["num"], total + value["sum"])
    return totals, summaries


def _one(root: str, n: int, config: ScaleConfig) -> Dict[str, Any]:
    collector = BenchCollector(root, f"scale{n}", PLUGINS)
    try:
        collector.start()
        collector.wait_ready(config.timeout)
        wait_for(collector.workers_ready, config.timeout, "the scale figure's jsonl worker")
        main = psutil.Process(collector.proc.pid)
        layout = collector.layout
        with Children() as children:
            fleet = children.start(["fleet", "--run-id", layout.run_id, "--results-dir", layout.results_dir,
                                    "--processes", str(n), "--steps", str(config.steps), "--keys", str(config.keys),
                                    "--write-every", str(config.write_every), "--timeout", str(config.timeout),
                                    "--out", os.path.join(root, f"fleet{n}")])
            children.wait_ready(config.timeout)
            cpu_before = _cpu(main)
            fleet.go()
            result = fleet.read(config.timeout + 60.0)
            err = fleet.proc.communicate(timeout=config.timeout)[1].decode("utf-8", "replace")
        head = collector.status()["journal"]["head"]
        wait_for(lambda: collector.committed_past(PLUGINS, head), config.timeout, "the jsonl plugin to catch up", 0.005)
        delivered = time.monotonic()
        cpu = _cpu(main) - cpu_before
        totals, summaries = _totals(os.path.join(layout.run_dir, "stats.jsonl"))
    finally:
        collector.close()
    steps, values = config.steps, result["values"]
    per_key = (n * steps, float(sum(i * 10_000 * steps + steps * (steps - 1) // 2 for i in range(n))))
    said = [line for line in err.splitlines() if line.strip()]
    exact = (totals == {f"k{key}": per_key for key in range(config.keys)} and result["flushed"]
             and result["exit_codes_nonzero"] == 0 and not said)
    return {
        "processes": n, "values": values, "summaries": summaries,
        "acked_values_per_s": values / (result["exited"] - result["started"]),
        "delivered_values_per_s": values / (delivered - result["started"]),
        "collector_cpu_s_per_million": cpu / (values / 1e6),
        "add_stat_p99_us": percentile_us(result["add_stat"], 0.99),
        "add_stat_max_us": result["add_stat_max_us"],
        "plain_p99_us": percentile_us(result["plain"], 0.99),
        "plain_max_us": result["plain_max_us"],
        "exact": exact,
        "lines_said": said[:5],
    }


def run(root: str, config: ScaleConfig) -> Dict[str, Any]:
    """Returns ``{str(n): figures}``, one run per process count."""
    if not config.enabled:
        return {"skipped": "not measured in this mode"}
    out: Dict[str, Any] = {}
    for n in config.processes:
        try:
            out[str(n)] = _one(root, n, config)
        except BenchError as exc:
            out[str(n)] = {"processes": n, "error": str(exc)}
    return out
