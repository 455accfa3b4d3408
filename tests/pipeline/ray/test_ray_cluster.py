"""statbus on a real three-node Ray cluster on this machine, every node on 127.0.0.1.

One cluster for the module (a head "A" and nodes "B" and "C", each marked by a custom
resource), shut down through its handle at the end — never ``ray stop``, which ends
Ray processes by name, including ones no test started.  Four trainer actors (two on
B, two on C) and a learner on A serve every test; each test has a run of its own.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, Iterator, List

import pytest

RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # every Ray port stays on 127.0.0.1 (read when ray is imported)
    "RAY_USAGE_STATS_ENABLED": "0",            # no usage report to the network
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # Tune's own CSV/JSON/TensorBoard loggers: not under test
}
os.environ.update(RAY_ENV)  # before Ray is imported; only Ray and Tune read these

import ray  # noqa: E402  statbus[ray]: the README's test command installs it, so CI fails rather than skips without it
from ray.cluster_utils import Cluster  # noqa: E402

import statbus.pipeline as sp  # noqa: E402
from statbus.pipeline.collector.lifecycle.daemon import StartFailed  # noqa: E402
from statbus.pipeline.layout import RunLayout  # noqa: E402
from statbus.pipeline.ray import collector_status, start_collector, stop_collector  # noqa: E402
from statbus.pipeline.ray.control import collector_info, find_collector  # noqa: E402
from statbus.pipeline.ray.names import RayFiles  # noqa: E402
from statbus.pipeline.trainer import config as trainer_config  # noqa: E402
from collector_helpers import remove_socket_dir_if_dead  # noqa: E402
from trackers_helpers import (WANDB_TEST_SETTINGS, assert_trackers_equal_jsonl, core_pids, jsonl_expected,  # noqa: E402
                              kill_pids, mlflow_points, wandb_config, wandb_points, wandb_rows)
from waiting import wait_for  # noqa: E402

pytestmark = pytest.mark.timeout(300)

PLUGINS = ["--plugins", "jsonl,tensorboard"]
CALL = 60.0  # seconds any one actor call may take here: a hang guard, not a measurement
STEPS = 4


@ray.remote(num_cpus=0)
class Trainer:
    """A trainer (or the learner) process of the tests: statbus found through Ray."""

    def configure(self, run_id: str) -> str:
        sp.configure(run_id=run_id, ray=True)
        return ray.get_runtime_context().get_node_id()

    def add(self, category: str, key: str, values: List[float]) -> int:
        reporter = sp.StatsReporter(category)
        for value in values:
            reporter.add_stat(key, value)
        return len(values)

    def write(self, category: str, step: int) -> None:
        sp.StatsReporter(category).write_stats(step)

    def flush(self, timeout: float = 30.0) -> bool:
        return sp.flush(timeout)

    def counters(self) -> Dict[str, Any]:
        return sp.client_counters()

    def send_with_unknown_key(self, tcp_address: str, server_key: str, wait: float) -> Dict[str, Any]:
        """A raw CURVE DEALER with a key pair nobody authorized, sending a real frame."""
        import threading

        import zmq
        from zmq.utils.monitor import recv_monitor_message

        from statbus.pipeline.wire import encode_frame, hello_record, stat_record, write_record
        from statbus.plugins.records import pack_values

        public, secret = zmq.curve_keypair()
        context = zmq.Context()
        seen: List[int] = []
        acked = False
        try:
            with context.socket(zmq.DEALER) as sock:
                sock.linger = 0
                sock.curve_serverkey = server_key.encode()
                sock.curve_publickey, sock.curve_secretkey = public, secret
                monitor = sock.get_monitor_socket()
                sock.connect(tcp_address)
                frame = encode_frame("intruder:1", 1, 1, 0, [
                    hello_record({"pid": os.getpid(), "host": "intruder", "sender": "intruder:1"}),
                    stat_record("Intruder", "x", 0, 0, pack_values([1.0])),
                    write_record("Intruder", 1),
                ])
                sock.send(frame, zmq.NOBLOCK)  # queued until the handshake, which fails
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline:
                    if monitor.poll(50):
                        seen.append(recv_monitor_message(monitor)["event"])
                    if sock.poll(0, zmq.POLLIN):
                        sock.recv()
                        acked = True
                    if zmq.EVENT_HANDSHAKE_FAILED_AUTH in seen:
                        break
                sock.disable_monitor()
                monitor.close(linger=0)
        finally:
            # The actor's own context (the test's fixture is in another process), ended the way the fixture
            # ends its: a socket left open keeps term() waiting, which fails the call instead of hanging it.
            terminator = threading.Thread(target=context.term, daemon=True)
            terminator.start()
            terminator.join(10)
            assert not terminator.is_alive(), "a socket of the actor's zmq context was left open"
        return {"auth_failed": zmq.EVENT_HANDSHAKE_FAILED_AUTH in seen,
                "succeeded": zmq.EVENT_HANDSHAKE_SUCCEEDED in seen, "acked": acked}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Dict[str, str]]:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    handle = None
    try:
        handle = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 2, "node_ip_address": "127.0.0.1", "include_dashboard": False, "resources": {"node_a": 100},
        })
        b = handle.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={"node_b": 100})
        c = handle.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={"node_c": 100})
        ray.init(address=handle.address, log_to_driver=False)
        yield {"address": handle.address, "a": handle.head_node.node_id, "b": b.node_id, "c": c.node_id}
    finally:
        sp.shutdown(0.5)
        trainer_config.forget_configuration()
        ray.shutdown()
        if handle is not None:
            handle.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def fleet(cluster) -> Dict[str, Any]:
    """Four trainers, two on B and two on C, and a learner on A (the collector's node)."""
    trainers = [Trainer.options(resources={node: 1}).remote() for node in ("node_b", "node_b", "node_c", "node_c")]
    learner = Trainer.options(resources={"node_a": 1}).remote()
    return {"trainers": trainers, "learner": learner}


def _get(refs: Any) -> Any:
    return ray.get(refs, timeout=CALL)


def _configure(fleet: Dict[str, Any], run_id: str) -> List[str]:
    return _get([actor.configure.remote(run_id) for actor in [*fleet["trainers"], fleet["learner"]]])


def _values(index: int, step: int) -> List[float]:
    return [index * 1000.0 + step * 10.0 + j / 4 for j in range(3)]


def _step(fleet: Dict[str, Any], step: int, flush: bool = True) -> None:
    _get([t.add.remote("Fleet", "Loss", _values(i, step)) for i, t in enumerate(fleet["trainers"])])
    if flush:
        _finish_step(fleet, step)


def _finish_step(fleet: Dict[str, Any], step: int) -> None:
    # The trainers' values must be in before the learner closes the period: flush, then write.
    assert all(_get([t.flush.remote() for t in fleet["trainers"]]))
    _get(fleet["learner"].write.remote("Fleet", step * 100))
    assert _get(fleet["learner"].flush.remote())


def _expected(steps: range) -> Dict[int, List[float]]:
    return {step * 100: sorted(v for i in range(4) for v in _values(i, step)) for step in steps}


def _jsonl(results: str, run_id: str) -> List[Dict[str, Any]]:
    path = os.path.join(results, run_id, "stats.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _summaries(results: str, run_id: str, category: str) -> List[Dict[str, Any]]:
    return [line for line in _jsonl(results, run_id) if line.get("category") == category and "step" in line]


def _scalars(results: str, run_id: str, category: str, tag: str) -> List[tuple]:
    from tensorboard.backend.event_processing import event_accumulator as ea

    accumulator = ea.EventAccumulator(os.path.join(results, run_id, category), size_guidance={ea.SCALARS: 0})
    accumulator.Reload()
    if tag not in accumulator.Tags().get("scalars", []):
        return []
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def _check_fleet_summaries(results: str, run_id: str, steps: range) -> None:
    expected = _expected(steps)
    wait_for(lambda: len(_summaries(results, run_id, "Fleet")) >= len(expected), what="every summary in stats.jsonl")
    lines = _summaries(results, run_id, "Fleet")
    assert [line["step"] for line in lines] == sorted(expected)  # each step once, in order
    for line in lines:
        loss = line["values"]["Loss"]
        values = expected[line["step"]]
        assert loss["num"] == len(values) == 12
        assert loss["sum"] == pytest.approx(sum(values))
        assert (loss["min"], loss["max"]) == (values[0], values[-1])
    means = {step: sum(values) / len(values) for step, values in expected.items()}
    wait_for(lambda: len(_scalars(results, run_id, "Fleet", "Loss")) >= len(means), what="TensorBoard scalars")
    scalars = _scalars(results, run_id, "Fleet", "Loss")
    assert [step for step, _ in scalars] == sorted(means)
    assert [value for _, value in scalars] == pytest.approx([means[step] for step, _ in scalars], rel=1e-6)


def _statbus(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "statbus"), *args], capture_output=True, text=True, timeout=120,
    )


