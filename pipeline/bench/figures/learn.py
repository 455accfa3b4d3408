"""Figure ``learn``: real ML-Agents training under ``mlagents-learn`` and under ``statbus learn``.

The same seeded PPO run (:mod:`..learn_env`), the two launchers
alternated, medians of ``repetitions``: training steps per second (steps over
the training loop's wall time), the whole command's wall time, and the CPU
seconds statbus's processes used (the collector and its workers: the
launcher's reaped children beyond the env worker, which both launchers have);
the training loop's thread's CPU and the time it did not run (its wall minus its
CPU), and of that the time it was ready to run but had no core; the speed ratio
within each pair, as a geometric mean with a 95% bootstrap interval, which the
target is judged on, and the pair ratio's two factors: the thread's CPU for the
same work (plain / statbus), and the share of the loop's wall time the thread ran
(statbus / plain).  Three scenarios:

* ``default``: the default writers (under ``statbus learn`` its built-ins; every
  other installed ``mlagents.stats_writer`` plugin is disabled through
  ``STATBUS_CONFIG``, while ``mlagents-learn`` still loads them in process);
* ``slow_plugin``: the same and one plugin that sleeps 50 ms in every
  ``write_stats`` (a summary every 200 steps; a sleep per ``on_add_stat`` too
  would hold ``mlagents-learn`` for minutes: ML-Agents adds a few values per
  step).  It imports nothing of mlagents, so that its worker's start costs what
  any worker's does and the figure shows the sleep alone;
* ``installed``: every installed plugin, as a user who configures nothing gets
  it.  A plugin that imports ``mlagents.trainers.stats`` makes its worker import
  torch (ML-Agents' module does), seconds of CPU at the start that
  ``mlagents-learn`` paid already.

Skipped, with the reason, where mlagents is not importable.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import random
import statistics
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

from ..learn_env import TIME_WRITERS

CONFIG = """\
behaviors:
  Bench:
    trainer_type: ppo
    hyperparameters: {{batch_size: 64, buffer_size: 640, learning_rate: 3.0e-4}}
    network_settings: {{hidden_units: 16, num_layers: 1}}
    max_steps: {max_steps}
    summary_freq: 200
    time_horizon: 10
    checkpoint_interval: 1000000
"""

SLOW_PLUGIN = '''\
import time


class Slow:
    """Duck-typed: ML-Agents calls all three methods, statbus only what a writer has."""

    def on_add_stat(self, category, key, value, aggregation):
        pass

    def add_property(self, category, property_type, value):
        pass

    def write_stats(self, category, values, step):
        time.sleep(0.05)


def register(run_options):
    return [Slow()]
'''


@dataclasses.dataclass(frozen=True)
class LearnConfig:
    max_steps: int = 10_000
    repetitions: int = 3
    slow_plugin: bool = True
    installed: bool = True
    """Also with every installed plugin (when there are any besides the default writers)."""
    enabled: bool = True


def _slow_plugin_dir(root: str) -> str:
    """A distribution on ``PYTHONPATH`` with one ``mlagents.stats_writer`` plugin that sleeps 50 ms."""
    path = os.path.join(root, "slowplugin")
    os.makedirs(os.path.join(path, "statbus_bench_slow-0.1.dist-info"), exist_ok=True)
    with open(os.path.join(path, "statbus_bench_slow.py"), "w", encoding="utf-8") as handle:
        handle.write(SLOW_PLUGIN)
    info = os.path.join(path, "statbus_bench_slow-0.1.dist-info")
    with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as handle:
        handle.write("Metadata-Version: 2.1\nName: statbus_bench_slow\nVersion: 0.1\n")
    with open(os.path.join(info, "entry_points.txt"), "w", encoding="utf-8") as handle:
        handle.write("[mlagents.stats_writer]\nbench_slow = statbus_bench_slow:register\n")
    return path


def _plugin_config(root: str, disabled: List[str]) -> str:
    """A ``STATBUS_CONFIG`` file that disables ``disabled``."""
    path = os.path.join(root, "plugins.toml")
    with open(path, "w", encoding="utf-8") as handle:
        for name in disabled:
            handle.write(f"[plugins.{name}]\nenabled = false\n\n")
    return path


def _third_party_plugins() -> List[str]:
    """Installed ``mlagents.stats_writer`` plugins other than ML-Agents' own ``default``."""
    from ....plugins.discovery import discover_plugins

    return sorted(p.name for p in discover_plugins() if p.group == "mlagents.stats_writer" and p.name != "default")


