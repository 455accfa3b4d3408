"""Figure 5 — start-up: a collector and its workers from cold, and ``import statbus.pipeline`` in a trainer.

The import is measured in fresh interpreters (``python -c``), each timing its
own import and reading its own RSS, so nothing this process already loaded
helps.  It also lists which heavy modules the import dragged in: a trainer
must not pay for tensorboard or any writer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List

from ..collector import BenchCollector, wait_for
from ..stats import median

PLUGINS = ("console", "tensorboard", "gauges", "jsonl", "null")
HEAVY_MODULES = ("tensorboard", "numpy", "torch", "google.protobuf", "statbus.plugins.writers.tensorboard",
                 "statbus.plugins.writers.console", "statbus.plugins.writers.jsonl", "statbus.plugins.writers.gauges", "statbus.workers")
MIB = 1 << 20

IMPORT_PROBE = """
import json, os, sys, time
def rss():
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = rss()
t0 = time.perf_counter()
import statbus.pipeline
seconds = time.perf_counter() - t0
heavy = [m for m in json.loads(sys.argv[1]) if m in sys.modules]
print(json.dumps({"seconds": seconds, "rss": rss(), "rss_before": before, "heavy": heavy}))
"""


@dataclasses.dataclass(frozen=True)
class StartupConfig:
    collector_starts: int = 5
    imports: int = 5
    timeout: float = 60.0


def _import_probe(timeout: float) -> Dict[str, Any]:
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, json.dumps(HEAVY_MODULES)], capture_output=True,
                         text=True, timeout=timeout, env=env, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.monotonic() - started
    return result


def run(root: str, config: StartupConfig) -> Dict[str, Any]:
    ready: List[float] = []
    workers: List[float] = []
    for i in range(config.collector_starts):
        collector = BenchCollector(root, f"start{i}", PLUGINS)
        try:
            started = collector.start()
            collector.wait_ready(config.timeout)
            ready.append(time.monotonic() - started)
            wait_for(collector.workers_ready, config.timeout, "every worker ready", 0.01)
            workers.append(time.monotonic() - started)
        finally:
            collector.close()
    probes = [_import_probe(config.timeout) for _ in range(config.imports)]
    heavy = sorted({m for p in probes for m in p["heavy"]})
    return {
        "collector_ready_s": median(ready),
        "workers_ready_s": median(workers),
        "collector_ready_samples": ready,
        "workers_ready_samples": workers,
        "plugins": list(PLUGINS),
        "import_s": median([p["seconds"] for p in probes]),
        "import_rss_mb": median([p["rss"] / MIB for p in probes]),
        "interpreter_rss_mb": median([p["rss_before"] / MIB for p in probes]),
        "import_process_s": median([p["process_seconds"] for p in probes]),
        "heavy_modules_imported": heavy,
        "repetitions": {"collector": len(ready), "import": len(probes)},
    }