def test_trainers_on_two_nodes_reach_a_collector_started_by_the_cli_on_a_third(cluster, fleet, tmp_path):
    results, run_id = str(tmp_path), "spread"
    started = _statbus("collector", "start", "--ray", "--ray-address", cluster["address"], "--run-id", run_id,
                       "--results-dir", results, "--node-id", cluster["a"], *PLUGINS)
    assert started.returncode == 0, started.stderr
    assert f"on node {cluster['a']}" in started.stdout and "tcp://127.0.0.1:" in started.stdout
    try:
        nodes = _configure(fleet, run_id)
        assert nodes == [cluster["b"], cluster["b"], cluster["c"], cluster["c"], cluster["a"]]
        for step in range(1, STEPS + 1):
            _step(fleet, step)
        _check_fleet_summaries(results, run_id, range(1, STEPS + 1))
        # The four trainers off the collector's node went through CURVE with keys the actor
        # authorized; the learner on its node took the ipc socket and asked for no key.
        allowed = os.listdir(RayFiles(RunLayout(results, run_id)).allow_dir)
        assert len([name for name in allowed if name.endswith(".key")]) == 4
        status = _statbus("status", "--ray", "--ray-address", cluster["address"], "--run-id", run_id, "--json")
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert len(shown["trainers"]) == 5 and shown["ray"]["node_id"] == cluster["a"]
        assert shown["also_address"].startswith("tcp://127.0.0.1:")
    finally:
        stopped = _statbus("collector", "stop", "--ray", "--ray-address", cluster["address"], "--run-id", run_id)
        _forget(results, run_id)
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: collector_info(run_id) is None, what="the actor's name to be free")


