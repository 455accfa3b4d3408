"""The benchmark's training: ML-Agents PPO on a small Python environment, no Unity.

    python -m statbus.pipeline.bench.learn_env plain|statbus REPORT.json MLAGENTS-LEARN-ARGS...

Replaces ML-Agents' environment factory with :class:`BenchEnv` (four agents,
one float observation, one continuous action, ten-step episodes, seeded),
trains through ``mlagents-learn``'s own path or ``statbus learn``, and writes
the training loop's wall time and the process's CPU (its own, and its reaped
children's: the env worker, and under ``statbus learn`` the collector with its
workers) to REPORT.json.  mlagents is imported only when this runs.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any, Dict, List

AGENTS = 4
EPISODE_STEPS = 10


def make_env(seed: int) -> Any:
    import numpy as np

    from mlagents_envs.base_env import (
        ActionSpec, BaseEnv, BehaviorSpec, DecisionSteps, DimensionProperty, ObservationSpec, ObservationType,
        TerminalSteps,
    )

    class BenchEnv(BaseEnv):
        academy_capabilities = None

        def __init__(self) -> None:
            self._rng = np.random.default_rng(seed)
            obs = ObservationSpec((1,), (DimensionProperty.NONE,), ObservationType.DEFAULT, "target")
            self._spec = BehaviorSpec([obs], ActionSpec.create_continuous(1))
            self._ids = np.arange(AGENTS, dtype=np.int32)
            self._next = AGENTS
            self._age = np.zeros(AGENTS, dtype=np.int32)
            self._targets = np.zeros(AGENTS, dtype=np.float32)
            self._actions = np.zeros(AGENTS, dtype=np.float32)
            self._steps: Any = None

        @property
        def behavior_specs(self) -> Dict[str, Any]:
            return {"Bench": self._spec}

        def _decisions(self, rewards: np.ndarray) -> Any:
            zeros = np.zeros(AGENTS, dtype=np.int32)
            return DecisionSteps([self._targets.reshape(-1, 1).copy()], rewards, self._ids.copy(), None, zeros,
                                 np.zeros(AGENTS, dtype=np.float32))

        def reset(self) -> None:
            self._targets = self._rng.uniform(-1, 1, AGENTS).astype(np.float32)
            self._steps = (self._decisions(np.zeros(AGENTS, dtype=np.float32)), TerminalSteps.empty(self._spec))

        def step(self) -> None:
            rewards = -np.abs(np.clip(self._actions, -1, 1) - self._targets).astype(np.float32)
            self._age += 1
            done = self._age >= EPISODE_STEPS
            n = int(done.sum())
            terminal = TerminalSteps([self._targets[done].reshape(-1, 1).copy()], rewards[done],
                                     np.ones(n, dtype=bool), self._ids[done].copy(), np.zeros(n, dtype=np.int32),
                                     np.zeros(n, dtype=np.float32))
            for index in np.nonzero(done)[0]:
                self._ids[index], self._next, self._age[index] = self._next, self._next + 1, 0
            self._targets = self._rng.uniform(-1, 1, AGENTS).astype(np.float32)
            rewards[done] = 0.0
            self._steps = (self._decisions(rewards), terminal)

        def set_actions(self, behavior_name: str, action: Any) -> None:
            self._actions = np.asarray(action.continuous, dtype=np.float32)[:, 0]

        def set_action_for_agent(self, behavior_name: str, agent_id: int, action: Any) -> None:
            self._actions[int(np.nonzero(self._ids == agent_id)[0][0])] = action.continuous[0][0]

        def get_steps(self, behavior_name: str) -> Any:
            return self._steps

        def close(self) -> None:
            pass

    return BenchEnv()


def factory(env_path: Any, no_graphics: Any, no_graphics_monitor: Any, seed: int, *_: Any) -> Any:
    """Stands in for ``mlagents.trainers.learn.create_environment_factory``."""

    def create(worker_id: int, side_channels: List[Any]) -> Any:
        return make_env(seed + worker_id)

    return create


TIME_WRITERS = "STATBUS_BENCH_TIME_WRITERS"
"""Set to 1: time every call of every stats writer in the training process (costs a little per call)."""


def timed_call(method: Any, spent: Dict[str, float]) -> Any:
    clock = time.thread_time

    def call(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return method(*args, **kwargs)
        finally:
            spent["cpu_s"] += clock() - started
            spent["calls"] += 1

    return call


def wrapper_cpu_per_call() -> float:
    """The timing wrapper's own CPU seconds per call, taken off what the writers are charged.

    CPU only: the wall time of calls of a few µs is mostly the clocks' own."""
    spent = {"cpu_s": 0.0, "calls": 0}
    noop = timed_call(lambda *_: None, spent)
    calls = 20_000
    started = time.thread_time()
    for _ in range(calls):
        noop("category", "key", 1.0, None)
    return (time.thread_time() - started) / calls


