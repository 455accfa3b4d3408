"""Media values from a trainer to the plugins: once, in order, byte-equal, bounded (issue 23, item 2).

A real collector with real worker hosts; the trainer is this test process (``reporter.add_media``).
"""

from __future__ import annotations

import hashlib
import os
import signal

import numpy
import pytest

import statbus.pipeline as sp
from collector_helpers import CollectorProcess
from statbus.pipeline.cli.status import format_status
from statbus.pipeline.control import control_request
from statbus.pipeline.trainer import reporter
from statbus.plugins.media import MAX_MEDIA_BYTES, Media, MediaKind, array_fields, array_option
from summary_writer_helpers import accumulator, read_jsonl
from waiting import wait_for
from zoo import zoo_env, zoo_output

pytestmark = pytest.mark.usefixtures("fresh_trainer_state")


def media_of(kind: MediaKind, values, **options) -> Media:
    shape, dtype, data = array_fields(values)
    return Media(kind, shape, dtype, data, options)


def start(tmp_path, plugins: str) -> CollectorProcess:
    results = str(tmp_path / "results")
    collector = CollectorProcess(results, "run", env=zoo_env(), extra=["--plugins", plugins, "--stop-timeout", "60"])
    sp.configure(run_id="run", results_dir=results, autostart=False)
    return collector.start()


def plugin_status(collector: CollectorProcess, name: str) -> dict:
    status = control_request(collector.layout.control_address, {"op": "status"}, timeout=10)
    return next(p for p in status["plugins"] if p["name"] == name)


def test_media_of_every_size_arrive_once_in_order_and_byte_equal(tmp_path):
    rng = numpy.random.default_rng(23)
    sent = [
        ("cat", "image", media_of(MediaKind.IMAGE, rng.integers(0, 256, (3, 8, 8), dtype=numpy.uint8),
                                  dataformats="CHW")),
        ("cat", "boxes", media_of(MediaKind.IMAGE, rng.integers(0, 256, (8, 8, 3), dtype=numpy.uint8),
                                  dataformats="HWC", boxes=array_option(numpy.ones((2, 4))), labels=["a", "b"])),
        ("cat/sub", "video", media_of(MediaKind.VIDEO, rng.integers(0, 256, (1, 5, 3, 16, 16), dtype=numpy.uint8),
                                      fps=30)),
        ("cat", "audio", media_of(MediaKind.AUDIO, rng.uniform(-1, 1, 44100).astype(numpy.float32),
                                  sample_rate=44100)),
        ("cat", "summary", Media(MediaKind.SUMMARY, (), "", b"\x0a\x03abc" * 10, {})),
        ("cat", "empty", Media(MediaKind.HPARAMS, (), "", b"", {"hparams": {"lr": 0.1}, "metrics": {"m": 1.0}})),
        # ~60 MiB: far past the 8 MiB of an ordinary frame, within the 64 MiB of one media value.
        ("cat", "big", media_of(MediaKind.TENSOR, rng.integers(0, 256, 60 << 20, dtype=numpy.uint8), use="tensor")),
        ("cat", "after_big", media_of(MediaKind.TENSOR, numpy.arange(10, dtype=numpy.float64), use="tensor")),
    ]
    collector = start(tmp_path, "media_recorder")
    try:
        stats = sp.StatsReporter("cat")
        for step, (category, tag, media) in enumerate(sent):
            assert reporter.add_media(category, tag, media, step) is True
            stats.add_stat("x", float(step))
            stats.write_stats(step)
        assert sp.flush(timeout=120)
        counters = sp.client_counters()
        assert counters["media_recorded"] == len(sent) and counters["media_dropped"] == 0
        assert counters["media_held_bytes"] == 0
        assert collector.terminate(timeout=120) == 0, collector.log()
    finally:
        collector.close()
    lines = read_jsonl(zoo_output(str(tmp_path / "results"), "run", "media_recorder"))
    calls = [(line["call"], line.get("tag") or line.get("step")) for line in lines if line["call"] != "close"]
    # Each media value, then the summary its write_stats closed: in the order they were recorded.
    assert calls == [call for step, (_, tag, _) in enumerate(sent) for call in (("add_media", tag),
                                                                                ("write_stats", step))]
    got = [line for line in lines if line["call"] == "add_media"]
    for line, (step, (category, tag, media)) in zip(got, enumerate(sent)):
        assert (line["category"], line["tag"], line["step"]) == (category, tag, step)
        assert (line["kind"], tuple(line["shape"]), line["dtype"]) == (media.kind.value, media.shape, media.dtype)
        assert (line["nbytes"], line["sha256"]) == (len(media.data), hashlib.sha256(media.data).hexdigest())
        assert line["options"] == {k: v for k, v in media.options.items() if not isinstance(v, (bytes, dict))}
    positions = [line["position"] for line in got]
    assert positions == sorted(set(positions)), "each media value has a journal entry of its own"


