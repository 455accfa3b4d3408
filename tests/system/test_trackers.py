"""The wandb and mlflow writers through the whole system: StatsReporter → collector → their workers.

Real libraries, offline: W&B in offline mode read back from its ``.wandb`` files with wandb's own
reader; MLflow on a sqlite store, and through a real ``mlflow server`` on 127.0.0.1 read back
over its REST API.  Every (key, step) of ``stats.jsonl`` must be in each tracker exactly once,
with its value, after SIGKILLs of each tracker's worker and of the collector.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Set

import pytest

from collector_helpers import REPO, CollectorProcess
from statbus.pipeline.control import control_request
from trackers_helpers import (MlflowServer, core_pids, jsonl_expected, kill_pids, mlflow_points, same, tracker_config,
                              tracker_env, wandb_config, wandb_points, wandb_rows)
from waiting import wait_for

pytestmark = [
    pytest.mark.timeout(400),
    # mlflow 3.17's sqlite store, read here in the test's process, uses a loader SQLAlchemy 2.1 deprecates.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"),
]

DRIVER = r"""
import sys, time
from statbus.pipeline import StatsAggregationMethod, StatsPropertyType, StatsReporter, configure, flush, shutdown

results_dir, run_id = sys.argv[1], sys.argv[2]
configure(run_id=run_id, results_dir=results_dir, autostart=False)
env, policy = StatsReporter("3DBall?team=0"), StatsReporter("Policy")
env.add_property(StatsPropertyType.HYPERPARAMETERS, {"trainer_type": "ppo", "hyperparameters": {"batch_size": 64, "lr": 3e-4}})
step = 0
for line in sys.stdin:
    if line.strip() == "quit":
        break
    for _ in range(int(line)):
        step += 1
        for i in range(3):
            env.add_stat("Environment/Cumulative Reward", step + i / 10)
        env.add_stat("Environment/Episodes", 1.0, StatsAggregationMethod.SUM)
        env.add_stat("Policy/Entropy", step / 3, StatsAggregationMethod.HISTOGRAM)
        env.add_stat("Policy/Entropy", step / 5, StatsAggregationMethod.HISTOGRAM)
        env.write_stats(step * 100)
        if step % 2 == 0:  # another category, stepping differently
            policy.set_stat("Losses/Value Loss", 1.0 / step)
            policy.write_stats(step * 7)
        if step % 25 == 0:
            env.add_property(StatsPropertyType.TEXT, {"tag": "note", "text": f"<step {step}>", "step": step * 100})
        time.sleep(0.002)
    print("ok" if flush(60.0) else "timeout", step, flush=True)
shutdown()
print("bye", flush=True)
"""


class Run:
    """A collector with the tracker writers on and one trainer process driven step by step."""

    def __init__(self, tmp_path: Any, monkeypatch: Any, tracking_uri: str = "") -> None:
        folder = str(tmp_path)
        self.results = os.path.join(folder, "results")
        self.env = {**os.environ, **tracker_env(folder), "STATBUS_AUTOSTART": "0",
                    "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        # wandb leaves socket folders in TMPDIR: the collector's sockets follow it there, so
        # this process must look for them there too.
        monkeypatch.setenv("TMPDIR", self.env["TMPDIR"])
        monkeypatch.setattr(tempfile, "tempdir", None)
        if tracking_uri:
            self.env["MLFLOW_TRACKING_URI"] = tracking_uri
        config = tracker_config(os.path.join(folder, "statbus.toml"), os.path.join(folder, "artifacts"))
        self.collector = CollectorProcess(self.results, run_id="ppo", env=self.env,
                                          extra=["--config", config, "--plugins", "jsonl,wandb,mlflow", "--stop-timeout", "60"])
        self.trainer: subprocess.Popen | None = None
        self.pids: Set[int] = set()

    def start(self) -> None:
        self.collector.start()
        self.trainer = subprocess.Popen([sys.executable, "-c", DRIVER, self.results, "ppo"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=self.env)

    def steps(self, count: int) -> None:
        assert self.trainer is not None and self.trainer.stdin is not None and self.trainer.stdout is not None
        self.trainer.stdin.write(f"{count}\n")
        self.trainer.stdin.flush()
        assert self.trainer.stdout.readline().startswith("ok")

    def status(self) -> Dict[str, Any]:
        return control_request(self.collector.layout.control_address, {"op": "status"}, timeout=10)

    def plugin(self, name: str) -> Dict[str, Any]:
        plugin = next(p for p in self.status()["plugins"] if p["name"] == name)
        if plugin["pid"]:
            self.pids.add(plugin["pid"])
        return plugin

    def kill_worker(self, name: str, after: int) -> int:
        """SIGKILL the plugin's worker once it is ready and committed past ``after``; its new cursor."""
        plugin = wait_for(lambda: (lambda p: p if p["state"] == "READY" and p["pid"] and p["committed"] > after else None)(
            self.plugin(name)), 120, what=f"{name} delivering")
        os.kill(plugin["pid"], signal.SIGKILL)
        return plugin["committed"]

    def all_caught_up(self) -> bool:
        status = self.status()
        head = status["journal"]["head"]
        for plugin in status["plugins"]:
            if plugin["pid"]:
                self.pids.add(plugin["pid"])
        return all(p["committed"] >= head and p["state"] == "READY" for p in status["plugins"])

    def finish(self) -> None:
        assert self.trainer is not None and self.trainer.stdin is not None
        self.trainer.stdin.write("quit\n")
        self.trainer.stdin.close()
        assert self.trainer.wait(60) == 0
        wait_for(self.all_caught_up, 120, what="every plugin caught up")
        assert self.collector.terminate(timeout=120) == 0

    def close(self) -> None:
        if self.trainer is not None:
            self.trainer.kill()
            self.trainer.wait(30)
            for stream in (self.trainer.stdin, self.trainer.stdout):
                if stream is not None and not stream.closed:
                    stream.close()
        self.collector.close()
        kill_pids(self.pids | set(core_pids(os.path.join(self.results, "ppo"))))


