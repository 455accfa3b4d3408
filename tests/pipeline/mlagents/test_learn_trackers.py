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
    assert mlflow_run.info.status == "FINISHED"
    assert wandb_config(env["WANDB_DIR"])["Target"]["hyperparameters"]["batch_size"] == 64


def test_statbus_learn_trains_through_a_wandb_that_never_answers(tmp_path, monkeypatch):
    """Online W&B pointed at a socket on 127.0.0.1 that accepts and never answers, an API key set:
    training runs and exits; the wandb plugin is FAILED with wandb's own error (init_timeout 3 s here,
    30 s by default), and its backlog stays in the journal for a ``statbus restart wandb``."""
    import socket

    from learn_runs import collector_log

    use_tracker_env(monkeypatch, str(tmp_path))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        monkeypatch.setenv("WANDB_MODE", "online")
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.setenv("STATBUS_WANDB", "1")
        config = tmp_path / "statbus.toml"
        config.write_text('[plugins.wandb]\noptions = { settings = { init_timeout = 3.0, console = "off", '
                          'x_disable_stats = true, disable_git = true, x_save_requirements = false } }\n')
        monkeypatch.setenv("STATBUS_CONFIG", str(config))
        directory = str(tmp_path)
        run = train("statbus", directory, "outage", write_config(directory, max_steps=2000))
        kill_pids(core_pids(run.run_dir))
    finally:
        listener.close()
    assert run.code == 0, run.stderr[-3000:]
    assert len({step for _, step in jsonl_expected(os.path.join(run.run_dir, "stats.jsonl"))}) == 4
    log = collector_log(run.run_dir, tail=20000)
    assert "plugin wandb FAILED: REGISTRATION_FAILURE" in log and "CommError('Run initialization has timed out" in log, log
