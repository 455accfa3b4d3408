"""A real ML-Agents training through ``statbus learn`` with the wandb and mlflow writers turned on by
STATBUS_WANDB=1 and STATBUS_MLFLOW=1: every summary of stats.jsonl in both trackers."""

from __future__ import annotations

import os

import pytest

from learn_runs import train, write_config
from trackers_helpers import (assert_trackers_equal_jsonl, core_pids, jsonl_expected, kill_pids, mlflow_points, tracker_config,
                              use_tracker_env, wandb_config, wandb_points, wandb_rows)

pytestmark = [
    pytest.mark.timeout(400),
    # mlflow 3.17's sqlite store, read here in the test's process, uses a loader SQLAlchemy 2.1 deprecates.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"),
]


def test_statbus_learn_in_both_trackers(tmp_path, monkeypatch):
    env = use_tracker_env(monkeypatch, str(tmp_path))
    # One line each turns them on; the config file only quiets wandb and places MLflow's artifacts.
    monkeypatch.setenv("STATBUS_WANDB", "1")
    monkeypatch.setenv("STATBUS_MLFLOW", "1")
    config = str(tmp_path / "statbus.toml")
    with open(tracker_config(config, str(tmp_path / "artifacts")), encoding="utf-8") as handle:
        text = handle.read().replace("enabled = true\n", "")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(text)
    monkeypatch.setenv("STATBUS_CONFIG", config)
    directory = str(tmp_path)
    run = train("statbus", directory, "trk", write_config(directory, max_steps=2000))
    kill_pids(core_pids(run.run_dir))
    assert run.code == 0, run.stderr[-3000:]
    expected = jsonl_expected(os.path.join(run.run_dir, "stats.jsonl"))
    assert len({step for _, step in expected}) == 4
    mlflow_run, points = mlflow_points(env["MLFLOW_TRACKING_URI"], "statbus-test")
    assert assert_trackers_equal_jsonl(expected, wandb_points(wandb_rows(env["WANDB_DIR"])), points) > 30
    assert mlflow_run.info.run_name == "trk" and mlflow_run.data.params["Target.trainer_type"] == "ppo"
    assert wandb_config(env["WANDB_DIR"])["Target"]["hyperparameters"]["batch_size"] == 64
