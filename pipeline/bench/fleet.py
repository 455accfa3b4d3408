"""The scale figure's trainers: one process forks N, as a launcher of environment workers does.

``python -m statbus.pipeline.bench.procs fleet --processes N ...``: the fleet process
records nothing itself until its children are gone, so no statbus thread runs at the
forks.  The children wait on a pipe, start together at ``go``, each record ``--steps``
steps of ``--keys`` keys (child 0 closing the period every ``--write-every`` steps) and
leave through ``sys.exit``: their exit hook sends what is left and waits for the acks,
so a child is gone once its values are journaled.  Then the fleet closes the last period.

Each child times every ``add_stat`` call and, right after it, one iteration of a plain
loop (a list append) with the same clock: both see the same preemptions, so the plain
loop's worst iteration is what the scheduler costs on this machine under this load, and
what ``add_stat`` takes beyond it is statbus's.  Times go into log-scale histograms
(:data:`BUCKETS_PER_OCTAVE`), merged over the children.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
import time
import traceback
from typing import Any, Dict, List

CATEGORY = "Scale"
BUCKETS_PER_OCTAVE = 8
"""Histogram resolution: a bucket is 2^(1/8) wide (9%), so a percentile is read to within 9%."""


def _histogram(durations_ns: List[int]) -> Dict[str, int]:
    buckets = collections.Counter(int(math.log2(max(d, 1)) * BUCKETS_PER_OCTAVE) for d in durations_ns)
    return {str(b): c for b, c in buckets.items()}


def percentile_us(histogram: Dict[str, int], q: float) -> float:
    """The ``q`` quantile (0-1) of a merged histogram, as its bucket's upper edge in µs."""
    total = sum(histogram.values())
    seen = 0
    for bucket in sorted(histogram, key=int):
        seen += histogram[bucket]
        if seen >= q * total:
            return 2 ** ((int(bucket) + 1) / BUCKETS_PER_OCTAVE) / 1000
    return 0.0


def emit(obj: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _merge(into: Dict[str, int], histogram: Dict[str, int]) -> None:
    for bucket, count in histogram.items():
        into[bucket] = into.get(bucket, 0) + count


def _child(index: int, args: argparse.Namespace, go: int) -> None:
    """One trainer: wait for go, record, write what it measured, exit through the exit hook."""
    from statbus.pipeline import StatsReporter

    os.read(go, 1)  # returns at EOF: the fleet closed its end
    reporter = StatsReporter(CATEGORY)
    add_stat = reporter.add_stat
    names = [f"k{key}" for key in range(args.keys)]
    plain: List[float] = []
    append = plain.append
    clock = time.perf_counter_ns
    stat_ns: List[int] = []
    plain_ns: List[int] = []
    for step in range(args.steps):
        value = index * 10_000.0 + step
        for name in names:
            t0 = clock()
            add_stat(name, value)
            t1 = clock()
            append(value)
            t2 = clock()
            stat_ns.append(t1 - t0)
            plain_ns.append(t2 - t1)
        if index == 0 and step % args.write_every == args.write_every - 1:
            reporter.write_stats(step)
    with open(os.path.join(args.out, f"child-{index}.json"), "w", encoding="utf-8") as handle:
        json.dump({"add_stat": _histogram(stat_ns), "add_stat_max_us": max(stat_ns) / 1000,
                   "plain": _histogram(plain_ns), "plain_max_us": max(plain_ns) / 1000}, handle)
    sys.exit(0)


def role_fleet(args: argparse.Namespace) -> int:
    from statbus.pipeline.trainer.config import configure
    from statbus.pipeline.trainer.reporter import StatsReporter, flush

    configure(args.run_id, args.results_dir, autostart=False)
    os.makedirs(args.out, exist_ok=True)
    go_read, go_write = os.pipe()
    sys.stdout.flush()
    children = []
    for index in range(args.processes):
        pid = os.fork()
        if pid == 0:
            os.close(go_write)
            try:
                _child(index, args, go_read)  # ends in sys.exit: the exit hook waits for the acks
            except SystemExit:
                raise
            except BaseException:  # noqa: BLE001 — a child must never go on as the fleet
                traceback.print_exc()
                os._exit(1)
        children.append(pid)
    os.close(go_read)
    emit({"ready": True})
    if sys.stdin.readline().strip() != "go":
        os.close(go_write)
        return 3
    started = time.monotonic()
    os.close(go_write)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    exited = time.monotonic()
    StatsReporter(CATEGORY).write_stats(args.steps)  # closes what the children recorded after child 0's last write
    flushed = flush(args.timeout)
    merged: Dict[str, Any] = {"add_stat": {}, "plain": {}, "add_stat_max_us": 0.0, "plain_max_us": 0.0}
    for index in range(args.processes):
        try:
            with open(os.path.join(args.out, f"child-{index}.json"), encoding="utf-8") as handle:
                child = json.load(handle)
        except (OSError, ValueError):
            continue
        for kind in ("add_stat", "plain"):
            _merge(merged[kind], child[kind])
            merged[f"{kind}_max_us"] = max(merged[f"{kind}_max_us"], child[f"{kind}_max_us"])
    emit({"started": started, "exited": exited, "flushed": flushed, "exit_codes_nonzero": sum(1 for c in codes if c),
          "values": args.processes * args.steps * args.keys, **merged})
    return 0


def add_parser(roles: Any) -> None:
    fleet = roles.add_parser("fleet")
    fleet.add_argument("--run-id", required=True)
    fleet.add_argument("--results-dir", required=True)
    fleet.add_argument("--processes", type=int, required=True)
    fleet.add_argument("--steps", type=int, default=2000)
    fleet.add_argument("--keys", type=int, default=10)
    fleet.add_argument("--write-every", type=int, default=100)
    fleet.add_argument("--out", required=True, help="a directory for the children's measurements")
    fleet.add_argument("--timeout", type=float, default=300.0)
    fleet.set_defaults(func=role_fleet)
