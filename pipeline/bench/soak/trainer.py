"""One trainer of the soak: ``python -m statbus.pipeline.bench.soak.trainer ...``.

Each step it records ``--per-key`` values of each of the twelve PPO keys, spread
over ``--step-seconds`` in ten ticks, then calls ``write_stats(step)``; its
category is its own (one per process), so what each summary must hold is known
from the step alone (:func:`step_values`).  It runs until a ``stop`` line on stdin,
then flushes and shuts down.

Its stdout (a file the soak reads afterwards; lines survive a SIGKILL, being
written before it) holds JSON lines: ``{"ready"}``, ``{"w": step}`` after each
``write_stats``, ``{"acked": step, ...}`` and, at the end, ``{"done": ...}``.
``acked`` is the definition of what a killed trainer must not lose: a second
thread calls ``flush()`` about once a second, and when it returns True every value
recorded before the call — every summary up to the step written before it — is
acknowledged by the collector, i.e. journaled.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from ..procs import PPO_KEYS

TICKS = 10
"""Pieces a step's values are recorded in, spread over the step's time (as an environment's steps would be)."""


def step_values(step: int, key_index: int, per_key: int) -> List[float]:
    """The values of key ``key_index`` at ``step``: exact in float64, and different for every step and key."""
    base = step * 1000.0 + key_index * 40.0
    return [base + j for j in range(per_key)]


class _Out:
    """JSON lines on stdout from two threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def emit(self, obj: Dict[str, Any]) -> None:
        with self._lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()


def _ack_loop(out: _Out, written: List[int], stop: threading.Event, every: float, timeout: float) -> None:
    from statbus.pipeline import client_counters, flush

    last = 0
    while not stop.wait(every):
        step = written[0]
        if flush(timeout) and step > last:
            last = step
            counters = client_counters()
            out.emit({"acked": step, "values_dropped": counters.get("values_dropped", 0),
                      "sender": counters.get("sender")})


def run(args: argparse.Namespace) -> int:
    from statbus.pipeline import StatsReporter, client_counters, configure, flush, shutdown

    configure(args.run_id, args.results_dir, autostart=args.autostart,
              collector_args=tuple(args.collector_arg))
    reporter = StatsReporter(args.category)
    add_stat = reporter.add_stat
    out = _Out()
    stop = threading.Event()
    written = [0]

    def wait_stop() -> None:
        sys.stdin.readline()  # "stop", or EOF: the soak is gone
        stop.set()

    threading.Thread(target=wait_stop, name="soak-stdin", daemon=True).start()
    acks = threading.Thread(target=_ack_loop, name="soak-acks", daemon=True,
                            args=(out, written, stop, args.ack_every, args.ack_timeout))
    acks.start()
    out.emit({"ready": True})
    per_tick = -(-args.per_key // TICKS)
    tick_seconds = args.step_seconds / TICKS
    step = 0
    while not stop.is_set():
        step += 1
        columns = [step_values(step, k, args.per_key) for k in range(len(PPO_KEYS))]
        started = time.monotonic()
        for tick in range(TICKS):
            for k, key in enumerate(PPO_KEYS):
                for value in columns[k][tick * per_tick:(tick + 1) * per_tick]:
                    add_stat(key, value)
            left = started + (tick + 1) * tick_seconds - time.monotonic()
            if left > 0:
                time.sleep(left)
        reporter.write_stats(step)
        written[0] = step
        out.emit({"w": step})
    acks.join(args.ack_timeout + 5.0)
    flushed = flush(args.final_timeout)
    counters = client_counters()
    shutdown()
    out.emit({"done": True, "steps": step, "flushed": flushed, "sender": counters.get("sender"),
              "values_recorded": counters.get("values_recorded", 0),
              "values_dropped": counters.get("values_dropped", 0)})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m statbus.pipeline.bench.soak.trainer")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--results-dir", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--per-key", type=int, default=25, help="values of each of the 12 keys per step")
    parser.add_argument("--step-seconds", type=float, default=1.0)
    parser.add_argument("--ack-every", type=float, default=1.0)
    parser.add_argument("--ack-timeout", type=float, default=30.0)
    parser.add_argument("--final-timeout", type=float, default=120.0)
    parser.add_argument("--autostart", action="store_true", help="start the run's collector when none serves it")
    parser.add_argument("--collector-arg", action="append", default=[],
                        help="an argument for a collector this trainer starts (repeatable)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