def check_trackers(run: Run, mlflow: Dict[Any, List[float]]) -> int:
    """Every point of stats.jsonl exactly once in W&B and in MLflow, equal; nothing else."""
    expected = jsonl_expected(os.path.join(run.results, "ppo", "stats.jsonl"))
    rows = wandb_rows(run.env["WANDB_DIR"])
    steps = [step for step, _ in rows]
    assert steps == sorted(set(steps)), "W&B _step must rise over the offline runs, as wandb sync needs"
    wandb = wandb_points(rows)
    texts = {point: values for point, values in wandb.items() if point[0].endswith("/note")}
    last = max(step for key, step in expected if key.startswith("3DBall")) // 100
    assert sorted(step for _, step in texts) == [s * 100 for s in range(25, last + 1, 25)]
    assert all(len(values) == 1 and values[0]["_type"] == "html-file" for values in texts.values())
    wandb = {point: values for point, values in wandb.items() if point not in texts}
    assert set(wandb) == set(expected), (set(wandb) ^ set(expected))
    for point, values in wandb.items():
        assert len(values) == 1, f"{point} logged {len(values)} times into W&B"
        summary = expected[point]
        if summary["aggregation"] == "HISTOGRAM":
            assert values[0]["_type"] == "histogram" and sum(values[0]["values"]) == summary["num"], (point, values)
        else:
            assert same(values[0], summary["aggregated_value"]), (point, values, summary)
    mlflow_expected = {(key.replace("?", "_").replace("=", "_"), step): summary for (key, step), summary in expected.items()}
    assert set(mlflow) == set(mlflow_expected), (set(mlflow) ^ set(mlflow_expected))
    for point, values in mlflow.items():
        assert len(values) == 1, f"{point} logged {len(values)} times into MLflow"
        summary = mlflow_expected[point]
        assert same(values[0], summary["aggregated_value"]), (point, values, summary)
    config = wandb_config(run.env["WANDB_DIR"])
    assert config["3DBall?team=0"]["hyperparameters"]["batch_size"] == 64
    return len(expected)


def test_every_point_once_in_wandb_and_mlflow_through_kills_of_workers_and_collector(tmp_path, monkeypatch):
    run = Run(tmp_path, monkeypatch)
    try:
        run.start()
        cursors = {"wandb": 0, "mlflow": 0}
        # Both trackers' workers are killed in the same rounds: their restarts overlap.
        for target in ["workers", "workers", "collector", "workers"]:
            run.steps(60)
            if target == "collector":
                run.all_caught_up()  # notes the workers' pids, for cleanup
                run.collector.kill()
                run.collector.start()
            else:
                for name in cursors:
                    cursors[name] = run.kill_worker(name, cursors[name])
        run.steps(60)
        run.finish()
        assert run.collector.starts == 2

        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=run.env["MLFLOW_TRACKING_URI"])
        points = check_trackers(run, mlflow_points(client, "statbus-test"))
        assert points > 600
        mlflow_run = client.search_runs([client.get_experiment_by_name("statbus-test").experiment_id])[0]
        assert mlflow_run.info.run_name == "ppo" and mlflow_run.info.status == "FINISHED"
        assert mlflow_run.data.params["3DBall_team_0.hyperparameters.batch_size"] == "64"
        artifacts = [a.path for a in client.list_artifacts(mlflow_run.info.run_id, "text/3DBall_team_0/note")]
        assert len(artifacts) == 300 // 25
    finally:
        run.close()


def test_mlflow_server_read_back_over_rest(tmp_path, monkeypatch):
    server = MlflowServer(str(tmp_path))
    run = Run(tmp_path, monkeypatch, tracking_uri=server.url)
    try:
        server.wait_ready()
        run.start()
        run.steps(30)
        run.kill_worker("mlflow", 0)
        run.steps(30)
        run.finish()
        experiment = server.get("/api/2.0/mlflow/experiments/get-by-name", experiment_name="statbus-test")["experiment"]
        found = server.post("/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        assert len(found) == 1
        run_id = found[0]["info"]["run_id"]
        keys = [m["key"] for m in found[0]["data"]["metrics"]]
        points: Dict[Any, List[float]] = {}
        for key in keys:
            history = server.get("/api/2.0/mlflow/metrics/get-history", run_id=run_id, metric_key=key, max_results=25000)
            for metric in history["metrics"]:
                points.setdefault((key, int(metric["step"])), []).append(float(metric["value"]))
        assert check_trackers(run, points) > 200
    finally:
        run.close()
        server.close()
