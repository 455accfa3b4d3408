"""A realistic simulated ML-Agents training run that records stats through statbus.

Several env-worker processes step simulated environments and record what
ML-Agents records per step and per episode; a learner (this process) records
per-update losses and writes a summary every ``--summary-freq`` steps, with the
hyperparameters announced once as a property.  Nothing here trains anything:
the numbers are shaped like a run that learns.

At the end it prints one JSON line, ``{"expected": ...}``, with exactly what was
recorded (per key: number of values and their sum; number of summaries), so that
a caller (``statbus demo``) can check that the written data is complete.

    python scripts/demo_training.py --run-id demo --results-dir results --duration 20

(``statbus demo`` runs it too; it lives in the package so that it works from
any install, and ``scripts/demo_training.py`` is its launcher.)
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import time
from collections import defaultdict
from typing import Dict, List

BEHAVIOR = "3DBall"
HYPERPARAMETERS = {
    "trainer_type": "ppo",
    "hyperparameters": {
        "batch_size": 64,
        "buffer_size": 12000,
        "learning_rate": 0.0003,
        "beta": 0.001,
        "epsilon": 0.2,
        "lambd": 0.99,
        "num_epoch": 3,
        "learning_rate_schedule": "linear",
    },
    "network_settings": {"normalize": True, "hidden_units": 128, "num_layers": 2},
    "max_steps": 500000,
    "summary_freq": 2000,
}


class Tally:
    """What one process recorded: count and sum per key, to check completeness."""

    def __init__(self) -> None:
        self.count: Dict[str, int] = defaultdict(int)
        self.total: Dict[str, float] = defaultdict(float)

    def add(self, key: str, value: float) -> None:
        self.count[key] += 1
        self.total[key] += value

    def as_dict(self) -> dict:
        return {"count": dict(self.count), "sum": dict(self.total)}


def env_worker(index: int, stop_at: float, steps_per_second: float, step_counter, results) -> None:
    from ..plugins.stats import StatsAggregationMethod
    from .trainer.reporter import StatsReporter, flush, shutdown

    reporter = StatsReporter(BEHAVIOR)
    tally = Tally()
    rng = random.Random(index)
    episode_length, episode_reward, steps = 0, 0.0, 0
    skill = 0.0
    interval = 1.0 / steps_per_second
    next_step = time.monotonic()
    while time.monotonic() < stop_at:
        entropy = 1.4 * math.exp(-steps / 40000.0) + rng.gauss(0, 0.01)
        reporter.add_stat("Policy/Entropy", entropy)
        tally.add("Policy/Entropy", entropy)
        episode_length += 1
        episode_reward += 0.1 + rng.gauss(skill, 0.05)
        steps += 1
        with step_counter.get_lock():
            step_counter.value += 1
        if rng.random() < 1.0 / 120 or episode_length >= 1000:
            reporter.add_stat("Environment/Cumulative Reward", episode_reward, StatsAggregationMethod.HISTOGRAM)
            tally.add("Environment/Cumulative Reward", episode_reward)
            reporter.add_stat("Environment/Episode Length", float(episode_length))
            tally.add("Environment/Episode Length", float(episode_length))
            skill = min(1.0, skill + 0.002)
            episode_length, episode_reward = 0, 0.0
        next_step += interval
        delay = next_step - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    # Everything this worker recorded must reach the collector before the
    # learner's final summary, or it would fall into a period never written.
    flush(timeout=30)
    shutdown()
    results.put(tally.as_dict())


class Learner:
    """Records per-update stats and writes a summary every ``summary_freq`` steps."""

    def __init__(self, summary_freq: int) -> None:
        from ..plugins.stats import StatsPropertyType
        from .trainer.reporter import StatsReporter

        self.reporter = StatsReporter(BEHAVIOR)
        self.tally = Tally()
        self.rng = random.Random(1234)
        self.summary_freq = summary_freq
        self.next_summary = summary_freq
        self.summaries = 0
        self.reporter.add_property(StatsPropertyType.HYPERPARAMETERS, HYPERPARAMETERS)

    def summarize(self, step: int) -> None:
        updates = self.summaries + 1
        for key, value in (
            ("Losses/Policy Loss", 0.05 * math.exp(-updates / 50.0) + abs(self.rng.gauss(0, 0.005))),
            ("Losses/Value Loss", 2.0 * math.exp(-updates / 30.0) + abs(self.rng.gauss(0, 0.05))),
            ("Policy/Learning Rate", 0.0003 * max(0.0, 1.0 - step / 500000.0)),
            ("Is Training", 1.0),
        ):
            self.reporter.add_stat(key, value)
            self.tally.add(key, value)
        self.reporter.set_stat("Step", float(step))
        self.reporter.write_stats(step)
        self.summaries += 1
        self.next_summary = (step // self.summary_freq + 1) * self.summary_freq
        print(f"progress {step} {self.summaries}", flush=True)

    def run_until(self, step_counter, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            step = step_counter.value
            if step >= self.next_summary:
                self.summarize(step)
            time.sleep(0.02)

    def result(self) -> dict:
        result = self.tally.as_dict()
        # "Step" is set, not added: each summary holds exactly its last value.
        result["count"]["Step"] = self.summaries
        result["count"]["__summaries__"] = self.summaries
        return result


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-id", default="demo")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--env-workers", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of simulated training")
    parser.add_argument("--steps-per-second", type=float, default=400.0, help="per env worker")
    parser.add_argument("--summary-freq", type=int, default=2000, help="steps between summaries")
    args = parser.parse_args(argv)

    from .trainer.config import configure
    from .trainer.reporter import flush, shutdown

    configure(run_id=args.run_id, results_dir=args.results_dir)
    # Spawned, not forked: each env worker is a fresh interpreter, as with
    # ML-Agents' subprocess environments; configuration reaches it through the
    # environment variables configure() honours.
    os.environ["STATBUS_RUN_ID"] = args.run_id
    os.environ["STATBUS_RESULTS_DIR"] = args.results_dir
    context = multiprocessing.get_context("spawn")
    step_counter = context.Value("l", 0)
    results = context.Queue()
    stop_at = time.monotonic() + args.duration
    workers = [
        context.Process(target=env_worker, args=(i, stop_at, args.steps_per_second, step_counter, results))
        for i in range(args.env_workers)
    ]
    for worker in workers:
        worker.start()
    learner = Learner(args.summary_freq)
    try:
        learner.run_until(step_counter, stop_at)
        parts = [results.get(timeout=60) for _ in workers]
        # The env workers have flushed: the last summary holds all they recorded.
        learner.summarize(step_counter.value)
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
                worker.join()
    delivered = flush(timeout=30)
    shutdown()
    expected = {"count": defaultdict(int), "sum": defaultdict(float)}
    for part in parts + [learner.result()]:
        for key, count in part["count"].items():
            expected["count"][key] += count
        for key, total in part["sum"].items():
            expected["sum"][key] += total
    print(json.dumps({"expected": expected, "steps": step_counter.value, "acknowledged": delivered}), flush=True)
    return 0 if delivered else 1
