"""W&B out of reach: ``statbus learn`` with the wandb writer against ``mlagents-learn`` with a W&B
writer in process (as ML-Agents PR #5741 wrote one), and both trackers' writers on, against the same.

    python scripts/trackers_outage.py OUT_DIR [MAX_STEPS] [outage|trackers|throughput ...]

``outage``: a socket on 127.0.0.1 that accepts and never answers stands in for W&B (online mode,
an API key set).  Runs ``statbus learn`` without W&B, with the wandb writer, and ``mlagents-learn``
with the in-process writer; while statbus learn runs it asks ``statbus status`` for the wandb
worker's state and last error.  ``trackers``: W&B offline and MLflow on sqlite, both writers on,
``statbus learn`` (the built-in writers) against ``mlagents-learn`` (the in-process pair).
``throughput``: points per second each built-in tracker writer logs (offline W&B, sqlite MLflow).  Writes
OUT_DIR/trackers_outage.json.  Real processes, loopback only; everything it starts ends with it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from statbus.pipeline.bench.figures.learn import CONFIG  # the seeded PPO of the learn figure

IN_PROCESS_PLUGIN = '''\
import os
import time


class InProcessWandb:
    """A W&B writer in the training process, as ML-Agents PR #5741 wrote one."""

    def __init__(self, run_options):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(name=run_options.checkpoint_settings.run_id,
                              settings=wandb.Settings(console="off", x_disable_stats=True))

    def on_add_stat(self, category, key, value, aggregation=None):
        pass

    def add_property(self, category, property_type, value):
        pass

    def write_stats(self, category, values, step):
        row = {f"{category}/{key}": summary.aggregated_value for key, summary in values.items()}
        row[f"{category}/step"] = step
        self.run.log(row)


class InProcessMlflow:
    def __init__(self, run_options):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "Default")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=run_options.checkpoint_settings.run_id).info.run_id

    def on_add_stat(self, category, key, value, aggregation=None):
        pass

    def add_property(self, category, property_type, value):
        pass

    def write_stats(self, category, values, step):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{category}/{key}".replace("?", "_").replace("=", "_"), summary.aggregated_value, now, step)
                   for key, summary in values.items() if summary.num]
        self.client.log_batch(self.run_id, metrics=metrics)


def register(run_options):
    writers = []
    if os.environ.get("INPROC_WANDB") == "1":
        writers.append(InProcessWandb(run_options))
    if os.environ.get("INPROC_MLFLOW") == "1":
        writers.append(InProcessMlflow(run_options))
    return writers
'''

HANG_LIMIT = 120.0
"""Seconds a launcher may take to exit once its training ended before it counts as hung and is killed."""



def plugin_dir(root: str) -> str:
    path = os.path.join(root, "inprocess")
    info = os.path.join(path, "statbus_inprocess_trackers-0.1.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(path, "statbus_inprocess_trackers.py"), "w", encoding="utf-8") as handle:
        handle.write(IN_PROCESS_PLUGIN)
    with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as handle:
        handle.write("Metadata-Version: 2.1\nName: statbus_inprocess_trackers\nVersion: 0.1\n")
    with open(os.path.join(info, "entry_points.txt"), "w", encoding="utf-8") as handle:
        handle.write("[mlagents.stats_writer]\ninprocess_trackers = statbus_inprocess_trackers:register\n")
    return path


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers (an unreachable W&B)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.held: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


def status_of(results: str, run_id: str, plugin: str) -> Optional[Dict[str, Any]]:
    from statbus.pipeline.control import control_request
    from statbus.pipeline.layout import RunLayout

    try:
        status = control_request(RunLayout(results, run_id).control_address, {"op": "status"}, timeout=2)
    except Exception:  # noqa: BLE001 — no collector (yet, or any more)
        return None
    return next((p for p in status.get("plugins", []) if p["name"] == plugin), None)


def train(root: str, name: str, mode: str, env: Dict[str, str], max_steps: int, watch: Optional[str] = None) -> Dict[str, Any]:
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    config = os.path.join(folder, "config.yaml")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(CONFIG.format(max_steps=max_steps))
    report = os.path.join(folder, "report.json")
    results = os.path.join(folder, "results")
    started = time.monotonic()
    with open(os.path.join(folder, "log.txt"), "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "statbus.pipeline.bench.learn_env", mode, report, config, "--run-id=run",
             "--seed=3", f"--results-dir={results}"],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    states = []
    trained_at: Optional[float] = None
    hung = False
    try:
        while process.poll() is None and time.monotonic() - started < 900:
            if trained_at is None and os.path.exists(report):
                trained_at = time.monotonic()
            if trained_at is not None and time.monotonic() - trained_at > HANG_LIMIT:
                hung = True  # training is over and the process does not end: it hangs at exit
                break
            if watch is not None:
                plugin = status_of(results, "run", watch)
                if plugin is not None and (not states or states[-1][1:] != (plugin["state"], plugin["last_error"])):
                    states.append((round(time.monotonic() - started, 1), plugin["state"], plugin["last_error"]))
            time.sleep(1.0)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        try:
            os.killpg(process.pid, 9)  # whatever of its session is left (an in-process wandb-core)
        except ProcessLookupError:
            pass
    result: Dict[str, Any] = {"exit_code": process.returncode, "command_s": round(time.monotonic() - started, 1)}
    if hung:
        result["hung_at_exit"] = f"still running {HANG_LIMIT:.0f} s after training ended; killed"
    try:
        with open(report, encoding="utf-8") as handle:
            data = json.load(handle)
        result.update(train_s=round(data["train_s"], 2), steps_per_s=round(max_steps / data["train_s"], 1))
    except (OSError, ValueError, KeyError, ZeroDivisionError):
        result["train_s"] = None
    if watch is not None:
        result["wandb_worker_states"] = states
    return result


def local_env(base: Dict[str, str]) -> Dict[str, str]:
    return dict(base, WANDB_MODE="offline", MLFLOW_EXPERIMENT_NAME="bench",
                MLFLOW_TRACKING_URI=f"sqlite:///{os.path.join(base['WANDB_DIR'], '..', 'mlflow.db')}")


THROUGHPUT = r'''
import json, sys, time
from statbus.plugins.delivery import set_journal_position
from statbus.plugins.settings import RunOptions
from statbus.plugins.stats import StatsAggregationMethod, StatsSummary
from statbus.plugins.writers.mlflow_tracker import get_mlflow_writer
from statbus.plugins.writers.wandb_tracker import get_wandb_writer

