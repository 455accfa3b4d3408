"""statbus's SummaryWriter against torch's, read back with TensorBoard's reader; errors; no torch import."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from summary_writer_helpers import event_dirs, read_jsonl, read_run, run_child, start_collector, stop

HISTOGRAM_FIELDS = ("min", "max", "num", "sum", "sum_squares")


def test_same_calls_make_the_same_tensorboard_runs_as_torch(tmp_path):
    torch_root, statbus_root = tmp_path / "torch", tmp_path / "statbus"
    run_child("sequence", "torch", str(torch_root / "runs" / "exp1"))
    collector = start_collector(str(statbus_root), "runs")
    try:
        run_child("sequence", "statbus", str(statbus_root / "runs" / "exp1"))
        stop(collector)
    finally:
        collector.close()
    torch_dirs, statbus_dirs = event_dirs(str(torch_root / "runs")), event_dirs(str(statbus_root / "runs"))
    assert torch_dirs == statbus_dirs == ["exp1", "exp1/hp", "exp1/train_losses_policy", "exp1/train_losses_value"]
    for name in torch_dirs:
        expected, got = read_run(str(torch_root / "runs" / name)), read_run(str(statbus_root / "runs" / name))
        assert got["scalars"] == expected["scalars"], name  # tags, steps and float32 values
        assert sorted(got["histograms"]) == sorted(expected["histograms"]), name
        for tag, points in expected["histograms"].items():
            assert [step for step, _ in got["histograms"][tag]] == [step for step, _ in points]
            for (_, want), (_, have) in zip(points, got["histograms"][tag]):
                for field in HISTOGRAM_FIELDS:
                    assert math.isclose(getattr(have, field), getattr(want, field), rel_tol=1e-9, abs_tol=1e-12)
                # torch's default buckets ("tensorflow" bins), trimmed to the filled ones as torch trims them.
                assert list(have.bucket) == list(want.bucket) and sum(want.bucket) == want.num
                assert len(have.bucket_limit) == len(want.bucket_limit)
                assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(have.bucket_limit, want.bucket_limit))
        texts = {tag: points for tag, points in expected["texts"].items() if not tag.startswith("_hparams_/")}
        got_texts = {tag: points for tag, points in got["texts"].items() if tag != "Hyperparameters"}
        assert got_texts == texts, name
    assert read_run(str(statbus_root / "runs" / "exp1"))["texts"]["notes/text_summary"] == [(11, [b"hello **world**"])]
    assert "Hyperparameters" in read_run(str(statbus_root / "runs" / "exp1" / "hp"))["texts"]

    # Plugins saw one summary per step and log_dir, and the ML-Agents calls.
    summaries = [line for line in read_jsonl(str(statbus_root / "runs" / "stats.jsonl")) if "step" in line]
    main = [(s["step"], sorted(s["values"])) for s in summaries if s["category"] == "exp1"]
    assert main == [(step, ["charts/lr", "loss"]) for step in range(10)] + [(10, ["weights"]), (12, ["loss"])]
    weights = next(s for s in summaries if s["category"] == "exp1" and s["step"] == 10)["values"]["weights"]
    assert weights["aggregation"] == "HISTOGRAM" and weights["num"] == 101
    recorder = read_jsonl(str(statbus_root / "runs" / "zoo" / "recorder.jsonl"))
    added = [line for line in recorder if line["call"] == "on_add_stat"]
    assert len(added) == 10 * 2 + 4 * 2 + 101 + 1 + 1  # every value once, hp/score included
    assert {line["category"] for line in added} == {"exp1", "exp1/train_losses_policy", "exp1/train_losses_value",
                                                    "exp1/hp"}
    texts = [line for line in recorder if line["call"] == "add_property" and line["type"] == "text"]
    assert texts == [{"call": "add_property", "writer": 0, "category": "exp1", "type": "text",
                      "value": {"tag": "notes", "text": "hello **world**", "step": 11}}]


@pytest.fixture
def bound_writer_state(fresh_trainer_state, monkeypatch):
    from statbus.pipeline import summary_writer

    monkeypatch.setenv("STATBUS_AUTOSTART", "0")
    monkeypatch.setattr(summary_writer, "_bound_run", None)
    monkeypatch.setattr(summary_writer, "_live", set())  # this test's writers are not closed at exit
    yield summary_writer


def test_bad_input_raises_clear_errors_at_the_call(tmp_path, bound_writer_state):
    from statbus.pipeline import SummaryWriter
    from statbus.plugins import ConfigError

    writer = SummaryWriter(str(tmp_path / "runs" / "exp"))
    with pytest.raises(TypeError, match="value of stat 'loss' must be a number"):
        writer.add_scalar("loss", "high", 1)
    with pytest.raises(TypeError, match="stat key must be a str"):
        writer.add_scalar(3, 1.0, 1)
    with pytest.raises(ValueError, match="stat key '' must have 1 to 1024 characters"):
        writer.add_scalar("", 1.0, 1)
    with pytest.raises(TypeError, match="global_step of 'loss' must be an int"):
        writer.add_scalar("loss", 1.0, 1.5)
    with pytest.raises(ValueError, match="global_step of 'loss' must be >= 0"):
        writer.add_scalar("loss", 1.0, -1)
    with pytest.raises(ValueError, match=r"global_step of 'loss' must be >= 0 and < 2\*\*48"):
        writer.add_scalar("loss", 1.0, 2**48)
    with pytest.raises(TypeError, match="value of stat 'h' must be a number"):
        writer.add_histogram("h", [1.0, None], 1)
    with pytest.raises(TypeError, match="value of stat 'm' must be a number"):
        writer.add_scalars("m", {"a": 1.0, "b": "x"}, 1)
    with pytest.raises(ValueError, match="sub-tag 'a/b' must be a non-empty str without '/'"):
        writer.add_scalars("m", {"a/b": 1.0}, 1)
    with pytest.raises(TypeError, match="text of 'n' must be a str"):
        writer.add_text("n", 5, 1)
    with pytest.raises(ConfigError, match="already logs to the run"):
        SummaryWriter(str(tmp_path / "elsewhere" / "exp"))
    with pytest.raises(ConfigError, match="needs a parent directory that is not the root"):
        bound_writer_state.locate("/")
    writer.add_scalar("loss", 1.0, 2)  # a good call after the bad ones works
    writer.flush()
    # Once every writer is closed, the process may log to another run.
    writer.close()
    other = SummaryWriter(str(tmp_path / "elsewhere" / "exp"))
    assert bound_writer_state._bound_run.run_dir == str(tmp_path / "elsewhere")  # noqa: SLF001
    other.close()


def test_log_dir_maps_to_the_run_its_parent_holds(tmp_path):
    from statbus.pipeline.summary_writer import default_log_dir, locate

    layout, category = locate(str(tmp_path / "runs" / "exp1"))
    assert (layout.results_dir, layout.run_id, category) == (str(tmp_path), "runs", "exp1")
    assert os.path.join(layout.run_dir, category) == str(tmp_path / "runs" / "exp1")
    default = default_log_dir("_lr0.1")
    assert default.startswith("runs" + os.sep) and default.endswith("_lr0.1")


def test_importing_statbus_pipeline_loads_no_summary_writer_and_no_torch():
    code = ("import sys, statbus.pipeline as sp; assert 'torch' not in sys.modules; "
            "assert 'statbus.pipeline.summary_writer' not in sys.modules; sp.SummaryWriter; "
            "assert 'torch' not in sys.modules and 'stable_baselines3' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "STATBUS_AUTOSTART": "0"})
