"""Media at users' scale and under kills: every value once, nothing lost, the journal bounded (issue 23).

32 trainer processes, started together, log media through ``statbus.pipeline.SummaryWriter`` on
one log_dir at every step; nobody starts the collector: the trainers start it on demand.  What
the TensorBoard writer wrote is read back with TensorBoard's EventAccumulator (orphan purging off,
so a value written twice shows twice), what a statbus-aware plugin got from the zoo's
``media_recorder`` (one line per ``add_media``, with the SHA-256 of its bytes).

The collector is killed as the trainers' second halves reach it: values in flight are sent again to
the collector they start anew (the test fails with both of the sender's re-send paths switched
off).  It does not land between a frame's journaling and its ack, so it does not prove the
collector's duplicate check (switched off, it still passes): the intake tests do.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import signal
import subprocess
import sys
from typing import Any, Dict, List, Tuple

import numpy
import psutil
import pytest

import statbus.pipeline as sp
from collector_helpers import REPO, CollectorProcess, end_daemon
from statbus.pipeline.collector.lifecycle.daemon import wait_for_exit
from statbus.pipeline.collector.lifecycle.pidfile import running_pid
from statbus.pipeline.control import control_request
from statbus.pipeline.layout import RunLayout
from statbus.plugins.discovery import discover_plugins
from statbus.plugins.media import MAX_MEDIA_BYTES, Media, MediaKind
from waiting import wait_for
from zoo import zoo_env, zoo_output, zoo_plugins

pytestmark = pytest.mark.timeout(300)

TRAINERS = 32
STEPS = 8
HALF = STEPS // 2
MEDIA_TAGS = ("tensor", "hist", "pr", "image", "video")
PLUGINS = ("tensorboard", "media_recorder")
TENSOR_VALUES = 4

# One parent forks (or spawns) the trainers; each logs HALF steps, says so, waits for "go" (the
# test kills something meanwhile: then values are in flight or not yet encoded), logs the rest
# and exits through writer.close() and flush().
SCRIPT = r"""
import json, os, sys
import numpy

STEPS, HALF, TENSOR_VALUES = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])


def values(index, step):
    base = index * 1000 + step
    image = numpy.full((3, 8, 8), base % 256, dtype=numpy.uint8)
    video = numpy.full((1, 2, 3, 8, 8), (base + 1) % 256, dtype=numpy.uint8)
    return base, numpy.arange(TENSOR_VALUES, dtype=numpy.float32) + base, image, video


def trainer(index, log_dir, ready, go, results):
    import statbus.pipeline as sp

    writer = sp.SummaryWriter(log_dir)
    labels = numpy.array([0, 1, 1, 0, 1], dtype=numpy.int64)
    for step in range(STEPS):
        if step == HALF:
            ready.put(index)
            go.wait()
        base, tensor, image, video = values(index, step)
        writer.add_scalar(f"p{index}/loss", float(base), step)
        writer.add_tensor(f"p{index}/tensor", tensor, step)
        writer.add_histogram_raw(f"p{index}/hist", min=0.0, max=float(base), num=3, sum=float(base),
                                 sum_squares=float(base) ** 2, bucket_limits=[0.0, 1.0, float(base) + 1.0],
                                 bucket_counts=[1, 1, 1], global_step=step)
        writer.add_pr_curve(f"p{index}/pr", labels, numpy.linspace(0.1, 0.9, 5), step)
        writer.add_image(f"p{index}/image", image, step)
        writer.add_video(f"p{index}/video", video, step, fps=4)
    writer.close()
    flushed = sp.flush(120)
    counters = sp.client_counters()
    results.put({"index": index, "flushed": flushed, "media_recorded": counters["media_recorded"],
                 "media_dropped": counters["media_dropped"]})


