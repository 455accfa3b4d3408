"""A run has one identity for its whole life, and statbus removes nothing it was not asked to.

Real collectors, real trainer processes, real worker hosts; TensorBoard's files read back
with TensorBoard's own reader.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from chaos_helpers import chaos_run, stats_jsonl_summaries, tensorboard_steps
from collector_helpers import REPO, CollectorProcess, end_daemon, wait_for
from statbus.pipeline.trainer.autostart import on_demand_arguments
from statbus.pipeline.layout import RunLayout
from statbus.pipeline.collector.lifecycle.pidfile import read_pid, running_pid
from statbus.pipeline.collector.lifecycle.identity import establish, identity_path, read_identity
from statbus.pipeline.trainer.config import build_config, force_before
from statbus.plugins import ConfigError
from statbus.workers.pids import pid_alive

BUILT_INS = ["tensorboard", "jsonl", "console", "gauges"]


def event_files(run_dir: str):
    found = set()
    for directory, _, files in os.walk(run_dir):
        found.update(os.path.join(directory, name) for name in files if name.startswith("events.out.tfevents."))
    return found


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def progress(run, category: str) -> int:
    """The highest step of ``category`` in stats.jsonl so far."""
    return max((step for c, step, _ in stats_jsonl_summaries(run.path("stats.jsonl")) if c == category), default=0)


def elapsed_times(log_path: str):
    """(wall-clock time of the line, step, elapsed) of every console progress line in a worker log."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        return []
    found = []
    for stamp, millis, step, elapsed in re.findall(
        r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*Step: (\d+)\. Time Elapsed: ([0-9.]+) s", text, re.M
    ):
        at = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
        found.append((at, int(step), float(elapsed)))
    return found


# --- the scenario: two kill -9 of the collector during a run ------------------------------


def test_two_kill_9_of_the_collector_keep_every_tensorboard_step_once_and_every_event_file(tmp_path):
    steps = 90
    with chaos_run(tmp_path, BUILT_INS) as run:
        identity = read_identity(run.layout)
        assert identity is not None
        run.start_trainers(1, steps=steps, per_step=4, pause=0.05)
        seen_files = set()
        restarted_at = 0.0  # the first restart's time
        for kill, at_step in enumerate((15, 45)):
            wait_for(lambda: progress(run, "T0") >= at_step and event_files(run.run_dir), 60,
                     what=f"step {at_step} delivered and an event file written")
            seen_files |= event_files(run.run_dir)
            run.collector.kill()
            # The crashed collector's files are well over a second old when the next one starts
            # (a writer that took them for "an earlier run" would delete them).
            wait_for(lambda: all(time.time() - os.path.getmtime(path) > 1.5 for path in event_files(run.run_dir)),
                     30, what="the crashed collector's event files 1.5 s old")
            restarted_at = restarted_at or time.time()
            run.collector.start()
            assert read_identity(run.layout) == identity, f"run identity changed at restart {kill + 1}"
        run.finish_trainers()
        run.wait_caught_up(BUILT_INS)
        status = run.status()
        assert status["run"]["start_time"] == identity["start_time"] and status["run"]["continued"] is True
        run.close()  # graceful: writers flushed and closed

        final = event_files(run.run_dir)
        assert seen_files <= final, f"event files removed: {sorted(seen_files - final)}"
        shown, raw = tensorboard_steps(run.path("T0"), "reward")
        assert shown == list(range(1, steps + 1)), shown[:20]
        assert sorted(raw) == list(range(1, steps + 1)), collections.Counter(raw).most_common(3)
        # Elapsed time counts from the run's first start, in the lines of every collector's console
        # writer (each line's own time stamp against its "Time Elapsed"), not from each collector's start.
        lines = elapsed_times(os.path.join(run.layout.statbus_dir, "logs", "console.log"))
        assert max(step for _, step, _ in lines) == steps
        assert lines[-1][0] > restarted_at - 1.5, "no console line after the first restart"
        for at, step, elapsed in lines:
            assert abs(at - identity["start_time"] - elapsed) < 1.0, (step, at - identity["start_time"], elapsed)


