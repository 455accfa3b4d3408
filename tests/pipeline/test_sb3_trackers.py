"""A Stable-Baselines3 PPO run with the wandb and mlflow writers on: every summary of stats.jsonl in both
trackers (W&B offline, read back with wandb's reader; MLflow on sqlite)."""

from __future__ import annotations

import os

import pytest

from collector_helpers import CollectorProcess
from statbus.pipeline.summary_writer import TORCH_LAYOUT_ARGS
from summary_writer_helpers import read_jsonl, run_child
from trackers_helpers import (assert_trackers_equal_jsonl, core_pids, jsonl_expected, kill_pids, mlflow_points, tracker_config,
                              use_tracker_env, wandb_points, wandb_rows)

pytestmark = [
    pytest.mark.timeout(400),
    # mlflow 3.17's sqlite store, read here in the test's process, uses a loader SQLAlchemy 2.1 deprecates.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"),
]


def test_sb3_ppo_in_both_trackers(tmp_path, monkeypatch):
    env = use_tracker_env(monkeypatch, str(tmp_path))
    config = tracker_config(str(tmp_path / "statbus.toml"), str(tmp_path / "artifacts"))
    folder, dumps_path = tmp_path / "logs" / "PPO_1", tmp_path / "dumps.jsonl"
    collector = CollectorProcess(str(tmp_path), "logs", env=dict(os.environ),
                                 extra=["--plugins", "jsonl,wandb,mlflow", "--config", config, *TORCH_LAYOUT_ARGS,
                                        "--stop-timeout", "60"])
    try:
        collector.start()
        run_child("ppo", str(folder), str(dumps_path), "2048", timeout=300)
        assert collector.terminate(timeout=120) == 0, collector.log()
    finally:
        collector.close()
        kill_pids(core_pids(str(tmp_path / "logs")))
    dumps = read_jsonl(str(dumps_path))
    assert len(dumps) == 8
    expected = jsonl_expected(str(tmp_path / "logs" / "stats.jsonl"))
    assert {key for key, _ in expected} == {f"PPO_1/{key}" for d in dumps for key in d["values"]}
    _, points = mlflow_points(env["MLFLOW_TRACKING_URI"], "statbus-test")
    assert assert_trackers_equal_jsonl(expected, wandb_points(wandb_rows(env["WANDB_DIR"])), points) > 80