def test_sigkill_of_the_collector_actor_loses_and_doubles_nothing(cluster, fleet, tmp_path):
    results, run_id = str(tmp_path), "killed"
    # --force starts the run over once: the restart below must continue it, not clear it again.
    info = start_collector(run_id, results, collector_args=PLUGINS, force=True)
    assert info.node_id == cluster["a"] and info.starts == 1  # the driver's node by default
    try:
        _configure(fleet, run_id)
        for step in (1, 2):
            _step(fleet, step)
        os.kill(info.actor_pid, signal.SIGKILL)
        wait_for(lambda: not _alive(info.collector_pid), what="the collector to die with its actor")
        # Training goes on while Ray restarts the actor: step 3 goes into the trainers'
        # buffers whether or not the new collector is up yet. Which comes first is Ray's
        # timing (a restart has beaten these calls in CI); that the calls never wait for
        # a collector is shown without a race by the successor test below.
        _step(fleet, 3, flush=False)
        _finish_step(fleet, 3)
        for step in range(4, STEPS + 3):
            _step(fleet, step)
        after = collector_info(run_id)
        assert after.starts == 2 and after.node_id == info.node_id
        assert after.actor_pid != info.actor_pid and after.collector_pid != info.collector_pid
        assert (after.tcp_address, after.server_key) == (info.tcp_address, info.server_key)
        _check_fleet_summaries(results, run_id, range(1, STEPS + 3))
        assert collector_status(run_id)["intake"]["gaps"] == 0
    finally:
        stop_collector(run_id)
        _forget(results, run_id)