def _time_writers() -> Dict[str, Dict[str, float]]:
    """Wrap each writer ML-Agents registered; ML-Agents calls them on the thread that adds the stat."""
    from mlagents.trainers.stats import StatsReporter

    writers: Dict[str, Dict[str, float]] = {}
    for writer in StatsReporter.writers:
        spent = writers.setdefault(type(writer).__name__, {"cpu_s": 0.0, "calls": 0})
        for name in ("on_add_stat", "write_stats", "add_property"):
            method = getattr(writer, name, None)
            if method is not None:
                setattr(writer, name, timed_call(method, spent))
    return writers


def _run_delay() -> float:
    """Seconds this thread has been runnable but waiting for a core (Linux's schedstat; 0 elsewhere)."""
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as handle:
            return int(handle.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main(argv: List[str]) -> int:
    mode, report_path, args = argv[0], argv[1], argv[2:]
    import torch.onnx
    from mlagents.trainers import learn as ml_learn
    from mlagents.trainers.trainer_controller import TrainerController

    export = torch.onnx.export

    def legacy_export(*a: Any, **k: Any) -> Any:  # torch 2.13 defaults to dynamo=True; ML-Agents 1.1.0 predates it
        k.setdefault("dynamo", False)
        return export(*a, **k)

    torch.onnx.export = legacy_export
    ml_learn.create_environment_factory = factory
    timing: Dict[str, float] = {}
    start_learning = TrainerController.start_learning

    writers: Dict[str, Dict[str, float]] = {}

    def timed(self: Any, env_manager: Any) -> Any:
        if os.environ.get(TIME_WRITERS) == "1":
            writers.update(_time_writers())
        timing["train_start"], timing["thread_cpu_start"] = time.monotonic(), time.thread_time()
        timing["run_delay_start"] = _run_delay()
        try:
            return start_learning(self, env_manager)
        finally:
            timing["train_end"], timing["thread_cpu_end"] = time.monotonic(), time.thread_time()
            timing["run_delay_end"] = _run_delay()

    TrainerController.start_learning = timed
    started = time.monotonic()
    if mode == "statbus":
        from ..mlagents.launcher import learn

        code = learn(args)
    else:
        ml_learn.run_cli(ml_learn.parse_command_line(args))
        code = 0
    report = {
        "code": code,
        "wall_s": time.monotonic() - started,
        "train_s": timing.get("train_end", 0.0) - timing.get("train_start", 0.0),
        # The training loop's own thread: what training cost, apart from waiting for a core.
        "train_thread_cpu_s": timing.get("thread_cpu_end", 0.0) - timing.get("thread_cpu_start", 0.0),
        # Of the time it did not run, how long it was ready to and another thread or process had the core.
        "train_thread_run_delay_s": timing.get("run_delay_end", 0.0) - timing.get("run_delay_start", 0.0),
        "self_cpu_s": _cpu(resource.RUSAGE_SELF),
        "children_cpu_s": _cpu(resource.RUSAGE_CHILDREN),
    }
    if writers:
        overhead = wrapper_cpu_per_call()
        for spent in writers.values():
            spent["cpu_s"] = max(0.0, spent["cpu_s"] - spent["calls"] * overhead)
        report["writers"] = writers
    with open(report_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
