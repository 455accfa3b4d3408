"""``statbus bench`` / ``scripts/bench.py``: every figure in one run, table and JSON.

Modes: default (figures 1-6, 8 and 10 in about 5 minutes on 2 cores, figure 7's real
training 15 more; 5 repetitions, A/B alternated, medians), ``--quick`` (smaller
loads, fewer repetitions: about a minute, and 4 for figure 7) and
a hidden ``--smoke`` (the smallest configuration, for the test suite).  Every
run works in a temporary directory, removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Optional, Sequence

from ...workers.exits import ExitCode
from .args import FIGURES, add_arguments
from .figures import frameworks, hotpath, idle, learn, media, memory, recovery, scale, soak, startup, throughput
from .report import format_table, rows_for

logger = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class BenchConfig:
    hotpath: hotpath.HotPathConfig
    throughput: throughput.ThroughputConfig
    recovery: recovery.RecoveryConfig
    memory: memory.MemoryConfig
    startup: startup.StartupConfig
    frameworks: frameworks.FrameworksConfig
    media: media.MediaConfig
    learn: learn.LearnConfig
    idle: idle.IdleConfig
    scale: scale.ScaleConfig
    soak: soak.SoakConfig


MODES: Dict[str, BenchConfig] = {
    "default": BenchConfig(
        hotpath.HotPathConfig(add_calls=120_000, periods=40, slow_periods=6, repetitions=5),
        throughput.ThroughputConfig(trainers=(1, 4, 8), values=2_400_000, summaries=12_000, repetitions=5),
        recovery.RecoveryConfig(worker_kills=5, collector_kills=5),
        memory.MemoryConfig(values=10_000_000, trainers=2, buffer_bytes=16 << 20),
        startup.StartupConfig(collector_starts=5, imports=5),
        frameworks.FrameworksConfig(calls=20_000, repetitions=5),
        media.MediaConfig(),
        learn.LearnConfig(max_steps=10_000, repetitions=5),
        idle.IdleConfig(seconds=30.0),
        scale.ScaleConfig(processes=(1, 8, 32, 64, 128)),
        soak.SoakConfig(seconds=600.0),
    ),
    "quick": BenchConfig(
        hotpath.HotPathConfig(add_calls=48_000, periods=20, slow_periods=3, repetitions=3),
        throughput.ThroughputConfig(trainers=(1, 4, 8), values=240_000, summaries=600, repetitions=2),
        recovery.RecoveryConfig(worker_kills=3, collector_kills=2),
        memory.MemoryConfig(values=1_000_000, trainers=2, buffer_bytes=4 << 20),
        startup.StartupConfig(collector_starts=2, imports=3),
        frameworks.FrameworksConfig(calls=8_000, repetitions=3),
        media.MediaConfig(repetitions=2, e2e_videos=10),
        learn.LearnConfig(max_steps=3_000, repetitions=3),
        idle.IdleConfig(seconds=10.0),
        scale.ScaleConfig(processes=(1, 32, 128), steps=500),
        soak.SoakConfig(seconds=120.0, collector_every=(10.0, 20.0), worker_every=(10.0, 20.0), trainer_every=30.0,
                        settle=30.0),
    ),
    "smoke": BenchConfig(
        hotpath.HotPathConfig(add_calls=6_000, periods=3, slow_periods=1, repetitions=1),
        throughput.ThroughputConfig(trainers=(1,), values=12_000, summaries=50, repetitions=1),
        recovery.RecoveryConfig(worker_kills=1, collector_kills=1),
        memory.MemoryConfig(values=60_000, trainers=1, buffer_bytes=1 << 20),
        startup.StartupConfig(collector_starts=1, imports=1),
        frameworks.FrameworksConfig(calls=400, repetitions=1),
        media.MediaConfig(repetitions=1, calls=tuple((name, 1) for name in media.CALLS), e2e_videos=2),
        learn.LearnConfig(enabled=False),  # minutes of training: not for the test suite
        idle.IdleConfig(enabled=False),  # a collector and five workers more: the suite's smoke run is long enough
        scale.ScaleConfig(processes=(2,), steps=100),
        soak.SoakConfig(enabled=False),  # minutes of kills: the suite has its own, tests/system/test_soak.py
    ),
}

RUNNERS: Dict[str, Callable[[str, Any], Dict[str, Any]]] = {
    "startup": startup.run,
    "hotpath": hotpath.run,
    "throughput": throughput.run,
    "recovery": recovery.run,
    "memory": memory.run,
    "frameworks": frameworks.run,
    "media": media.run,
    "learn": learn.run,
    "idle": idle.run,
    "scale": scale.run,
    "soak": soak.run,
}


def _version(distribution: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> Dict[str, Any]:
    """Machine, Python and package versions recorded next to the figures."""
    import psutil
    import zmq

    return {
        "machine": {"platform": platform.platform(), "cpu": _cpu_model(), "logical_cpus": os.cpu_count(),
                    "memory_gb": round(psutil.virtual_memory().total / (1 << 30), 1),
                    "load_average": list(os.getloadavg())},
        "python": {"version": sys.version.split()[0], "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "packages": {"statbus": _version("statbus"), "pyzmq": zmq.pyzmq_version(), "libzmq": zmq.zmq_version(),
                     "msgpack": _version("msgpack"), "psutil": _version("psutil"),
                     "tensorboard": _version("tensorboard"), "torch": _version("torch"),
                     "tensorboardX": _version("tensorboardX")},
    }


def run_bench(mode: str, figures: Sequence[str], root: str,
              progress: Callable[[str], None] = lambda text: None,
              learn_pairs: Optional[int] = None, soak: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Run ``figures`` in ``mode`` under ``root``; returns the JSON document (figures, targets, environment).

    ``soak``: settings of the soak figure to change (``seed``, ``restart_by``).
    """
    config = MODES[mode]
    if learn_pairs is not None:
        config = dataclasses.replace(config, learn=dataclasses.replace(config.learn, repetitions=learn_pairs))
    if soak:
        config = dataclasses.replace(config, soak=dataclasses.replace(config.soak, **soak))
    started = time.time()
    clock = time.monotonic()
    results: Dict[str, Any] = {}
    durations: Dict[str, float] = {}
    for name in figures:
        progress(f"figure {name} ...")
        t0 = time.monotonic()
        figure_root = os.path.join(root, name[:4])
        os.makedirs(figure_root, exist_ok=True)
        results[name] = RUNNERS[name](figure_root, getattr(config, name))
        durations[name] = time.monotonic() - t0
        progress(f"figure {name} done in {durations[name]:.1f} s")
    rows = rows_for(results)
    document = {
        "mode": mode,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": time.monotonic() - clock,
        "figure_durations_s": durations,
        **environment(),
        "config": {name: dataclasses.asdict(getattr(config, name)) for name in figures},
        "figures": results,
        "targets": [row._asdict() for row in rows],
    }
    return document