def test_a_killed_collectors_worker_still_alive_keeps_the_next_collectors_worker_of_its_plugin_waiting(tmp_path):
    """The flaky duplicate of the test above, made certain: a SIGKILLed collector's tensorboard host
    outlives it (stopped here; on a loaded machine, its heartbeat is late) while the next collector
    starts its own.  The new host waits for the old one, saying so; nothing is written twice."""
    steps = 40
    with chaos_run(tmp_path, ["tensorboard", "jsonl"]) as run:
        run.start_trainers(1, steps=steps, per_step=4, pause=0.05)
        wait_for(lambda: progress(run, "T0") >= 10 and event_files(run.run_dir), 60, what="step 10 delivered")
        old = run.plugin("tensorboard")["pid"]
        assert old
        os.kill(old, signal.SIGSTOP)
        try:
            run.collector.kill()
            run.collector.start()
            log_path = run.layout.worker_log_file("tensorboard")
            wait_for(lambda: f"(pid {old}) is still running" in read_bytes(log_path).decode(errors="replace"), 60,
                     what=lambda: f"the new tensorboard host waiting for pid {old}:\n{read_bytes(log_path)[-3000:]!r}")
            assert run.plugin("tensorboard")["state"] == "STARTING"
            wait_for(lambda: progress(run, "T0") >= 20, 60, what="the next collector delivering to jsonl")
        finally:
            os.kill(old, signal.SIGCONT)  # its heartbeat now sees its collector gone, and it exits
        # Not our child: wait for it to go (it may stay a zombie of whoever adopted it, lock released).
        wait_for(lambda: not pid_alive(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE, 30,
                 what=f"the old tensorboard host {old} ending")
        run.finish_trainers()
        run.wait_caught_up(["tensorboard", "jsonl"])
        run.close()
        shown, raw = tensorboard_steps(run.path("T0"), "reward")
        assert sorted(raw) == list(range(1, steps + 1)), collections.Counter(raw).most_common(3)
        assert shown == list(range(1, steps + 1)), shown


def test_a_collector_on_an_existing_run_continues_it_and_removes_nothing(tmp_path):
    results = str(tmp_path / "results")
    run_dir = os.path.join(results, "chaos")
    old_events = os.path.join(run_dir, "T0", "events.out.tfevents.1.oldhost.1.0")
    user_file = os.path.join(run_dir, "checkpoints", "model.pt")
    for path, data in ((old_events, b"\x00" * 16), (user_file, b"weights")):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
    an_hour_ago = time.time() - 3600
    os.utime(old_events, (an_hour_ago, an_hour_ago))
    with chaos_run(tmp_path, BUILT_INS) as run:
        run.start_trainers(1, steps=5, per_step=2)
        run.finish_trainers()
        run.wait_caught_up(BUILT_INS)
    assert os.path.exists(old_events), "an event file of the run's past was deleted"
    with open(user_file, "rb") as handle:
        assert handle.read() == b"weights"
    assert len(event_files(run_dir)) == 2


# --- --force: the one way to start over ---------------------------------------------------------------


def _statbus(*args, env=None, timeout=120):
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = REPO + os.pathsep + environment.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "statbus.pipeline.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=environment,
    )


def test_collector_start_force_clears_the_run_outputs_and_nothing_else(tmp_path):
    results = str(tmp_path / "results")
    layout = RunLayout(results, "r")
    first = CollectorProcess(results, "r", extra=["--plugins", "jsonl,tensorboard"])
    try:
        first.start()
        old = read_identity(layout)
    finally:
        first.terminate()
        first.close()
    outputs = [
        os.path.join(layout.run_dir, "stats.jsonl"),
        os.path.join(layout.run_dir, "run_logs", "timers.json"),
        os.path.join(layout.run_dir, "run_logs", "console_writer.json"),
        os.path.join(layout.run_dir, "3DBall", "events.out.tfevents.1.host.1.0"),
        os.path.join(layout.statbus_dir, "consumers", "jsonl.state"),
        os.path.join(layout.statbus_dir, "dead-letter", "jsonl.jsonl"),
    ]
    kept = [os.path.join(layout.run_dir, "checkpoints", "model.pt"), os.path.join(layout.run_dir, "notes.txt")]
    marker = b"an output of the earlier run"
    for path in outputs + kept:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(marker)
    assert os.listdir(layout.journal_dir)
    started = _statbus("collector", "start", "--run-id", "r", "--results-dir", results, "--plugins", "jsonl", "--force")
    try:
        assert started.returncode == 0, started.stderr
        new = read_identity(layout)
        assert new["start_time"] > old["start_time"]
        for path in outputs:  # gone (the new run's jsonl writer may have made a new one of some)
            assert not os.path.exists(path) or marker not in read_bytes(path), f"{path} survived --force"
        for path in kept:
            assert os.path.exists(path), f"{path} is not the run's output and was removed"
        assert os.path.exists(layout.log_file)
    finally:
        stopped = _statbus("collector", "stop", "--run-id", "r", "--results-dir", results)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    # and a start without --force continues the forced run
    again = CollectorProcess(results, "r")
    try:
        again.start()
        assert read_identity(layout) == new
    finally:
        again.terminate()
        again.close()


def test_establish_keeps_continues_and_forces(tmp_path):
    layout = RunLayout(str(tmp_path), "r")
    clock = iter([100.0, 200.0, 300.0]).__next__
    first = establish(layout, clock=clock)
    assert (first.start_time, first.continued, first.forced) == (100.0, False, False)
    again = establish(layout, clock=clock)
    assert (again.start_time, again.continued) == (100.0, True)
    options = again.run_options(layout)
    assert options.start_time == 100.0 and options.resume and not options.checkpoint_settings.force
    # STATBUS_FORCE of a training that began before the run: this run is that training's; continue.
    assert establish(layout, force_before=90.0, clock=clock).start_time == 100.0
    # ... of a training that began after it: start over.
    forced = establish(layout, force_before=150.0, clock=clock)
    assert (forced.start_time, forced.continued, forced.forced) == (200.0, False, True)
    assert forced.run_options(layout).checkpoint_settings.force
    assert establish(layout, force=True, clock=clock).start_time == 300.0