if __name__ == "__main__":
    import multiprocessing

    n, log_dir, method = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    context = multiprocessing.get_context(method)
    ready, go, results = context.Queue(), context.Event(), context.Queue()
    children = [context.Process(target=trainer, args=(index, log_dir, ready, go, results)) for index in range(n)]
    for child in children:
        child.start()
    for _ in range(n):
        ready.get(timeout=240)
    print("half", flush=True)
    sys.stdin.readline()
    go.set()
    reports = sorted((results.get(timeout=240) for _ in range(n)), key=lambda r: r["index"])
    for child in children:
        child.join(60)
    print(json.dumps({"codes": [child.exitcode for child in children], "reports": reports}), flush=True)
"""


def _values(index: int, step: int) -> Tuple[int, bytes, bytes, bytes]:
    """What trainer ``index`` logs at ``step``, as the bytes its media values carry (see SCRIPT)."""
    base = index * 1000 + step
    return (base, (numpy.arange(TENSOR_VALUES, dtype=numpy.float32) + base).tobytes(),
            bytes([base % 256]) * (3 * 8 * 8), bytes([(base + 1) % 256]) * (2 * 3 * 8 * 8))


def _plugins_config(tmp_path) -> str:
    """A STATBUS_CONFIG under which the on-demand collector runs only PLUGINS."""
    names = {p.name for p in discover_plugins()} | set(zoo_plugins())
    path = tmp_path / "plugins.toml"
    path.write_text("".join(f"[plugins.{name}]\nenabled = false\n\n" for name in sorted(names - {*PLUGINS, "default"})))
    return str(path)


def _env(tmp_path) -> Dict[str, str]:
    env = zoo_env(STATBUS_CONFIG=_plugins_config(tmp_path), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                  PYTHONWARNINGS="error")
    env["PYTHONPATH"] = REPO + os.pathsep + env["PYTHONPATH"]
    for name in ("STATBUS_AUTOSTART", "STATBUS_ADDRESS", "STATBUS_RUN_ID", "STATBUS_RESULTS_DIR"):
        env.pop(name, None)
    return env


def _plugin(layout: RunLayout, name: str) -> Dict[str, Any]:
    status = control_request(layout.control_address, {"op": "status"}, timeout=10)
    return next(p for p in status["plugins"] if p["name"] == name)


def _kill_tensorboard_worker(layout: RunLayout, at_half: Dict[str, Any]) -> List[psutil.Process]:
    """SIGKILL the tensorboard worker host once it delivers the second half's values, and see it restarted."""
    delivered = next(p for p in at_half["plugins"] if p["name"] == "tensorboard")["delivered"]
    pid = wait_for(lambda: (lambda p: p["state"] == "READY" and p["delivered"] > delivered and p["pid"])(
        _plugin(layout, "tensorboard")), 60, interval=0.005, what="the tensorboard worker delivering")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _plugin(layout, "tensorboard")["restarts"] >= 1, 60, what="the tensorboard worker restarted")
    return []


def _kill_collector(layout: RunLayout, at_half: Dict[str, Any]) -> List[psutil.Process]:
    """SIGKILL the collector alone, as the OOM killer picks one process, once it journals the second
    half's values (others are in flight then): its worker hosts are orphaned (they are returned, to
    be reaped at the end)."""
    head = at_half["journal"]["head"]
    wait_for(lambda: control_request(layout.control_address, {"op": "status"}, timeout=10)["journal"]["head"] > head,
             60, interval=0.001, what="the second half's values journaled")
    collector = psutil.Process(running_pid(layout.pid_file))
    orphans = collector.children(recursive=True)
    collector.kill()
    collector.wait(10)
    return orphans


def _no_kill(layout: RunLayout, at_half: Dict[str, Any]) -> List[psutil.Process]:
    return []


