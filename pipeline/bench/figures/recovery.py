"""Figure 3 — recovery: ``kill -9`` of a worker host, and of the collector, while a trainer streams.

A trainer process records a steady stream (a summary every ~50 ms) the whole
time.  Caught up means: the plugin runs in a new process, is READY, and its
``lag_records`` in the collector's status is 0.

* worker: from the kill of one plugin's host to that plugin caught up;
* collector: from the restart of a killed collector (started at once, cold)
  to every plugin caught up; the collector's own readiness is reported too.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any, Dict, List, Optional, Set

from ..children import Children
from ..collector import BenchCollector, wait_for
from ..stats import spread

PLUGINS = ("null", "jsonl", "tensorboard", "console")
VICTIM = "jsonl"


@dataclasses.dataclass(frozen=True)
class RecoveryConfig:
    worker_kills: int = 5
    collector_kills: int = 5
    timeout: float = 60.0


def _caught_up_in_new_processes(collector: BenchCollector, names: List[str], old: Set[int]) -> Optional[Dict[str, Any]]:
    status = collector.workers_ready(names)
    if status is None:
        return None
    for plugin in status.get("plugins", []):
        if plugin.get("name") in names and (plugin.get("pid") in old or plugin.get("lag_records") != 0):
            return None
    return status


def _ready_in_new_process(collector: BenchCollector, name: str, old_pid: int) -> bool:
    status = collector.workers_ready([name])
    return status is not None and collector.plugin(status, name).get("pid") not in (None, old_pid)


def _settle(collector: BenchCollector, timeout: float) -> Dict[str, Any]:
    return wait_for(lambda: collector.caught_up(PLUGINS), timeout, "every plugin caught up", 0.01)


def run(root: str, config: RecoveryConfig) -> Dict[str, Any]:
    collector = BenchCollector(root, "rec", PLUGINS)
    worker_s: List[float] = []
    worker_ready_s: List[float] = []
    collector_s: List[float] = []
    collector_ready_s: List[float] = []
    env = dict(os.environ)
    env.pop("STATBUS_ADDRESS", None)
    try:
        with Children() as children:
            collector.start()
            collector.wait_ready()
            wait_for(collector.workers_ready, config.timeout, "the recovery workers")
            streamer = children.start(["stream", "--run-id", collector.layout.run_id,
                                       "--results-dir", collector.layout.results_dir], env)
            streamer.read(config.timeout)
            for _ in range(config.worker_kills):
                status = _settle(collector, config.timeout)
                victim = collector.plugin(status, VICTIM)
                pid = int(victim["pid"])
                os.kill(pid, signal.SIGKILL)
                killed = time.monotonic()
                wait_for(lambda: _ready_in_new_process(collector, VICTIM, pid), config.timeout,
                         f"{VICTIM} restarted", 0.01)
                worker_ready_s.append(time.monotonic() - killed)
                wait_for(lambda: _caught_up_in_new_processes(collector, [VICTIM], {pid}),
                         config.timeout, f"{VICTIM} caught up", 0.01)
                worker_s.append(time.monotonic() - killed)
            for _ in range(config.collector_kills):
                status = _settle(collector, config.timeout)
                old = {int(p["pid"]) for p in status.get("plugins", []) if p.get("pid")}
                collector.kill9()
                restarted = collector.start()
                collector.wait_ready(config.timeout)
                collector_ready_s.append(time.monotonic() - restarted)
                wait_for(lambda: _caught_up_in_new_processes(collector, list(PLUGINS), old),
                         config.timeout, "every plugin caught up after the collector's restart", 0.01)
                collector_s.append(time.monotonic() - restarted)
    finally:
        collector.close()
    return {
        "worker_kill_to_caught_up_s": spread(worker_s),
        "worker_kill_to_ready_s": spread(worker_ready_s),
        "collector_restart_to_caught_up_s": spread(collector_s),
        "collector_restart_to_ready_s": spread(collector_ready_s),
        "worker_kills": len(worker_s),
        "collector_kills": len(collector_s),
        "samples": {"worker": worker_s, "collector": collector_s},
    }