def test_when_the_collector_is_gone_for_good_trainers_follow_its_successor(cluster, fleet, tmp_path):
    # As when the collector's node dies with its disk: the actor is gone and cannot come
    # back; a new collector of the run starts on another node, with other keys, elsewhere.
    first, second, run_id = str(tmp_path / "lost"), str(tmp_path / "new"), "moved"
    info = start_collector(run_id, first, collector_args=PLUGINS)
    try:
        _configure(fleet, run_id)
        _step(fleet, 1)
        wait_for(lambda: _summaries(first, run_id, "Fleet"), what="step 1 written by the first collector")
    finally:
        ray.kill(find_collector(run_id), no_restart=True)
        wait_for(lambda: find_collector(run_id) is None and not _alive(info.collector_pid), what="the collector gone")
        _forget(first, run_id)
    _step(fleet, 2, flush=False)  # into the trainers' buffers
    moved = start_collector(run_id, second, node_id=cluster["b"], collector_args=PLUGINS)
    try:
        assert moved.server_key != info.server_key and moved.node_id == cluster["b"]
        _finish_step(fleet, 2)  # the flushes return once the trainers found the new collector
        _step(fleet, 3)
        _check_fleet_summaries(second, run_id, range(2, 4))
        assert [line["step"] for line in _summaries(first, run_id, "Fleet")] == [100]
    finally:
        stop_collector(run_id)
        _forget(second, run_id)


def _forget(results: str, run_id: str) -> None:
    """A collector the test killed (or that died with its actor) cannot remove its socket directory."""
    remove_socket_dir_if_dead(RunLayout(results, run_id))


def _end_wandb_cores(run_dir: str) -> None:
    """Kill a wandb-core a failed stop left, and remove the empty socket folders wandb leaves in the temp
    folder even after a clean stop (``wandb-<worker pid>-<core pid>-*``; the collector's temp folder is this
    process's: the cluster's nodes were started from it)."""
    import glob
    import tempfile

    cores = core_pids(run_dir)
    kill_pids(cores)
    for pid in cores:
        for folder in glob.glob(os.path.join(tempfile.gettempdir(), f"wandb-*-{pid}-*")):
            try:
                os.rmdir(folder)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_trainer_whose_key_was_not_authorized_cannot_send(cluster, fleet, tmp_path):
    results, run_id = str(tmp_path), "guarded"
    info = start_collector(run_id, results, collector_args=PLUGINS)
    try:
        outcome = _get(fleet["trainers"][0].send_with_unknown_key.remote(info.tcp_address, info.server_key, 10.0))
        assert outcome == {"auth_failed": True, "succeeded": False, "acked": False}
        status = collector_status(run_id)
        assert status["trainers"] == [] and status["intake"]["frames"] == 0
    finally:
        stop_collector(run_id)
        _forget(results, run_id)
    assert _jsonl(results, run_id) == []


def test_a_collector_that_cannot_start_says_why_and_leaves_no_actor(cluster, tmp_path):
    try:
        with pytest.raises(StartFailed, match=r"unknown plugins \['nope'\]"):
            start_collector("broken", str(tmp_path), collector_args=["--plugins", "nope"])
        wait_for(lambda: find_collector("broken") is None, what="the failed actor to be gone")
    finally:
        _forget(str(tmp_path), "broken")


def _trainable(config: Dict[str, Any]) -> None:
    from ray import tune

    for i in range(1, 21):
        tune.report({"loss": config["slope"] * i, "nested": {"half": config["slope"] * i / 2}})


