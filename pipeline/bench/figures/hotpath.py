"""Figure 1 — the trainer's hot path: statbus's ``StatsReporter`` against the in-process baseline.

Measured in this process (the benchmark is the trainer).  Per scenario and
repetition, A (baseline) then B (statbus):

* ``add_stat``: a timed loop over the 12 PPO keys → ns per call;
* ``write_stats``: periods of 12 keys × 10 values, each ``write_stats`` timed
  alone → µs per call (p50/p99/max over every period of every repetition);
* meanwhile a second thread records a value every ~0.5 ms and times each
  ``add_stat``: its worst latency shows who else a slow writer stalls.
* the CPU figure: process CPU time (every thread, zmq's too) over the timed
  loop and until statbus's sender has taken the values, per value — less the
  probing thread's own CPU, which is the benchmark's instrument, not either
  system (it runs longer on statbus's side, while the sender settles).

Scenarios: the four built-in writers (``normal``); plus a writer sleeping 50 ms
per ``write_stats`` (``sleepy``); plus one raising from it (``raising``); and
statbus with no collector at all (``down``).  statbus's extra writers run as
plugins of its collector, enabled for their scenario only.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..baseline import InProcessReporter, builtin_writers, close_writers
from ..collector import BenchCollector, wait_for
from ..procs import PPO_KEYS
from ..stats import median, spread
from ..writers import RaisingWriter, SleepyWriter

PLUGINS = ("console", "tensorboard", "gauges", "jsonl", "sleepy", "raiser")
EXTRA = {"sleepy": "sleepy", "raising": "raiser"}
CONFIG = """
[plugins.sleepy]
enabled = false
options = { write_sleep = 0.05 }
[plugins.raiser]
enabled = false
"""


@dataclasses.dataclass(frozen=True)
class HotPathConfig:
    add_calls: int = 120_000
    """add_stat calls per timed loop (per repetition)."""
    periods: int = 40
    """write_stats periods per repetition."""
    slow_periods: int = 6
    """Periods per repetition of the baseline with the 50 ms writer (each costs ≥ 50 ms)."""
    repetitions: int = 5


class _Prober(threading.Thread):
    """Another training thread: one timed add_stat every ~0.5 ms until stopped."""

    def __init__(self, reporter: Any) -> None:
        super().__init__(name="bench-prober", daemon=True)
        self.reporter = reporter
        self.samples: List[float] = []
        self.stop_event = threading.Event()
        self._started = threading.Event()
        self._cpu_clock = 0

    def start(self) -> None:
        super().start()
        self._started.wait()

    def cpu_ns(self) -> int:
        """CPU time this thread has used so far (Linux per-thread clock)."""
        return time.clock_gettime_ns(self._cpu_clock)

    def run(self) -> None:
        self._cpu_clock = time.pthread_getcpuclockid(threading.get_ident())
        self._started.set()
        add_stat = self.reporter.add_stat
        clock = time.perf_counter_ns
        while not self.stop_event.wait(0.0005):
            t0 = clock()
            add_stat("Env/Probe", 1.0)
            self.samples.append((clock() - t0) / 1000.0)


def _drained() -> None:
    """Wait until statbus's sender has taken every queued value (then one batch interval for the encode)."""
    from ...trainer.reporter import client_counters

    deadline = time.monotonic() + 10.0
    while client_counters().get("values_queued", 0) and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(0.06)


