"""Test helpers for the tracker writers: offline W&B and local MLflow, read back with their own readers."""

from __future__ import annotations

import glob
import json
import math
import os
import signal
import socket
import subprocess
import sys
from typing import Any, Dict, Iterable, List, Optional, Tuple

import psutil

from waiting import wait_for

WANDB_TEST_SETTINGS = '{ console = "off", x_disable_stats = true, disable_git = true, save_code = false, x_save_requirements = false }'


def tracker_env(folder: str) -> Dict[str, str]:
    """What a collector (and its workers) need for offline W&B and quiet MLflow, confined to ``folder``."""
    tmp = os.path.join(folder, "tmp")
    os.makedirs(tmp, exist_ok=True)
    return {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": os.path.join(folder, "wandb-dir"),
        "WANDB_CACHE_DIR": os.path.join(folder, "wandb-cache"),
        "WANDB_CONFIG_DIR": os.path.join(folder, "wandb-config"),
        "WANDB_DATA_DIR": os.path.join(folder, "wandb-data"),
        "WANDB_PROJECT": "statbus-test",
        "TMPDIR": tmp,  # wandb leaves socket folders there
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{os.path.join(folder, 'mlflow.db')}",
        "MLFLOW_EXPERIMENT_NAME": "statbus-test",
    }


def use_tracker_env(monkeypatch: Any, folder: str) -> Dict[str, str]:
    """:func:`tracker_env` in this process's environment, for the processes the test starts.

    wandb leaves socket folders in TMPDIR: a collector's sockets follow it there, so this
    process must look for them there too (``tempfile`` caches its folder).
    """
    import tempfile

    env = tracker_env(folder)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(tempfile, "tempdir", None)
    return env


def tracker_config(path: str, artifacts: str, extra: str = "") -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(
            "[plugins.wandb]\nenabled = true\n"
            f"options = {{ settings = {WANDB_TEST_SETTINGS} }}\n\n"
            "[plugins.mlflow]\nenabled = true\n"
            f"options = {{ artifact_location = {json.dumps(artifacts)} }}\n\n" + extra
        )
    return path


# --- W&B, read back ---------------------------------------------------------------------------------

def wandb_rows(wandb_dir: str) -> List[Tuple[int, Dict[str, Any]]]:
    """Every history row of every ``.wandb`` file under ``wandb_dir``: (_step, {key: value}), in file order."""
    rows = []
    for record in _records(wandb_dir):
        if record.WhichOneof("record_type") == "history":
            row: Dict[str, Any] = {}
            for item in record.history.item:
                value = json.loads(item.value_json)
                if len(item.nested_key) > 1:  # a media object's fields: nested_key = [key, field]
                    row.setdefault("/".join(item.nested_key[:-1]), {})[item.nested_key[-1]] = value
                else:
                    row[item.key or item.nested_key[0]] = value
            rows.append((record.history.step.num, row))
    return rows


def _records(wandb_dir: str) -> Iterable[Any]:
    """Every record of every offline ``.wandb`` file under ``wandb_dir``, folder by folder (in time order)."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal.datastore import DataStore

    for path in sorted(glob.glob(os.path.join(wandb_dir, "wandb", "offline-run-*", "*.wandb"))):
        store = DataStore()
        store.open_for_scan(path)
        try:
            while (data := store.scan_data()) is not None:
                record = wandb_internal_pb2.Record()
                record.ParseFromString(data)
                yield record
        finally:
            store.close()


def wandb_config(wandb_dir: str) -> Dict[str, Any]:
    config: Dict[str, Any] = {}
    for record in _records(wandb_dir):
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                config["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
    return config


def wandb_points(rows: Iterable[Tuple[int, Dict[str, Any]]]) -> Dict[Tuple[str, int], List[Any]]:
    """(key, category step) → every value logged for it (exactly once: one value each)."""
    points: Dict[Tuple[str, int], List[Any]] = {}
    for _, row in rows:
        for key, value in row.items():
            # W&B's own keys (_step, _runtime...) hold no "/"; a statbus key's category may begin with "_"
            # (a Tune trial's name: "_trainable_5ca55_00000").
            if (key.startswith("_") and "/" not in key) or key.endswith("/step"):
                continue
            category = key.rsplit("/", 1)[0]
            while f"{category}/step" not in row and "/" in category:
                category = category.rsplit("/", 1)[0]
            points.setdefault((key, row[f"{category}/step"]), []).append(value)
    return points


# --- MLflow, read back --------------------------------------------------------------------------------

def mlflow_points(tracking_uri: str, experiment: str) -> Tuple[Any, Dict[Tuple[str, int], List[float]]]:
    """The one run of ``experiment`` and (key, step) → its values, oldest first (the marker metric left out)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    points: Dict[Tuple[str, int], List[float]] = {}
    for key in runs[0].data.metrics:
        if key == "statbus/journal_position":
            continue
        for metric in sorted(client.get_metric_history(runs[0].info.run_id, key), key=lambda m: m.timestamp):
            points.setdefault((key, metric.step), []).append(metric.value)
    return runs[0], points