def _run_trainers(tmp_path, method: str, kill) -> Tuple[RunLayout, Dict[str, Any]]:
    """Runs SCRIPT with TRAINERS trainers, ``kill(layout, at_half)`` as their second halves begin
    (``at_half``: the collector's status before); the collector
    stopped (every plugin caught up and flushed) at the end."""
    layout = RunLayout(str(tmp_path / "results"), "media")
    script = tmp_path / "trainers.py"
    script.write_text(SCRIPT)
    orphans: List[psutil.Process] = []
    parent = subprocess.Popen([sys.executable, str(script), str(TRAINERS), os.path.join(layout.run_dir, "train"),
                               method, str(STEPS), str(HALF), str(TENSOR_VALUES)],
                              env=_env(tmp_path), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline() == "half\n", parent.communicate(timeout=60)[1]
        at_half = control_request(layout.control_address, {"op": "status"}, timeout=10)
        parent.stdin.write("go\n")
        parent.stdin.flush()
        orphans = kill(layout, at_half)
        out, err = parent.communicate(timeout=240)
        assert parent.returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        pid = running_pid(layout.pid_file)
        assert pid is not None
        control_request(layout.control_address, {"op": "stop", "timeout": 120}, timeout=10)
        assert wait_for_exit(pid, 150), "the collector did not stop"
        return layout, report
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.communicate()
        for process in orphans:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(orphans, timeout=10)
        end_daemon(layout)


def _accumulator(directory: str) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(directory, size_guidance={"scalars": 0, "histograms": 0, "tensors": 0, "images": 0},
                           purge_orphaned_data=False)
    acc.Reload()
    return acc


def _assert_every_value_once(layout: RunLayout, report: Dict[str, Any]) -> None:
    assert report["codes"] == [0] * TRAINERS
    assert [(r["flushed"], r["media_recorded"], r["media_dropped"]) for r in report["reports"]] == [
        (True, STEPS * len(MEDIA_TAGS), 0)] * TRAINERS

    # TensorBoard: each tag of each trainer at every step once, in order, with its value.
    acc = _accumulator(os.path.join(layout.run_dir, "train"))
    read = {"tensor": acc.Tensors, "pr": acc.Tensors, "hist": acc.Histograms, "image": acc.Images,
            "video": acc.Images}
    wrong = {}
    for index in range(TRAINERS):
        for tag, reader in read.items():
            steps = [event.step for event in reader(f"p{index}/{tag}")]
            if steps != list(range(STEPS)):
                wrong[f"p{index}/{tag}"] = steps
        loss = [(event.step, event.value) for event in acc.Scalars(f"p{index}/loss")]
        if loss != [(step, float(index * 1000 + step)) for step in range(STEPS)]:
            wrong[f"p{index}/loss"] = loss
        tensors = [numpy.frombuffer(event.tensor_proto.tensor_content, numpy.float32).tobytes()
                   if event.tensor_proto.tensor_content else numpy.array(event.tensor_proto.float_val,
                                                                         numpy.float32).tobytes()
                   for event in acc.Tensors(f"p{index}/tensor")]
        if tensors != [_values(index, step)[1] for step in range(STEPS)]:
            wrong[f"p{index}/tensor values"] = len(tensors)
    assert not wrong, f"steps of TensorBoard tags not once each: {dict(list(wrong.items())[:8])}"

    # The statbus-aware plugin: each value once, its bytes intact, each in a journal entry of its own.
    lines = [line for line in _read_jsonl(zoo_output(layout.results_dir, layout.run_id, "media_recorder"))
             if line["call"] == "add_media"]
    seen = collections.Counter((line["tag"], line["step"]) for line in lines)
    expected = {(f"p{index}/{tag}", step) for index in range(TRAINERS) for tag in MEDIA_TAGS for step in range(STEPS)}
    missing, unknown = sorted(expected - set(seen))[:8], sorted(set(seen) - expected)[:8]
    assert set(seen) == expected, f"missing {missing}, unknown {unknown}"
    twice = {key: count for key, count in seen.items() if count != 1}
    assert not twice, f"media_recorder got {len(twice)} values more than once: {sorted(twice.items())[:8]}"
    assert all(line["category"] == "train" for line in lines)
    digests = {(line["tag"], line["step"]): line["sha256"] for line in lines}
    for index in range(TRAINERS):
        for step in range(STEPS):
            _, tensor, image, video = _values(index, step)
            for tag, data in (("tensor", tensor), ("image", image), ("video", video)):
                assert digests[(f"p{index}/{tag}", step)] == hashlib.sha256(data).hexdigest(), (index, tag, step)
    positions = [line["position"] for line in lines]
    assert len(set(positions)) == len(positions)


def _read_jsonl(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_32_trainers_on_one_log_dir_get_every_media_value_into_tensorboard_and_plugins_once(tmp_path, method):
    _assert_every_value_once(*_run_trainers(tmp_path, method, _no_kill))


def test_a_tensorboard_worker_killed_mid_run_writes_every_media_value_once(tmp_path):
    layout, report = _run_trainers(tmp_path, "fork", _kill_tensorboard_worker)
    _assert_every_value_once(layout, report)


def test_a_collector_killed_mid_run_is_started_again_and_every_media_value_lands_once(tmp_path):
    layout, report = _run_trainers(tmp_path, "fork", _kill_collector)
    with open(layout.log_file, encoding="utf-8") as handle:
        assert handle.read().count("statbus collector ready") == 2  # the first one and the trainers' restart
    _assert_every_value_once(layout, report)


# --- retention: media entries are freed like any entry -------------------------------------------


def _journal_bytes(layout: RunLayout) -> int:
    total = 0
    for name in os.listdir(layout.journal_dir):
        try:
            total += os.path.getsize(os.path.join(layout.journal_dir, name))
        except FileNotFoundError:
            pass  # deleted by retention meanwhile
    return total


@pytest.mark.usefixtures("fresh_trainer_state")
def test_300_mib_of_media_through_small_segments_keep_the_journal_bounded(tmp_path):
    """300 MiB of media in 1 MiB values, in rounds of 50 MiB (as a trainer logging videos, at a
    rate its plugins keep up with): after each round the plugin is past it and retention leaves
    the newest segments only, so the journal never holds much more than a round."""
    from statbus.pipeline.trainer import reporter

    rounds, per_round, size, segment = 6, 50, 1 << 20, 2 << 20
    results = str(tmp_path / "results")
    collector = CollectorProcess(results, "run", env=zoo_env(), extra=[
        "--plugins", "media_recorder", "--segment-mb", str(segment >> 20), "--stop-timeout", "60"])
    sp.configure(run_id="run", results_dir=results, autostart=False)
    payload = numpy.random.default_rng(3).integers(0, 256, size, dtype=numpy.uint8).tobytes()
    sent = []
    try:
        collector.start()
        layout = collector.layout
        for step in range(rounds * per_round):
            data = step.to_bytes(4, "little") + payload[4:]
            assert reporter.add_media("cat", "v", Media(MediaKind.VIDEO, (size,), "uint8", data, {"fps": 4}), step)
            sent.append((step, hashlib.sha256(data).hexdigest()))
            if step % per_round == per_round - 1:
                assert sp.flush(timeout=60)
                head = control_request(layout.control_address, {"op": "status"}, timeout=10)["journal"]["head"]
                assert head > (step + 1) * size  # every value journaled, in the journal's own segments
                wait_for(lambda: _plugin(layout, "media_recorder")["committed"] >= head, 60,
                         what="the plugin past the round")
                # Retention (every second) deletes each segment the plugin is past: the newest stays.
                wait_for(lambda: _journal_bytes(layout) <= 2 * segment, 30,
                         what=lambda: f"the journal trimmed (it holds {_journal_bytes(layout)} bytes)")
        assert collector.terminate(timeout=120) == 0, collector.log()
    finally:
        collector.close()
    lines = [line for line in _read_jsonl(zoo_output(results, "run", "media_recorder")) if line["call"] == "add_media"]
    assert [(line["step"], line["sha256"]) for line in lines] == sent


# --- the edge: one value at the 64 MiB limit, and one byte past it ----------------------------------


def test_a_media_value_of_exactly_64_mib_arrives_whole_and_one_byte_more_raises_at_the_call(tmp_path, monkeypatch):
    from PIL import Image

    from statbus.pipeline.summary_writer import TORCH_LAYOUT_ARGS

    monkeypatch.setenv("STATBUS_AUTOSTART", "0")
    results = str(tmp_path / "results")
    # 4096 x 4096 RGBA of random bytes: exactly MAX_MEDIA_BYTES, and a PNG that hardly compresses.
    image = numpy.random.default_rng(64).integers(0, 256, (4096, 4096, 4), dtype=numpy.uint8)
    assert image.nbytes == MAX_MEDIA_BYTES
    collector = CollectorProcess(results, "run", env=zoo_env(), extra=[
        "--plugins", "tensorboard,media_recorder", *TORCH_LAYOUT_ARGS, "--stop-timeout", "60"])
    dropped_before = sp.client_counters()["media_dropped"]  # process-wide: earlier tests' drops count too
    try:
        collector.start()
        writer = sp.SummaryWriter(os.path.join(results, "run", "train"))
        writer.add_image("big", image, 1, dataformats="HWC")
        with pytest.raises(ValueError, match=f"{MAX_MEDIA_BYTES + 1} bytes"):
            writer.add_tensor("huge", numpy.zeros(MAX_MEDIA_BYTES + 1, dtype=numpy.uint8), 2)
        writer.add_tensor("after", numpy.arange(3, dtype=numpy.float32), 3)
        writer.close()
        assert sp.flush(timeout=120)
        assert sp.client_counters()["media_dropped"] == dropped_before
        assert collector.terminate(timeout=120) == 0, collector.log()
    finally:
        sp.shutdown(1.0)
        collector.close()
    lines = [line for line in _read_jsonl(zoo_output(results, "run", "media_recorder")) if line["call"] == "add_media"]
    assert [(line["tag"], line["step"], line["nbytes"]) for line in lines] == [("big", 1, MAX_MEDIA_BYTES),
                                                                                ("after", 3, 12)]
    assert lines[0]["sha256"] == hashlib.sha256(image.tobytes()).hexdigest()
    acc = _accumulator(os.path.join(results, "run", "train"))
    assert "huge" not in acc.Tags()["tensors"]
    [event] = acc.Images("big")
    import io

    decoded = numpy.asarray(Image.open(io.BytesIO(event.encoded_image_string)))
    assert decoded.shape == image.shape and numpy.array_equal(decoded, image)
    assert [event.step for event in acc.Tensors("after")] == [3]


@pytest.mark.usefixtures("fresh_trainer_state")
def test_a_tensorboard_worker_killed_with_media_written_but_not_committed_writes_none_twice(tmp_path):
    """The worker is killed while entries it delivered wait for their commit: their events are in the
    file already (each PNG is past the event file's 256 KiB buffer), the next worker is handed them
    again, and only the writer's journal-position records keep them from being written twice."""
    from statbus.pipeline.trainer import reporter

    count = 60
    results = str(tmp_path / "results")
    collector = CollectorProcess(results, "run", env=zoo_env(),
                                 extra=["--plugins", "tensorboard", "--stop-timeout", "60"])
    sp.configure(run_id="run", results_dir=results, autostart=False)
    rng = numpy.random.default_rng(9)
    images = [rng.integers(0, 256, (3, 320, 320), dtype=numpy.uint8) for _ in range(4)]  # noise: PNGs of ~300 KiB
    try:
        collector.start()
        layout = collector.layout
        for step in range(count):
            image = images[step % 4]
            media = Media(MediaKind.IMAGE, image.shape, "uint8", image.tobytes(), {"dataformats": "CHW"})
            assert reporter.add_media("cat", "noise", media, step)
        assert sp.flush(timeout=60)
        # Delivered past the committed cursor: an entry's events written, its commit not yet.
        pid = wait_for(lambda: (lambda p: p["state"] == "READY" and (p["inflight"] or -1) > p["committed"] > 0
                                and p["pid"])(_plugin(layout, "tensorboard")),
                       60, interval=0.001, what="the tensorboard worker between a delivery and its commit")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _plugin(layout, "tensorboard")["restarts"] >= 1, 60, what="the worker restarted")
        assert collector.terminate(timeout=120) == 0, collector.log()
    finally:
        collector.close()
    acc = _accumulator(os.path.join(results, "run", "cat"))
    assert [event.step for event in acc.Images("noise")] == list(range(count))
