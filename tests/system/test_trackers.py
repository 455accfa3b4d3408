"""The wandb and mlflow writers through the whole system: StatsReporter → collector → their workers.

Real libraries, offline: W&B in offline mode read back from its ``.wandb`` files with wandb's own
reader; MLflow through a real ``mlflow server`` on 127.0.0.1 (sqlite behind it) read back over
its REST API (the sqlite store without a server: tests/plugins/writers/test_writer_mlflow.py).  Every (key, step) of ``stats.jsonl`` must be in each tracker exactly once,
with its value, after SIGKILLs of each tracker's worker and of the collector.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Set, Tuple

import pytest

from collector_helpers import REPO, CollectorProcess
from statbus.pipeline.control import control_request
from trackers_helpers import (MlflowServer, assert_trackers_equal_jsonl, core_pids, jsonl_expected, kill_pids,
                              tracker_config, tracker_env, wandb_config, wandb_points, wandb_rows)
from waiting import wait_for

pytestmark = pytest.mark.timeout(400)

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
    """Every point of stats.jsonl in W&B and in MLflow as often as there, equal; nothing else."""
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
    count = assert_trackers_equal_jsonl(expected, wandb, mlflow)
    config = wandb_config(run.env["WANDB_DIR"])
    assert config["3DBall?team=0"]["hyperparameters"]["batch_size"] == 64
    return count


def rest_points(server: MlflowServer, experiment_name: str) -> Tuple[Dict[str, Any], Dict[Any, List[float]]]:
    """The one run of the experiment, and its points, through MLflow's REST API."""
    experiment = server.get("/api/2.0/mlflow/experiments/get-by-name", experiment_name=experiment_name)["experiment"]
    found = server.post("/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    assert len(found) == 1
    points: Dict[Any, List[float]] = {}
    for key in [m["key"] for m in found[0]["data"]["metrics"] if m["key"] != "statbus/journal_position"]:
        history = server.get("/api/2.0/mlflow/metrics/get-history", run_id=found[0]["info"]["run_id"], metric_key=key,
                             max_results=25000)["metrics"]
        for metric in sorted(history, key=lambda m: int(m["timestamp"])):
            points.setdefault((key, int(metric["step"])), []).append(float(metric["value"]))
    return found[0], points


def test_every_point_once_in_wandb_and_mlflow_through_kills_of_workers_and_collector(tmp_path, monkeypatch):
    """W&B offline and a real ``mlflow server``, read back with wandb's reader and over REST."""
    server = MlflowServer(str(tmp_path))
    run = Run(tmp_path, monkeypatch, tracking_uri=server.url)
    try:
        server.wait_ready()
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
        mlflow_run, points = rest_points(server, "statbus-test")
        assert check_trackers(run, points) > 1000
        assert mlflow_run["info"]["run_name"] == "ppo"
        params = {p["key"]: p["value"] for p in mlflow_run["data"]["params"]}
        assert params["3DBall_team_0.hyperparameters.batch_size"] == "64"
        artifacts = server.get("/api/2.0/mlflow/artifacts/list", run_id=mlflow_run["info"]["run_id"],
                               path="text/3DBall_team_0/note")
        assert len(artifacts["files"]) == 300 // 25
    finally:
        run.close()
        server.close()
