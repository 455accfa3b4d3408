"""Figure 4 — memory: a stalled plugin must cost disk, never the collector's RAM; a trainer's buffer is bounded.

* Collector side: a collector with a null plugin and a stalled one (it sleeps
  a second per value, with a call timeout long enough that the supervisor lets
  it be) while trainer processes push ``values`` values; the peak RSS of the
  collector and of each worker host is sampled every 50 ms with psutil.
* Trainer side: a trainer with no collector records values until its buffer
  overflows and then as many again; its RSS before, when full, and at peak.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any, Dict

import psutil

from ..children import Children
from ..collector import BenchCollector, wait_for

PLUGINS = ("null", "stall")
CONFIG = """
[plugins.stall]
call_timeout = 3600
options = { add_sleep = 1.0, write_sleep = 1.0 }
"""
MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    values: int = 10_000_000
    trainers: int = 2
    buffer_bytes: int = 16 << 20
    timeout: float = 240.0


class _RssSampler(threading.Thread):
    """Peak RSS per role (collector, each plugin's host) until stopped."""

    def __init__(self, collector: BenchCollector) -> None:
        super().__init__(name="bench-rss", daemon=True)
        self.collector = collector
        self.peaks: Dict[str, int] = {}
        self.stop_event = threading.Event()
        self.roles: Dict[int, str] = {}
        self.error: str = ""

    def run(self) -> None:
        while not self.stop_event.wait(0.05):
            for pid in self.collector.process_tree():
                role = "collector" if pid == self.collector.pid() else self.roles.get(pid, "worker")
                try:
                    rss = psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue
                self.peaks[role] = max(self.peaks.get(role, 0), rss)


def _collector_side(root: str, config: MemoryConfig) -> Dict[str, Any]:
    collector = BenchCollector(root, "mem", PLUGINS, CONFIG)
    sampler = _RssSampler(collector)
    env = dict(os.environ)
    env.pop("STATBUS_ADDRESS", None)
    try:
        collector.start()
        collector.wait_ready()
        status = wait_for(collector.workers_ready, 60.0, "the memory workers")
        sampler.roles = {int(p["pid"]): p["name"] for p in status["plugins"] if p.get("pid")}
        sampler.start()
        with Children() as children:
            for i in range(config.trainers):
                children.start(["trainer", "--run-id", collector.layout.run_id,
                                "--results-dir", collector.layout.results_dir, "--category", f"Mem{i}",
                                "--values", str(config.values // config.trainers),
                                "--timeout", str(config.timeout)], env)
            children.wait_ready(60.0)
            children.go()
            results = children.results(config.timeout)
        status = collector.status()
    finally:
        sampler.stop_event.set()
        if sampler.is_alive():
            sampler.join()
        collector.close(graceful=False)
    stall = collector.plugin(status, "stall")
    return {
        "values": sum(r["values"] for r in results),
        "all_flushed": all(r["flushed"] for r in results),
        "collector_rss_peak_mb": sampler.peaks.get("collector", 0) / MIB,
        "worker_rss_peak_mb": {name: sampler.peaks.get(name, 0) / MIB for name in PLUGINS},
        "stalled_lag_records": stall.get("lag_records"),
        "stalled_lag_mb": (stall.get("lag_bytes") or 0) / MIB,
        "journal_mb": status["journal"]["size_bytes"] / MIB,
    }


def _trainer_side(root: str, config: MemoryConfig) -> Dict[str, Any]:
    env = dict(os.environ)
    env.pop("STATBUS_ADDRESS", None)
    with Children() as children:
        child = children.start(["buffer-fill", "--run-id", "memdown", "--results-dir", os.path.join(root, "results"),
                                "--address", f"ipc://{root}/nobody.sock",
                                "--buffer-bytes", str(config.buffer_bytes), "--timeout", str(config.timeout)], env)
        result = child.read(config.timeout + 30.0)
    return {
        "buffer_mb": config.buffer_bytes / MIB,
        "rss_before_mb": result["rss_base"] / MIB,
        "rss_full_mb": result["rss_full"] / MIB,
        "rss_peak_mb": result["rss_peak"] / MIB,
        "rss_growth_mb": (result["rss_peak"] - result["rss_base"]) / MIB,
        "buffer_bytes_max_mb": result["buffer_bytes_max"] / MIB,
        "values_recorded": result["recorded"],
        "values_dropped": result["values_dropped"],
        "queued_events_max": result["queued_max"],
        "overflowed": result["full_at"] is not None,
    }


def run(root: str, config: MemoryConfig) -> Dict[str, Any]:
    return {"collector": _collector_side(root, config), "trainer": _trainer_side(root, config)}
