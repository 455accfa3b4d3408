"""Figure ``idle``: the CPU an idle collector and its five default plugins use.

A collector with the default plugins (console, tensorboard, gauges, jsonl
and the example plugin) waits with nothing to do; psutil reads the CPU time
of the collector and of each worker over ``seconds``, as a share of one core.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict

import psutil

from ..collector import BenchCollector, wait_for

PLUGINS = ("console", "tensorboard", "gauges", "jsonl", "example")


@dataclasses.dataclass(frozen=True)
class IdleConfig:
    seconds: float = 30.0
    settle: float = 5.0
    timeout: float = 60.0
    enabled: bool = True


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def run(root: str, config: IdleConfig) -> Dict[str, Any]:
    from ....plugins.discovery import discover_plugins

    if not config.enabled:
        return {"skipped": "not measured in this mode"}
    installed = {p.name for p in discover_plugins()}
    collector = BenchCollector(root, "idle", [name for name in PLUGINS if name in installed])
    try:
        collector.start()
        collector.wait_ready(config.timeout)
        wait_for(collector.workers_ready, config.timeout, "every worker ready", 0.05)
        time.sleep(config.settle)  # the workers' imports are over
        main = psutil.Process(collector.proc.pid)
        processes = {"collector": main}
        for child in main.children():
            cmdline = child.cmdline()
            name = cmdline[cmdline.index("--plugin") + 1] if "--plugin" in cmdline else str(child.pid)
            processes[name] = child
        before = {name: _cpu(p) for name, p in processes.items()}
        started = time.monotonic()
        time.sleep(config.seconds)
        elapsed = time.monotonic() - started
        share = {name: (_cpu(p) - before[name]) / elapsed * 100 for name, p in processes.items()}
    finally:
        collector.close()
    return {
        "seconds": elapsed,
        "percent_of_one_core": share,
        "total_percent": sum(share.values()),
        "workers_percent": sum(v for k, v in share.items() if k != "collector"),
    }