def run(args: argparse.Namespace) -> int:
    mode = "smoke" if args.smoke else "quick" if args.quick else "default"
    figures = [f.strip() for f in (args.only or ",".join(FIGURES)).split(",") if f.strip()]
    unknown = [f for f in figures if f not in FIGURES]
    if unknown:
        print(f"statbus bench: unknown figures {unknown}; choose from {', '.join(FIGURES)}", file=sys.stderr)
        return ExitCode.USAGE
    root = tempfile.mkdtemp(prefix="sbbench-")
    print(f"statbus bench ({mode} mode) in {root}", file=sys.stderr)
    try:
        soak = {name: value for name, value in (("seed", args.seed), ("restart_by", args.soak_restart_by))
                if value is not None}
        document = run_bench(mode, figures, root, lambda text: print(f"  {text}", file=sys.stderr, flush=True),
                             learn_pairs=args.learn_pairs, soak=soak)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    machine = document["machine"]
    print(f"statbus bench — {mode} mode, {document['duration_s']:.0f} s; {machine['cpu']}, "
          f"{machine['logical_cpus']} CPUs; Python {document['python']['version']}; "
          f"pyzmq {document['packages']['pyzmq']} (libzmq {document['packages']['libzmq']}), "
          f"msgpack {document['packages']['msgpack']}")
    print(format_table(rows_for(document["figures"])))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1, default=str)
        print(f"figures written to {args.json}")
    return ExitCode.OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
