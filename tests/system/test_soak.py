"""The soak, short: 16 trainer processes for 70 s while the collector, plugin workers and trainers are SIGKILLed.

The bench figure (``statbus bench --only soak``, 10 minutes) is the same code with a
longer schedule; :mod:`statbus.pipeline.bench.soak.outputs` says exactly what must
land (every summary a trainer saw acknowledged; all of a trainer that finished).
The kills are drawn from a seed, printed with every failure: ``STATBUS_SOAK_SEED=N``
replays the same schedule of kills and victims.
"""

from __future__ import annotations

import os
import random

import psutil
import pytest

from statbus.pipeline.bench.figures import soak
from statbus.plugins.discovery import discover_plugins

SEED = int(os.environ.get("STATBUS_SOAK_SEED") or random.SystemRandom().randrange(1 << 32))

CONFIG = soak.SoakConfig(
    seconds=70.0, trainers=16, per_key=25, step_seconds=1.0,
    collector_every=(10.0, 20.0), worker_every=(8.0, 16.0), trainer_every=20.0,
    settle=20.0, cli_every=20.0, seed=SEED, timeout=90.0,
)

FD_GROWTH = 16
"""Open descriptors a collector or worker may have beyond its first sample (a leak of one per kill or per
trainer would pass this within the run only if it leaked less than one per 5 s)."""
RSS_GROWTH_MB = 150.0
"""RSS a process may reach beyond the median of its samples (the tensorboard worker opens an event file per
category and imports protobuf at its first summary); hundreds of MB would be a leak."""


def _ours(root: str) -> list:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if root in " ".join(proc.info["cmdline"] or []):
                found.append((proc.pid, proc.info["cmdline"]))
        except psutil.Error:
            continue
    return found


@pytest.mark.timeout(300)
def test_soak_of_70_s_with_kills_loses_nothing_and_grows_nothing(tmp_path):
    assert "example" in {p.name for p in discover_plugins()}, "the example plugin (plugins/examples) is installed"
    where = f"seed {SEED} (replay: STATBUS_SOAK_SEED={SEED})"
    result = soak.run(str(tmp_path), CONFIG)
    assert not _ours(str(tmp_path)), (where, "processes left behind", _ours(str(tmp_path)))

    kills = result["kills"]
    # The schedule did what it says: 3-7 collector kills, 4-9 worker kills, 3 trainer kills in 70 s.
    worker_kills = sum(kills["workers"].values())
    assert kills["collector"] >= 3 and kills["trainers"] == 3, (where, kills)
    # A worker being restarted after an earlier kill is not there to kill: counted apart.
    assert worker_kills >= 2 and worker_kills + kills["worker_not_running"] >= 4, (where, kills)
    assert result["trainer_processes"] == 16 + 3

    outputs = result["outputs"]
    for name in ("stats.jsonl", "tensorboard", "example"):
        assert outputs[name]["problems"] == 0, (where, name, outputs[name])
    # ~70 steps a slot at a step a second; asked for far fewer: the test measures no speed.
    assert result["summaries"] >= 16 * 10, (where, result["summaries"])
    assert not result["disagreements"], (where, result["disagreements"])
    assert result["not_flushed"] == 0 and result["values_dropped"] == 0, (where, result)
    assert not result["failed_to_stop"], (where, result["failed_to_stop"])

    status = result["status"]
    assert status["polls"] >= 30 and status["answered"] == status["polls"], (where, status)
    assert status["violations"] == 0, (where, status["first_violations"])
    # `statbus status` run every 20 s (it must answer) and in each pause of a second or more before a
    # restart (it must say that no collector answers).
    assert status["cli_runs"] >= 3 and not status["cli_wrong"], (where, status["cli_wrong"])
    assert not result["status_count_mismatches"], (where, result["status_count_mismatches"])
    assert result["strays_end"] == 0, where

    resources = result["resources"]
    for name, series in resources.items():
        if "fds" in name:
            # The first sample may come before the trainers connected (the collector holds a socket per
            # trainer) and before the first summaries (the tensorboard writer keeps an event file open per category).
            opened = CONFIG.trainers if name == "collector_fds" else result["trainer_processes"]
            assert series["peak"] <= series["start"] + opened + FD_GROWTH, (where, name, series)
        elif "rss" in name:
            # Against the median: a sample taken while a restarted worker imports its plugin is low.
            assert series["peak"] <= series["median"] + RSS_GROWTH_MB, (where, name, series)
    # Retention: once every plugin caught up, the segments they all read are deleted (70 s wrote ~6 of them).
    assert result["journal_mb_caught_up"] <= 2 * CONFIG.segment_mb, (where, result["journal_mb_caught_up"])