def _tracker_args(folder: str) -> List[str]:
    """W&B (offline) and MLflow (sqlite) on, set by ``--set``: the actor starts the collector in its Ray
    worker's environment (its node's, from when the cluster started), not in this test's."""
    wandb = {"mode": "offline", "project": "statbus-test", "dir": os.path.join(folder, "wandb-dir"),
             "settings": WANDB_TEST_SETTINGS}
    mlflow = {"tracking_uri": f"sqlite:///{os.path.join(folder, 'mlflow.db')}", "experiment_name": "statbus-test",
              "artifact_location": os.path.join(folder, "artifacts")}
    sets = [f"{name}.options.{key}={value}" for name, options in (("wandb", wandb), ("mlflow", mlflow))
            for key, value in options.items()]
    return [arg for item in sets for arg in ("--set", item)]


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning")  # mlflow's reader
def test_a_tune_sweep_reaches_the_plugins_trial_by_trial(cluster, tmp_path):
    from ray import tune

    from statbus.pipeline.ray import StatbusCallback

    results, run_id, trackers = str(tmp_path / "results"), "sweep", str(tmp_path / "trackers")
    # The trackers too ("they work for every door"): this run is the Ray door's test of them.
    start_collector(run_id, results, collector_args=["--plugins", "jsonl,tensorboard,wandb,mlflow",
                                                     *_tracker_args(trackers)])
    stopped = None
    try:
        tuner = tune.Tuner(
            tune.with_resources(_trainable, {"cpu": 0.5}),
            param_space={"slope": tune.grid_search([1.0, 2.0, 3.0])},
            run_config=tune.RunConfig(
                name="sweep", storage_path=str(tmp_path / "tune"), verbose=0,
                callbacks=[StatbusCallback(run_id)],
            ),
        )
        grid = tuner.fit()
        assert not grid.errors
        # The callback's flush at the experiment's end: everything is journaled; the writers follow.
        wait_for(lambda: len([line for line in _jsonl(results, run_id) if "step" in line]) >= 60, what="60 summaries")
        lines = _jsonl(results, run_id)
        by_trial = collections.defaultdict(list)
        for line in lines:
            if "step" in line:
                by_trial[line["category"]].append(line)
        assert len(by_trial) == 3 and sum(map(len, by_trial.values())) == 60
        assert all(category.startswith("_trainable_") for category in by_trial)  # the trials' names
        slopes = {}
        for category, summaries in by_trial.items():
            assert [s["step"] for s in summaries] == list(range(1, 21))
            slope = summaries[0]["values"]["loss"]["mean"]
            slopes[category] = slope
            assert [s["values"]["loss"]["mean"] for s in summaries] == [slope * i for i in range(1, 21)]
            assert [s["values"]["nested/half"]["mean"] for s in summaries] == [slope * i / 2 for i in range(1, 21)]
            assert set(summaries[0]["values"]) == {"loss", "nested/half"}  # none of Tune's own keys
            wait_for(lambda: len(_scalars(results, run_id, category, "loss")) == 20, what=f"{category} in TensorBoard")
            assert _scalars(results, run_id, category, "loss") == [(i, pytest.approx(slope * i)) for i in range(1, 21)]
        assert sorted(slopes.values()) == [1.0, 2.0, 3.0]
        hyper = [line for line in lines if line.get("property") == "hyperparameters"]
        assert sorted(line["value"]["slope"] for line in hyper) == [1.0, 2.0, 3.0]
    finally:
        sp.shutdown(1.0)
        trainer_config.forget_configuration()
        try:
            stopped = stop_collector(run_id, timeout=90)  # graceful: every writer catches up first
        finally:
            _forget(results, run_id)
            _end_wandb_cores(os.path.join(results, run_id))
    assert stopped is not None and stopped["stopped"] and stopped["exit_code"] == 0, stopped
    # Every summary of stats.jsonl in W&B and in MLflow, once each and equal, and nothing else.
    expected = jsonl_expected(os.path.join(results, run_id, "stats.jsonl"))
    wandb_dir = os.path.join(trackers, "wandb-dir")
    run, mlflow = mlflow_points(f"sqlite:///{os.path.join(trackers, 'mlflow.db')}", "statbus-test")
    assert assert_trackers_equal_jsonl(expected, wandb_points(wandb_rows(wandb_dir)), mlflow) == 120  # 60 × 2 keys
    assert run.info.status == "FINISHED" and run.info.run_name == run_id
    config = wandb_config(wandb_dir)
    assert sorted(config[category]["slope"] for category in by_trial) == [1.0, 2.0, 3.0]
    assert sorted(float(run.data.params[f"{category}.slope"]) for category in by_trial) == [1.0, 2.0, 3.0]


def _trainable_media(config: Dict[str, Any]) -> None:
    import numpy as np
    from ray import tune

    rng = np.random.default_rng(int(config["slope"]))
    for i in range(1, 4):
        tune.report({"score": config["slope"] * i,
                     "media": {"frame": rng.integers(0, 256, (3, 8, 10), dtype=np.uint8),  # an image (CHW)
                               "batch": rng.random((5, 1, 6, 6), dtype=np.float32),      # images (NCHW)
                               "clip": rng.integers(0, 256, (1, 4, 3, 8, 8), dtype=np.uint8)}})  # a video