def test_a_tensorboard_worker_killed_mid_run_still_writes_every_media_value_once(tmp_path):
    # What this shows is the outcome (nothing lost, nothing doubled), not the journal-position rule:
    # its small values never reach the event file before their commit, so it passes without the
    # rule. tests/system/test_media_scale.py's kill between write and commit is the one that needs it.
    count = 40
    collector = start(tmp_path, "tensorboard")
    try:
        tensor = numpy.arange(1 << 18, dtype=numpy.float32)  # 1 MiB: each takes the worker a moment to encode
        for step in range(count):
            assert reporter.add_media("cat", "t", media_of(MediaKind.TENSOR, tensor + step, use="tensor"), step)
        assert sp.flush(timeout=120)
        pid = wait_for(lambda: (lambda p: p["delivered"] >= 3 and p["pid"])(plugin_status(collector, "tensorboard")),
                       60, what="the tensorboard worker delivering")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: plugin_status(collector, "tensorboard")["restarts"] >= 1, 60, what="the worker restarted")
        assert collector.terminate(timeout=120) == 0, collector.log()  # every plugin catches up first
    finally:
        collector.close()
    acc = accumulator(str(tmp_path / "results" / "run" / "cat"))
    events = acc.Tensors("t")
    assert [event.step for event in events] == list(range(count))
    for event in events[:: count // 4]:
        assert event.tensor_proto.float_val[:3] == [event.step, event.step + 1, event.step + 2]


def test_a_media_value_past_64_mib_raises_at_the_call_naming_its_size():
    data = bytes(MAX_MEDIA_BYTES + 1)
    with pytest.raises(ValueError, match=f"'huge' is {MAX_MEDIA_BYTES + 1} bytes"):
        reporter.add_media("cat", "huge", Media(MediaKind.IMAGE, (len(data),), "uint8", data, {}), 0)
    boxes = array_option(numpy.zeros((1, 4)))  # array options count too
    image = bytes(MAX_MEDIA_BYTES - 8)
    with pytest.raises(ValueError, match="'boxed' is"):
        reporter.add_media("cat", "boxed", Media(MediaKind.IMAGE, (len(image),), "uint8", image, {"boxes": boxes}), 0)
    with pytest.raises(ValueError, match="needs 12 bytes"):
        reporter.add_media("cat", "wrong", Media(MediaKind.IMAGE, (3,), "float32", b"\0" * 8, {}), 0)
    with pytest.raises(TypeError, match="plain values only"):
        reporter.add_media("cat", "opt", Media(MediaKind.SUMMARY, (), "", b"", {"f": object()}), 0)


def test_a_media_flood_against_a_stopped_collector_stays_under_the_bound_and_the_kept_ones_arrive(tmp_path, caplog):
    import logging

    import psutil

    from statbus.pipeline.trainer.config import DEFAULT_MEDIA_BYTES

    caplog.set_level(logging.WARNING, logger="statbus.pipeline.trainer.sender")
    collector = start(tmp_path, "media_recorder")
    stopped = False
    payload = numpy.random.default_rng(5).integers(0, 256, 5 << 20, dtype=numpy.uint8).tobytes()  # 5 MiB
    try:
        assert reporter.add_media("cat", "first", media_of(MediaKind.TENSOR, numpy.zeros(4), use="tensor"), 0)
        assert sp.flush(timeout=60)  # connected: what follows waits in the trainer, not for a connection
        collector.process.send_signal(signal.SIGSTOP)
        stopped = True
        me = psutil.Process()
        rss_before = me.memory_info().rss
        kept, held = [], []
        for step in range(1, 81):  # 400 MiB of media against the default bound of 256 MiB
            data = step.to_bytes(4, "little") + payload[4:]
            if reporter.add_media("cat", "flood", Media(MediaKind.VIDEO, (len(data),), "uint8", data, {"fps": 4}),
                                  step):
                kept.append((step, hashlib.sha256(data).hexdigest()))
            held.append(sp.client_counters()["media_held_bytes"])
        rss_grew = me.memory_info().rss - rss_before
        counters = sp.client_counters()
        assert max(held) <= DEFAULT_MEDIA_BYTES
        assert len(kept) == DEFAULT_MEDIA_BYTES // (5 << 20)  # 51 fit, the rest is dropped
        assert counters["media_dropped"] == 80 - len(kept)
        assert counters["media_dropped_bytes"] == (80 - len(kept)) * (5 << 20)
        # The kept values, and ZeroMQ's copies of those sent (MEDIA_SEND_WINDOW), not the dropped ones.
        assert rss_grew < DEFAULT_MEDIA_BYTES + (96 << 20), f"the trainer grew by {rss_grew >> 20} MiB"
        drops = [r for r in caplog.records if "dropped" in r.getMessage() and "media value" in r.getMessage()]
        assert len(drops) == 1, "one warning per stretch of drops"
        collector.process.send_signal(signal.SIGCONT)
        stopped = False
        assert sp.flush(timeout=120)
        assert sp.client_counters()["media_held_bytes"] == 0
        assert reporter.add_media("cat", "last", media_of(MediaKind.TENSOR, numpy.ones(4), use="tensor"), 81)
        assert any("goes through again" in r.getMessage() for r in caplog.records)
        assert sp.flush(timeout=60)
        status = control_request(collector.layout.control_address, {"op": "status"}, timeout=10)
        dropped = 80 - len(kept)
        assert [(t["media_dropped"], t["media_dropped_bytes"]) for t in status["trainers"]] == [
            (dropped, dropped * (5 << 20))]
        assert f" {dropped} ({dropped * 5} MiB) " in format_status(status)  # statbus status's MEDIA DROPS
        assert collector.terminate(timeout=120) == 0, collector.log()
    finally:
        if stopped:
            collector.process.send_signal(signal.SIGCONT)
        collector.close()
    lines = [line for line in read_jsonl(zoo_output(str(tmp_path / "results"), "run", "media_recorder"))
             if line["call"] == "add_media"]
    assert [line["tag"] for line in lines] == ["first"] + ["flood"] * len(kept) + ["last"]
    assert [(line["step"], line["sha256"]) for line in lines[1:-1]] == kept


EXIT_CHILD = """
import sys
import statbus.pipeline as sp
from statbus.pipeline.trainer import reporter
from statbus.plugins.media import Media, MediaKind

sp.configure(run_id="run", results_dir=sys.argv[1], autostart=False, linger=0.2)
for step in range(3):  # 3 x 30 MiB, the collector not running: the spool takes 64 MiB of them at exit
    data = bytes([step]) * (30 << 20)
    assert reporter.add_media("cat", "v", Media(MediaKind.VIDEO, (len(data),), "uint8", data, {}), step)
"""


def test_media_unacknowledged_at_exit_wait_in_the_spool_up_to_its_bound_and_the_rest_is_said_dropped(tmp_path):
    import subprocess
    import sys

    from summary_writer_helpers import child_env

    results = str(tmp_path / "results")
    done = subprocess.run([sys.executable, "-c", EXIT_CHILD, results], env=child_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "0 values, 0 summaries and 2 media values recorded by this process wait in the spool" in done.stderr
    assert "1 media values past the spool's bound for media (64 MiB" in done.stderr
    collector = CollectorProcess(results, "run", env=zoo_env(), extra=["--plugins", "media_recorder"]).start()
    try:
        path = zoo_output(results, "run", "media_recorder")
        wait_for(lambda: os.path.exists(path) and len(read_jsonl(path)) == 2, 60, what="the spooled media delivered")
        assert collector.terminate(timeout=120) == 0, collector.log()
    finally:
        collector.close()
    lines = read_jsonl(path)
    assert [(line["step"], line["sha256"]) for line in lines if line["call"] == "add_media"] == [
        (step, hashlib.sha256(bytes([step]) * (30 << 20)).hexdigest()) for step in range(2)]
