"""``statbus learn`` against the real ML-Agents 1.1.0: same output, one writer in training, isolation.

Every run trains PPO through ML-Agents' real ``mlagents.trainers.learn`` path
(``learn_driver``, a Python environment in place of Unity) in a subprocess,
seed 7, 3000 steps, a summary every 500.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from learn_runs import (
    BEHAVIOR,
    collector_log,
    gauges,
    hyperparameter_lines,
    jsonl_summaries,
    mlzoo_records,
    progress_lines,
    scalars,
    train,
    write_config,
)

pytestmark = pytest.mark.timeout(600)

SUMMARY_STEPS = [500, 1000, 1500, 2000, 2500, 3000]
FORWARDER = "statbus.pipeline.mlagents.forwarding.ForwardingWriter"


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory):
    """The same seeded training under mlagents-learn and under statbus learn."""
    directory = str(tmp_path_factory.mktemp("twins"))
    config = write_config(directory)
    plain = train("plain", directory, "plain", config)
    assert plain.code == 0, plain.stderr[-3000:]
    statbus = train("statbus", directory, "statbus", config)
    assert statbus.code == 0, statbus.stderr[-3000:]
    return plain, statbus


def test_one_writer_in_training_and_no_plugin_module(twin_runs):
    plain, statbus = twin_runs
    assert statbus.report["writers"] == [FORWARDER]
    assert statbus.report["plugin_modules"] == []
    # What the same process holds under mlagents-learn: ML-Agents' three and every plugin.
    assert "mlagents.trainers.stats.TensorboardWriter" in plain.report["writers"]
    assert len(plain.report["writers"]) >= 3


def test_same_tensorboard_scalars_tag_by_tag_step_by_step(twin_runs):
    plain, statbus = twin_runs
    ours, theirs = scalars(statbus.run_dir), scalars(plain.run_dir)
    assert sorted(ours) == sorted(theirs)
    assert {"Policy/Entropy", "Environment/Cumulative Reward", "Losses/Value Loss"} <= set(ours)
    for tag, events in theirs.items():
        assert [step for step, _ in ours[tag]] == [step for step, _ in events], tag
        # Both are float32 of the same float64 mean; the sums may be taken in another order.
        assert [value for _, value in ours[tag]] == pytest.approx([v for _, v in events], rel=1e-6, abs=1e-9), tag
    assert [step for step, _ in ours["Policy/Entropy"]] == SUMMARY_STEPS
    # One event file per behavior: statbus's, none of ML-Agents' torch writer.
    assert len([n for n in os.listdir(os.path.join(statbus.run_dir, BEHAVIOR)) if n.startswith("events.out")]) == 1


def test_same_console_lines_but_elapsed_time(twin_runs):
    plain, statbus = twin_runs
    assert len(progress_lines(plain.stdout)) == len(SUMMARY_STEPS)
    assert progress_lines(statbus.stdout) == progress_lines(plain.stdout)
    assert hyperparameter_lines(statbus.stdout) == hyperparameter_lines(plain.stdout)


def test_same_timers_gauges_and_every_summary_in_stats_jsonl(twin_runs):
    plain, statbus = twin_runs
    ours, theirs = gauges(statbus.run_dir), gauges(plain.run_dir)
    assert sorted(ours) == sorted(theirs) and theirs
    for name, gauge in theirs.items():
        assert ours[name]["count"] == gauge["count"], name
        # ML-Agents averages a list of float32 values in float32 (numpy keeps the dtype);
        # statbus receives each value as a float64 and averages in float64: equal to float32's precision.
        for field in ("value", "min", "max"):
            assert ours[name][field] == pytest.approx(gauge[field], rel=1e-6, abs=1e-9), (name, field)
    assert [s["step"] for s in jsonl_summaries(statbus.run_dir)] == SUMMARY_STEPS, collector_log(statbus.run_dir)


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("zoo"))


def test_misbehaving_plugins_do_not_reach_training(zoo_dir, twin_runs):
    config = write_config(zoo_dir)
    run = train("statbus", zoo_dir, "zoo", config,
                mlzoo="mlzoo_raises,mlzoo_sleeps,mlzoo_exit_third,mlzoo_recorder")
    assert run.code == 0, run.stderr[-3000:]
    assert run.report["writers"] == [FORWARDER] and run.report["plugin_modules"] == []
    assert [s["step"] for s in jsonl_summaries(run.run_dir)] == SUMMARY_STEPS, collector_log(run.run_dir)
    assert [step for step, _ in scalars(run.run_dir)["Policy/Entropy"]] == SUMMARY_STEPS
    recorded = mlzoo_records(run.run_dir, "recorder")
    assert [r["step"] for r in recorded if r["kind"] == "summary"] == SUMMARY_STEPS
    registered = [r for r in recorded if r["kind"] == "registered"]
    # A plugin where mlagents is importable gets ML-Agents' own RunOptions, as mlagents-learn built it.
    assert registered and registered[0]["run_options_type"] == "mlagents.trainers.settings.RunOptions"
    assert registered[0]["summary_freq"] == 500
    assert registered[0]["write_path"] == os.path.join("results", "zoo")
    assert run.report["pid"] not in {r["pid"] for r in recorded}
    # The sleeper and the exiting plugin caught up too; the exiting one in more than one life.
    assert [r["step"] for r in mlzoo_records(run.run_dir, "sleeps") if r["kind"] == "summary"] == SUMMARY_STEPS
    exits = [r for r in mlzoo_records(run.run_dir, "exit_third") if r["kind"] == "summary"]
    assert sorted({r["step"] for r in exits}) == SUMMARY_STEPS and len({r["pid"] for r in exits}) >= 2
    # The training itself is the one without these plugins: same summaries, same values.
    _, reference = twin_runs
    assert progress_lines(run.stdout) == progress_lines(reference.stdout)
    assert scalars(run.run_dir) == scalars(reference.run_dir)


@pytest.mark.parametrize("plugin", ["mlzoo_raises", "mlzoo_exit_third"])
def test_under_mlagents_learn_a_raising_or_exiting_plugin_ends_training(zoo_dir, plugin):
    run = train("plain", zoo_dir, f"plain-{plugin}", write_config(zoo_dir, max_steps=1500), mlzoo=plugin)
    assert run.code != 0
    assert "Exported" not in run.stdout  # training never reached its end
    if plugin == "mlzoo_raises":
        assert "RuntimeError: mlzoo:" in run.stderr


def test_under_mlagents_learn_a_sleeping_plugin_stalls_the_training_thread(zoo_dir):
    run = train("plain", zoo_dir, "plain-sleeps", write_config(zoo_dir, max_steps=1500), mlzoo="mlzoo_sleeps")
    assert run.code == 0, run.stderr[-3000:]
    summaries = [r for r in mlzoo_records(run.run_dir, "sleeps") if r["kind"] == "summary"]
    assert [r["step"] for r in summaries] == SUMMARY_STEPS[:3]
    # Called in the training process, on its main thread, under ML-Agents' global lock:
    # every summary held training for the writer's full sleep.
    assert {r["pid"] for r in summaries} == {run.report["pid"]}
    assert all(r["main_thread"] and r["seconds"] >= 2.0 for r in summaries)


def _console(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def test_existing_run_without_resume_or_force_is_mlagents_error_and_nothing_is_created(twin_runs, tmp_path):
    plain, _ = twin_runs
    results = os.path.dirname(plain.run_dir)
    config = write_config(str(tmp_path))
    outcomes = {}
    for program in ("mlagents-learn", "statbus"):
        command = [_console(program)] + (["learn"] if program == "statbus" else [])
        command += [config, "--run-id=plain", f"--results-dir={results}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=240,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
        message = [line for line in done.stderr.splitlines() if "Previous data from this run ID was found" in line]
        outcomes[program] = (done.returncode, message)
    assert outcomes["statbus"] == outcomes["mlagents-learn"]
    assert outcomes["statbus"][0] == 1 and outcomes["statbus"][1]
    # statbus started nothing: the run folder (mlagents-learn's) has no statbus folder in it.
    assert not os.path.exists(os.path.join(plain.run_dir, "statbus"))


def test_threaded_trainer_and_two_envs(tmp_path):
    directory = str(tmp_path)
    run = train("statbus", directory, "threads", write_config(directory, max_steps=2000, threaded=True),
                "--num-envs=2", "--env=learn_env")  # ML-Agents wants an env path for two; the factory ignores it
    assert run.code == 0, run.stderr[-3000:]
    steps = [s["step"] for s in jsonl_summaries(run.run_dir)]
    assert len(steps) == 4 and steps == sorted(steps)
    tb = scalars(run.run_dir)
    assert [step for step, _ in tb["Policy/Entropy"]] == steps
    assert [step for step, _ in tb["Environment/Episode Length"]] == steps
    assert len(progress_lines(run.stdout)) == 4


def test_resume_continues_the_run(twin_runs, tmp_path):
    """Next to last in this module: it trains the twin statbus run on, from 3000 to 4000 steps."""
    _, statbus = twin_runs
    directory = os.path.dirname(os.path.dirname(statbus.run_dir))
    run = train("statbus", directory, "statbus", write_config(str(tmp_path), max_steps=4000), "--resume")
    assert run.code == 0, run.stderr[-3000:]
    assert [s["step"] for s in jsonl_summaries(run.run_dir)] == SUMMARY_STEPS + [3500, 4000]
    assert [step for step, _ in scalars(run.run_dir)["Policy/Entropy"]] == SUMMARY_STEPS + [3500, 4000]
    assert [line.split(". ")[1] for line in progress_lines(run.stdout)] == ["Step: 3500", "Step: 4000"]


def test_force_starts_the_run_over(twin_runs, tmp_path):
    """Last in this module: ``--force`` on the twin statbus run, after it was resumed to 4000 steps."""
    _, statbus = twin_runs
    directory = os.path.dirname(os.path.dirname(statbus.run_dir))
    with open(os.path.join(statbus.run_dir, "statbus", "run.json"), encoding="utf-8") as handle:
        earlier_start = json.load(handle)["start_time"]
    run = train("statbus", directory, "statbus", write_config(str(tmp_path), max_steps=1000), "--force")
    assert run.code == 0, run.stderr[-3000:]
    # What the earlier trainings wrote is gone; only this one's two summaries are there.
    assert [s["step"] for s in jsonl_summaries(run.run_dir)] == [500, 1000]
    assert [step for step, _ in scalars(run.run_dir)["Policy/Entropy"]] == [500, 1000]
    event_files = [n for n in os.listdir(os.path.join(run.run_dir, BEHAVIOR)) if n.startswith("events.out")]
    assert len(event_files) == 1, event_files
    assert [line.split(". ")[1] for line in progress_lines(run.stdout)] == ["Step: 500", "Step: 1000"]
    # The run's identity starts again too: elapsed time counts from this training.
    with open(os.path.join(run.run_dir, "statbus", "run.json"), encoding="utf-8") as handle:
        assert json.load(handle)["start_time"] > earlier_start