def _train(root: str, mode: str, index: Any, config: str, pythonpath: str,
           plugin_config: Optional[str], time_writers: bool = False) -> Dict[str, Any]:
    run_id = f"{mode}-{index}"
    report = os.path.join(root, f"{run_id}.json")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=pythonpath)
    env.pop("STATBUS_CONFIG", None)
    env[TIME_WRITERS] = "1" if time_writers else "0"
    if plugin_config is not None:
        env["STATBUS_CONFIG"] = plugin_config
    with open(os.path.join(root, f"{run_id}.log"), "w", encoding="utf-8") as log:
        done = subprocess.run(
            [sys.executable, "-m", "statbus.pipeline.bench.learn_env", mode, report, config,
             f"--run-id={run_id}", "--seed=3", f"--results-dir={os.path.join(root, 'results')}"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=900,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} training exited {done.returncode}; see {log.name}")
    with open(report, encoding="utf-8") as handle:
        return json.load(handle)


def _median(runs: List[Dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def paired_ratio_estimate(ratios: List[float], resamples: int = 2000) -> Tuple[float, Tuple[float, float]]:
    """The geometric mean of the pairs' speed ratios and its 95% bootstrap interval.

    On a shared host one run can be 20% slower than the identical run before it;
    the interval says how far a handful of pairs pins the ratio down.  Seeded, so
    the same pairs always give the same interval.
    """
    logs = [math.log(r) for r in ratios]
    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choices(logs, k=len(logs))) for _ in range(resamples))
    low, high = means[int(0.025 * (resamples - 1))], means[int(0.975 * (resamples - 1))]
    return math.exp(statistics.fmean(logs)), (math.exp(low), math.exp(high))


def pair_statistics(plain: List[Dict[str, Any]], statbus: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The speed ratio within each alternated pair (``plain[i]``, ``statbus[i]``), and its two factors.

    A machine whose speed drifts during the figure (a shared host's steal time) moves
    both runs of a pair alike.  Each pair's ratio is exactly the product of two factors:
    the thread's CPU for the same seeded work, which carries the host's drift (one run's
    7 s is the next one's 11 s), and the share of the loop's wall time the thread ran,
    which moves less with the host and is where whatever competes with the training for a
    core or the GIL shows.  A virtual machine's steal time shows in the first (on the
    2-core dev VM it followed the thread's CPU run by run).
    """
    pairs = [p["train_s"] / s["train_s"] for p, s in zip(plain, statbus)]
    cpu = [p["train_thread_cpu_s"] / s["train_thread_cpu_s"] for p, s in zip(plain, statbus)]
    on_cpu = [(s["train_thread_cpu_s"] / s["train_s"]) / (p["train_thread_cpu_s"] / p["train_s"])
              for p, s in zip(plain, statbus)]
    result: Dict[str, Any] = {"paired_ratio_median": statistics.median(pairs)}
    for key, ratios in (("paired_ratio", pairs), ("paired_thread_cpu", cpu), ("paired_on_cpu", on_cpu)):
        result[f"{key}_geomean"], result[f"{key}_ci95"] = paired_ratio_estimate(ratios)
    return result


def _scenario(root: str, name: str, config: LearnConfig, pythonpath: str,
              disabled: Optional[List[str]]) -> Dict[str, Any]:
    directory = os.path.join(root, name)
    os.makedirs(directory, exist_ok=True)
    plugin_config = None if disabled is None else _plugin_config(directory, disabled)
    path = os.path.join(directory, "config.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(CONFIG.format(max_steps=config.max_steps))
    runs: Dict[str, List[Dict[str, Any]]] = {"plain": [], "statbus": []}
    for index in range(config.repetitions):
        order = ("plain", "statbus") if index % 2 == 0 else ("statbus", "plain")
        for mode in order:
            runs[mode].append(_train(directory, mode, index, path, pythonpath, plugin_config))
    result: Dict[str, Any] = {}
    for mode, done in runs.items():
        result[mode] = {
            "steps_per_s": statistics.median(config.max_steps / r["train_s"] for r in done),
            "wall_s": _median(done, "wall_s"),
            "training_process_cpu_s": _median(done, "self_cpu_s"),
            "training_thread_cpu_s": _median(done, "train_thread_cpu_s"),
            # Waiting for the env worker, the GIL or a core: what other processes and threads
            # cost the training loop, apart from how fast the host runs it.
            "training_thread_waited_s": statistics.median(r["train_s"] - r["train_thread_cpu_s"] for r in done),
            "training_thread_run_delay_s": _median(done, "train_thread_run_delay_s"),
            "children_cpu_s": _median(done, "children_cpu_s"),
            "runs": done,
        }
    result["statbus"]["statbus_processes_cpu_s"] = max(
        0.0, result["statbus"]["children_cpu_s"] - result["plain"]["children_cpu_s"])
    result["speed_ratio"] = result["statbus"]["steps_per_s"] / result["plain"]["steps_per_s"]
    result.update(pair_statistics(runs["plain"], runs["statbus"]))
    # One more pair, with every writer's call on the training thread timed: the one place
    # where the two launchers' training threads do different work.  Apart from the pairs
    # above, since the timing itself costs a little per call.
    result["writers_on_training_thread"] = {
        mode: _train(directory, mode, "timed", path, pythonpath, plugin_config, time_writers=True)["writers"]
        for mode in ("plain", "statbus")
    }
    result["disabled_plugins"] = disabled or []
    return result


def run(root: str, config: LearnConfig) -> Dict[str, Any]:
    if not config.enabled:
        return {"skipped": "not measured in this mode"}
    if importlib.util.find_spec("mlagents") is None:
        return {"skipped": "mlagents is not installed (pip install -e '.[mlagents]' and the mlagents wheels)"}
    base = os.environ.get("PYTHONPATH", "")
    third_party = _third_party_plugins()
    figures = {"default": _scenario(root, "default", config, base, third_party)}
    if config.slow_plugin:
        slow = os.pathsep.join(p for p in (_slow_plugin_dir(root), base) if p)
        figures["slow_plugin"] = _scenario(root, "slow", config, slow, third_party)
    if config.installed and third_party:
        figures["installed"] = _scenario(root, "installed", config, base, None)
    return figures