def _time_add(reporter: Any, calls: int, settle: Optional[Callable[[], None]],
              instrument_cpu_ns: Callable[[], int]) -> Tuple[float, float]:
    """(wall ns per call in the training thread, CPU ns per value of the whole process).

    The CPU figure runs until ``settle`` says the background work the calls caused
    is done, so statbus's sender thread (drain, encode, send: it shares the GIL with
    training) is charged to the values, not hidden behind them.
    """
    add_stat = reporter.add_stat
    keys = PPO_KEYS
    rounds = max(1, calls // len(keys))
    clock = time.perf_counter_ns
    cpu0 = time.process_time_ns() - instrument_cpu_ns()
    t0 = clock()
    for i in range(rounds):
        value = float(i)
        for key in keys:
            add_stat(key, value)
    wall = clock() - t0
    if settle is not None:
        settle()
    cpu = time.process_time_ns() - instrument_cpu_ns() - cpu0
    n = rounds * len(keys)
    return wall / n, cpu / n


def _time_writes(reporter: Any, periods: int, step0: int) -> Dict[str, Any]:
    clock = time.perf_counter_ns
    samples: List[float] = []
    raised = 0
    for period in range(periods):
        for value in range(10):
            for key in PPO_KEYS:
                reporter.add_stat(key, float(value))
        t0 = clock()
        try:
            reporter.write_stats(step0 + period)
        except Exception:  # noqa: BLE001 — counted: in a real trainer this ends training
            raised += 1
        samples.append((clock() - t0) / 1000.0)
    return {"samples": samples, "raised": raised}


def _measure(make: Callable[[str], Any], add_calls: int, periods: int, step0: int) -> Dict[str, Any]:
    reporter = make("Bench")
    statbus = make is _statbus_make
    if statbus:
        _drained()  # start from an idle sender
    prober = _Prober(make("Env"))
    prober.start()
    try:
        ns_add, cpu_add = _time_add(reporter, add_calls, _drained if statbus else None, prober.cpu_ns)
        writes = _time_writes(reporter, periods, step0)
    finally:
        prober.stop_event.set()
        prober.join()
    return {"add_ns": ns_add, "add_cpu_ns": cpu_add, "write_us": writes["samples"], "raised": writes["raised"],
            "probe_us": prober.samples}


def _summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    writes = [s for r in runs for s in r["write_us"]]
    probes = [s for r in runs for s in r["probe_us"]]
    return {
        "add_stat_ns": median([r["add_ns"] for r in runs]),
        "add_stat_cpu_ns": median([r["add_cpu_ns"] for r in runs]),
        "write_stats_us": spread(writes),
        "write_stats_us_median_of_reps": median([median(r["write_us"]) for r in runs]),
        "other_thread_add_stat_us": spread(probes),
        "raised_into_training": sum(r["raised"] for r in runs),
        "write_stats_calls": len(writes),
        "repetitions": len(runs),
    }


def _statbus_make(category: str) -> Any:
    from ...trainer.reporter import StatsReporter

    return StatsReporter(category)


def run(root: str, config: HotPathConfig) -> Dict[str, Any]:
    from ...trainer.config import configure
    from ...trainer.reporter import shutdown

    results: Dict[str, Dict[str, Any]] = {}
    base_dir = os.path.join(root, "baseline")
    collector = BenchCollector(root, "hot", PLUGINS, CONFIG)
    writers: List[Any] = []
    try:
        collector.start()
        collector.wait_ready()
        wait_for(collector.workers_ready, 60.0, "the hot-path workers")
        configure(collector.layout.run_id, collector.layout.results_dir, autostart=False, linger=1.0)
        writers = builtin_writers(base_dir, "hot")
        extras = {"normal": None, "sleepy": SleepyWriter(0.05), "raising": RaisingWriter()}
        step = 0
        for scenario, extra in extras.items():
            plugin = EXTRA.get(scenario)
            if plugin is not None:
                collector.control({"op": "enable", "plugin": plugin})
                # The raising plugin may never stay READY: waiting for its first spawn is enough.
                wait_for(lambda: collector.plugin(collector.status(), plugin).get("state") not in
                         ("DISABLED", "STOPPED", "STOPPING"), 60.0, f"plugin {plugin}")
            InProcessReporter.reset(writers + ([extra] if extra is not None else []))
            a_runs: List[Dict[str, Any]] = []
            b_runs: List[Dict[str, Any]] = []
            periods_a = config.slow_periods if scenario == "sleepy" else config.periods
            for _ in range(config.repetitions):
                a_runs.append(_measure(InProcessReporter, config.add_calls, periods_a, step))
                step += periods_a
                b_runs.append(_measure(_statbus_make, config.add_calls, config.periods, step))
                step += config.periods
            if plugin is not None:
                collector.control({"op": "disable", "plugin": plugin})
            results[scenario] = {"baseline": _summarize(a_runs), "statbus": _summarize(b_runs)}
        # The collector down: statbus alone, against a socket nobody listens on.
        configure(collector.layout.run_id, collector.layout.results_dir,
                  address=f"ipc://{root}/nobody.sock", autostart=False, linger=0.0)
        down_runs = [_measure(_statbus_make, config.add_calls, config.periods, step + i * config.periods)
                     for i in range(config.repetitions)]
        results["down"] = {"statbus": _summarize(down_runs)}
    finally:
        shutdown(0.0)
        close_writers(writers)
        InProcessReporter.reset([])
        collector.close()
    return results