name, results, summaries, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
register = {"wandb": get_wandb_writer, "mlflow": get_mlflow_writer}[name]
[writer] = register(RunOptions.create(f"tp-{name}", results))
values = {f"Group/key {k}": StatsSummary([float(k), 2.0], StatsAggregationMethod.AVERAGE) for k in range(keys)}
started = time.perf_counter()
for step in range(summaries):
    set_journal_position(1000 + step)
    writer.write_stats("Bench", values, step)
    if step % 32 == 31 and hasattr(writer, "flush"):
        writer.flush()  # as the worker host does before each cursor commit
if hasattr(writer, "flush"):
    writer.flush()
logged = time.perf_counter() - started
writer.close()
print(json.dumps({"points": summaries * keys, "points_per_s": round(summaries * keys / logged),
                  "points_per_s_with_close": round(summaries * keys / (time.perf_counter() - started))}))
'''


def throughput(root: str, env: Dict[str, str], summaries: int = 2000, keys: int = 20) -> Dict[str, Any]:
    """Points per second one tracker writer logs, with the worker host's flush cadence (in a process of its own)."""
    result = {}
    for name in ("wandb", "mlflow"):
        done = subprocess.run([sys.executable, "-c", THROUGHPUT, name, os.path.join(root, "tp-results"), str(summaries),
                               str(keys)], env=env, capture_output=True, text=True, timeout=900)
        result[name] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else done.stderr[-800:]
    return result


def main(argv: List[str]) -> int:
    root = os.path.abspath(argv[0])
    max_steps = int(argv[1]) if len(argv) > 1 else 3000
    which = argv[2:] or ["outage", "trackers", "throughput"]
    os.makedirs(root, exist_ok=True)
    base = dict(os.environ, OMP_NUM_THREADS="1", WANDB_SILENT="true", MLFLOW_DISABLE_TELEMETRY="true",
                WANDB_DIR=os.path.join(root, "wandb-dir"), WANDB_CACHE_DIR=os.path.join(root, "wandb-cache"),
                WANDB_CONFIG_DIR=os.path.join(root, "wandb-config"), WANDB_PROJECT="statbus-outage")
    base["PYTHONPATH"] = os.pathsep.join(p for p in (plugin_dir(root), base.get("PYTHONPATH", "")) if p)
    # Under statbus learn the in-process pair is a third-party plugin: left out there (statbus's own run).
    off = os.path.join(root, "off.toml")
    with open(off, "w", encoding="utf-8") as handle:
        handle.write("[plugins.inprocess_trackers]\nenabled = false\n[plugins.example]\nenabled = false\n")
    base["STATBUS_CONFIG"] = off
    figures: Dict[str, Any] = {"max_steps": max_steps}
    if "outage" in which:
        server = SilentServer()
        try:
            online = dict(base, WANDB_MODE="online", WANDB_API_KEY="x" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{server.port}")
            figures["outage"] = {
                "statbus_learn_without_wandb": train(root, "o-none", "statbus", online, max_steps),
                "statbus_learn_wandb_writer": train(root, "o-statbus", "statbus", dict(online, STATBUS_WANDB="1"),
                                                    max_steps, watch="wandb"),
                "mlagents_learn_wandb_in_process": train(root, "o-plain", "plain", dict(online, INPROC_WANDB="1"), max_steps),
            }
        finally:
            server.close()
    if "trackers" in which:
        local = local_env(base)
        pairs = []
        for index in range(2):
            pair = {}
            for mode in (("plain", "statbus") if index % 2 == 0 else ("statbus", "plain")):
                env = dict(local, INPROC_WANDB="1", INPROC_MLFLOW="1") if mode == "plain" else \
                    dict(local, STATBUS_WANDB="1", STATBUS_MLFLOW="1")
                pair[mode] = train(root, f"t-{mode}-{index}", mode, env, max_steps)
            pairs.append(pair)
        figures["trackers_on"] = pairs
    if "throughput" in which:
        figures["writer_throughput"] = throughput(root, local_env(base))
    with open(os.path.join(root, "trackers_outage.json"), "w", encoding="utf-8") as handle:
        json.dump(figures, handle, indent=2)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