def test_a_damaged_identity_is_refused_with_what_to_do(tmp_path):
    layout = RunLayout(str(tmp_path), "r")
    os.makedirs(layout.statbus_dir)
    with open(identity_path(layout), "w", encoding="utf-8") as handle:
        handle.write("{not json")
    with pytest.raises(ConfigError, match="--force"):
        establish(layout)
    with open(identity_path(layout), encoding="utf-8") as handle:
        assert handle.read() == "{not json"  # not rewritten


def test_statbus_force_is_shared_with_the_processes_a_trainer_starts():
    env = {"STATBUS_FORCE": "1"}
    moment = force_before(env)
    assert moment is not None and env["STATBUS_FORCE"] == repr(moment)
    assert force_before(env) == moment  # a child process reads the same moment
    assert on_demand_arguments(env) == ["--on-demand", "--force-before", repr(moment)]
    assert force_before({"STATBUS_FORCE": "0"}) is None and force_before({}) is None
    assert on_demand_arguments({}) == ["--on-demand"]
    assert on_demand_arguments({"STATBUS_CONFIG": "plugins.toml"}) == [
        "--on-demand", "--config", os.path.abspath("plugins.toml")]


def test_a_trainer_shares_its_start_with_its_children_when_it_reads_its_configuration(monkeypatch):
    monkeypatch.setenv("STATBUS_FORCE", "1")
    build_config()
    moment = float(os.environ["STATBUS_FORCE"])
    assert moment <= time.time()
    build_config()
    assert float(os.environ["STATBUS_FORCE"]) == moment


ON_DEMAND_TRAINER = r"""
import json, os, sys
from statbus.pipeline import StatsReporter, flush, shutdown
reporter = StatsReporter("Cat")
step = int(sys.argv[1])
reporter.add_stat("v", float(step))
reporter.write_stats(step)
ok = flush(60)
shutdown()
print(json.dumps({"flushed": ok, "force": os.environ.get("STATBUS_FORCE")}), flush=True)
"""


def test_statbus_force_starts_an_on_demand_run_over_once(tmp_path):
    layout = RunLayout(str(tmp_path / "results"), "od")
    earlier = CollectorProcess(layout.results_dir, "od")
    try:
        earlier.start()
        old = read_identity(layout)
    finally:
        earlier.terminate()
        earlier.close()
    old_events = os.path.join(layout.run_dir, "Cat", "events.out.tfevents.1.host.1.0")
    os.makedirs(os.path.dirname(old_events))
    with open(old_events, "wb") as handle:
        handle.write(b"old")
    env = dict(os.environ, STATBUS_RUN_ID="od", STATBUS_RESULTS_DIR=layout.results_dir, STATBUS_IDLE_EXIT="0.5",
               STATBUS_FORCE="1", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    def trainer(step: int, environment) -> dict:
        done = subprocess.run([sys.executable, "-c", ON_DEMAND_TRAINER, str(step)], env=environment,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["flushed"], done.stderr
        return report

    def collector_gone() -> bool:
        return running_pid(layout.pid_file) is None

    pids = []
    try:
        first = trainer(1, env)
        pids.append(read_pid(layout.pid_file))
        forced = read_identity(layout)
        assert forced["start_time"] > old["start_time"] and not os.path.exists(old_events)
        wait_for(collector_gone, 60, what="the on-demand collector's idle exit")
        # A process the training starts later inherits the training's moment: its on-demand
        # start (after the idle exit) continues the forced run.
        assert first["force"] not in (None, "1")
        trainer(2, dict(env, STATBUS_FORCE=first["force"]))
        assert read_identity(layout) == forced
        wait_for(collector_gone, 60, what="the second on-demand collector's idle exit")
        steps = [step for c, step, _ in stats_jsonl_summaries(os.path.join(layout.run_dir, "stats.jsonl")) if c == "Cat"]
        assert steps == [1, 2]
    finally:
        end_daemon(layout)


def test_force_knows_the_built_in_writers_file_names():
    from statbus.pipeline.collector.lifecycle.identity import EVENT_FILE_PREFIX, RUN_OUTPUT_FILES
    from statbus.plugins.writers import console, event_file, gauges, jsonl

    assert set(RUN_OUTPUT_FILES) == {
        jsonl.FILE_NAME, os.path.join("run_logs", gauges.FILE_NAME), os.path.join("run_logs", console.STATE_FILE_NAME)}
    assert EVENT_FILE_PREFIX.startswith(event_file.EVENT_FILE_PREFIX)