def _tune_media(directory: str, prefix: str = "") -> Dict[str, Any]:
    """A trial directory's images and GIFs (tags without ``prefix``): tag → [(step, frames as RGB)],
    and its hparams plugin's summaries, parsed."""
    import io

    import numpy as np
    from PIL import Image, ImageSequence
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.hparams import plugin_data_pb2

    def frames(encoded: bytes) -> list:
        with Image.open(io.BytesIO(encoded)) as image:
            return [np.asarray(frame.convert("RGB")).tolist() for frame in ImageSequence.Iterator(image)]

    acc = ea.EventAccumulator(directory, size_guidance={ea.IMAGES: 0})
    acc.Reload()
    images = {tag[len(prefix):]: [(e.step, frames(e.encoded_image_string)) for e in acc.Images(tag)]
              for tag in acc.Tags()["images"]}
    hparams = {tag: plugin_data_pb2.HParamsPluginData.FromString(content)
               for tag, content in acc.PluginTagToContent("hparams").items()}
    return {"images": images, "hparams": hparams}


def test_tune_media_and_hparams_land_as_tbx_logger_callback_writes_them(cluster, tmp_path):
    """Images, image batches, videos and each trial's HParams at its end: the same as Ray's own
    TBXLoggerCallback writes beside statbus's callback in the same sweep."""
    from ray import tune
    from ray.tune.logger import TBXLoggerCallback

    from statbus.pipeline.ray import StatbusCallback

    results, run_id = str(tmp_path / "results"), "media"
    start_collector(run_id, results, collector_args=PLUGINS)
    stopped = None
    try:
        tuner = tune.Tuner(
            tune.with_resources(_trainable_media, {"cpu": 0.5}),
            param_space={"slope": tune.grid_search([1.0, 2.0]), "nesterov": tune.choice([True, False]),
                         "optimizer": tune.choice(["adam", "sgd"])},
            run_config=tune.RunConfig(name="media", storage_path=str(tmp_path / "tune"), verbose=0,
                                      callbacks=[StatbusCallback(run_id), TBXLoggerCallback()]),
        )
        assert not tuner.fit().errors
    finally:
        sp.shutdown(1.0)
        trainer_config.forget_configuration()
        try:
            stopped = stop_collector(run_id, timeout=90)  # graceful: every writer catches up first
        finally:
            _forget(results, run_id)
    assert stopped is not None and stopped["stopped"] and stopped["exit_code"] == 0, stopped
    trials = sorted(name for name in os.listdir(os.path.join(results, run_id)) if name.startswith("_trainable_media_"))
    tbx_dirs = sorted(os.path.join(tmp_path / "tune" / "media", name) for name in os.listdir(tmp_path / "tune" / "media")
                      if name.startswith("_trainable_media_"))
    assert len(trials) == len(tbx_dirs) == 2
    for trial in trials:
        (tbx_dir,) = [d for d in tbx_dirs if os.path.basename(d).startswith(trial + "_")]
        got, want = _tune_media(os.path.join(results, run_id, trial)), _tune_media(tbx_dir, "ray/tune/")
        assert sorted(got["images"]) == sorted(want["images"]) == ["media/batch", "media/clip", "media/frame"]
        for tag in want["images"]:
            assert [step for step, _ in got["images"][tag]] == [1, 2, 3], tag
            assert got["images"][tag] == want["images"][tag], tag
        assert sorted(got["hparams"]) == sorted(want["hparams"]) == [
            "_hparams_/experiment", "_hparams_/session_end_info", "_hparams_/session_start_info"]
        for tag in ("_hparams_/session_start_info", "_hparams_/session_end_info"):
            assert got["hparams"][tag] == want["hparams"][tag], tag
        start = got["hparams"]["_hparams_/session_start_info"].session_start_info
        assert set(start.hparams) == {"slope", "nesterov", "optimizer"}
        assert start.hparams["nesterov"].WhichOneof("kind") == "bool_value"
        experiment = got["hparams"]["_hparams_/experiment"].experiment
        assert list(experiment.hparam_infos) == list(want["hparams"]["_hparams_/experiment"].experiment.hparam_infos)
        assert [m.name.tag for m in experiment.metric_infos] == ["score"]  # the scalars statbus logs