# --- stats.jsonl, the reference ---------------------------------------------------------------------

def jsonl_expected(path: str) -> Dict[Tuple[str, int], List[Dict[str, Any]]]:
    """(``<category>/<key>``, step) → the jsonl summary entries of that key and step that hold a value, in order.

    A step may have several: a late ``SummaryWriter`` value is a second summary at its step.
    """
    expected: Dict[Tuple[str, int], List[Dict[str, Any]]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            obj = json.loads(line)
            if "step" not in obj:
                continue
            for key, summary in obj["values"].items():
                if summary["num"]:
                    expected.setdefault((f"{obj['category']}/{key}", obj["step"]), []).append(summary)
    return expected


def same(a: Optional[float], b: Optional[float]) -> bool:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def mlflow_name(key: str) -> str:
    """The MLflow metric name of a statbus ``<category>/<key>`` (the characters the tests use)."""
    return key.replace("?", "_").replace("=", "_")


def assert_trackers_equal_jsonl(expected: Dict[Tuple[str, int], List[Dict[str, Any]]],
                                wandb: Dict[Tuple[str, int], List[Any]],
                                mlflow: Dict[Tuple[str, int], List[float]]) -> int:
    """Every point of stats.jsonl in W&B and in MLflow as often as there, equal; nothing else.  Returns their number."""
    histograms = {(key[:-len("_hist")], step): values for (key, step), values in wandb.items() if key.endswith("_hist")}
    wandb = {point: values for point, values in wandb.items() if not point[0].endswith("_hist")}
    assert set(wandb) == set(expected), (set(wandb) ^ set(expected))
    assert set(histograms) == {point for point, summaries in expected.items() if summaries[0]["aggregation"] == "HISTOGRAM"}
    for point, values in wandb.items():
        summaries = expected[point]
        assert len(values) == len(summaries), f"{point} logged {len(values)} times into W&B, {len(summaries)} in stats.jsonl"
        for value, summary in zip(values, summaries):
            assert same(value, summary["aggregated_value"]), (point, value, summary)
    for point, values in histograms.items():  # the values of these tests are finite: every one is counted
        assert [value["_type"] for value in values] == ["histogram"] * len(expected[point])
        assert [sum(value["values"]) for value in values] == [summary["num"] for summary in expected[point]], point
    mlflow_expected = {(mlflow_name(key), step): summaries for (key, step), summaries in expected.items()}
    assert set(mlflow) == set(mlflow_expected), (set(mlflow) ^ set(mlflow_expected))
    for point, values in mlflow.items():
        summaries = mlflow_expected[point]
        assert len(values) == len(summaries), f"{point} logged {len(values)} times into MLflow, {len(summaries)} in stats.jsonl"
        for value, summary in zip(values, summaries):
            assert same(value, summary["aggregated_value"]), (point, values, summary)
    return sum(len(summaries) for summaries in expected.values())


# --- processes ----------------------------------------------------------------------------------------

def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL and reap each of ``pids`` still alive (processes this test started, directly or not)."""
    alive = []
    for pid in set(pids):
        try:
            process = psutil.Process(pid)
            process.send_signal(signal.SIGKILL)
            alive.append(process)
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=10)


def core_pids(results_run_dir: str) -> List[int]:
    """The wandb-core processes the W&B workers of a run noted."""
    pids = []
    for path in glob.glob(os.path.join(results_run_dir, "statbus", "trackers", "wandb", "core.json")):
        try:
            with open(path, encoding="utf-8") as handle:
                pids.append(int(json.load(handle)["pid"]))
        except (OSError, ValueError, KeyError):
            pass
    return pids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 over a sqlite store; killed and reaped by :meth:`close`."""

    def __init__(self, folder: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(folder, "mlflow-server.log"), "wb")
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{os.path.join(folder, 'server.db')}",
             "--artifacts-destination", os.path.join(folder, "server-artifacts")],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        import urllib.request

        def up() -> bool:
            assert self.process.poll() is None, "mlflow server exited"
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    return reply.status == 200
            except OSError:
                return False

        wait_for(up, timeout, what="mlflow server", interval=0.2)

    def get(self, endpoint: str, **params: Any) -> Dict[str, Any]:
        import urllib.parse
        import urllib.request

        with urllib.request.urlopen(f"{self.url}{endpoint}?{urllib.parse.urlencode(params)}", timeout=30) as reply:
            return json.load(reply)

    def post(self, endpoint: str, body: Dict[str, Any]) -> Dict[str, Any]:
        import urllib.request

        request = urllib.request.Request(f"{self.url}{endpoint}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.load(reply)

    def close(self) -> None:
        try:
            group = [self.process.pid] + [c.pid for c in psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.Error:
            group = [self.process.pid]
        kill_pids(group)
        self.process.wait(timeout=30)
        self.log.close()
