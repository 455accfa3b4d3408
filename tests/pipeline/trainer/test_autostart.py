"""The on-demand collector: every trainer client starts its run's collector again whenever none serves it.

The keeper's policy (when to look, backoff, what is said) runs on given times; the rest runs
real collectors, SIGKILLed as the OOM killer would, and real trainer processes racing to
bring one back.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from typing import Dict, List

import psutil
import pytest

import statbus.pipeline as sp
from statbus.pipeline import StatsReporter
from statbus.pipeline.collector.lifecycle.daemon import ensure_running, wait_for_exit
from statbus.pipeline.collector.lifecycle.pidfile import running_pid
from statbus.pipeline.control import control_request
from statbus.pipeline.layout import RunLayout
from statbus.pipeline.trainer import autostart, sender
from statbus.pipeline.trainer.autostart import (
    RESTART_AFTER,
    RESTART_BACKOFF_MAX,
    CollectorKeeper,
    Ensured,
    Outcome,
    ensure_collector,
    on_demand_arguments,
)
from statbus.pipeline.trainer.config import build_config
from statbus.plugins.discovery import discover_plugins

from chaos_helpers import tensorboard_steps
from collector_helpers import end_daemon
from waiting import wait_for

# --- the keeper's policy, on given times ----------------------------------------------


def test_a_live_collector_is_looked_at_again_every_second_and_never_started_over():
    keeper = CollectorKeeper("r")
    assert keeper.due(0.0)
    keeper.record(Ensured(Outcome.ALIVE), 0.0)
    assert not keeper.due(RESTART_AFTER - 0.01) and keeper.due(RESTART_AFTER)
    for second in range(1, 100):
        keeper.record(Ensured(Outcome.ALIVE), float(second))
        assert keeper.due(second + RESTART_AFTER)  # busy for minutes: no backoff, no start
    assert keeper.starts == 0


def test_starts_without_acks_back_off_and_an_ack_starts_over():
    keeper = CollectorKeeper("r")
    now, gaps = 0.0, []
    for _ in range(10):
        keeper.record(Ensured(Outcome.STARTED, 7), now)
        later = now
        while not keeper.due(later):
            later += 0.25
        gaps.append(later - now)
        now = later
    assert gaps[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert gaps[6:] == [RESTART_BACKOFF_MAX] * 4
    keeper.acked()
    assert keeper.due(now)
    keeper.record(Ensured(Outcome.STARTED, 8), now)
    assert keeper.due(now + RESTART_AFTER)
    assert keeper.starts == 11


def test_a_failed_start_is_said_once_per_episode(caplog):
    keeper = CollectorKeeper("r")
    with caplog.at_level(logging.DEBUG, logger=autostart.__name__):
        for now in (0.0, 1.0, 3.0, 7.0):
            keeper.record(Ensured(Outcome.FAILED, error="bad config: x.toml line 2"), now)
        keeper.acked()
        keeper.record(Ensured(Outcome.FAILED, error="disk full"), 20.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings
    assert "bad config: x.toml line 2" in warnings[0] and "Trying again in 1 s" in warnings[0]
    assert "answers again" in warnings[1]
    assert "disk full" in warnings[2]
    assert keeper.failures == 5


def test_not_ours_is_never_looked_at_again():
    keeper = CollectorKeeper("r")
    keeper.record(Ensured(Outcome.NOT_OURS), 0.0)
    assert not keeper.due(10_000.0)


def test_autostart_off_a_ray_run_or_a_foreign_address_is_not_ours(tmp_path):
    off = build_config("r", results_dir=str(tmp_path), autostart=False, environ={})
    foreign = build_config("r", results_dir=str(tmp_path), address="tcp://127.0.0.1:9", environ={})
    assert ensure_collector(off).outcome is Outcome.NOT_OURS
    assert ensure_collector(foreign).outcome is Outcome.NOT_OURS
    assert not os.path.exists(RunLayout(str(tmp_path), "r").statbus_dir)


def test_the_sender_asks_again_while_nothing_acks(tmp_path, monkeypatch):
    calls: List[float] = []

    def alive(config):
        calls.append(config.run_id)
        return Ensured(Outcome.ALIVE)

    monkeypatch.setattr(sender, "ensure_collector", alive)
    address = "ipc://" + os.path.join(str(tmp_path), "nobody")
    sp.configure(run_id="t", results_dir=str(tmp_path), address=address, autostart=True, linger=0.2)
    try:
        StatsReporter("Cat").add_stat("a", 1.0)
        wait_for(lambda: len(calls) >= 3, what="three looks at a silent (live) collector")
    finally:
        sp.shutdown(0.2)


# --- real collectors, killed ------------------------------------------------------------


def _plugins_only(tmp_path, monkeypatch, keep=("jsonl", "tensorboard")) -> str:
    """STATBUS_CONFIG for this process (and the collectors it starts): only ``keep`` run."""
    # "default" is ML-Agents' own writers: statbus leaves them out anyway, and [plugins.default] means every plugin.
    others = sorted({p.name for p in discover_plugins()} - {*keep, "default"})
    settings = tmp_path / "plugins.toml"
    settings.write_text("".join(f"[plugins.{name}]\nenabled = false\n\n" for name in others))
    monkeypatch.setenv("STATBUS_CONFIG", str(settings))
    monkeypatch.delenv("STATBUS_AUTOSTART", raising=False)
    return str(settings)


def _starts() -> tuple:
    """This process's collector starts and failed starts so far (earlier tests' clients included)."""
    counters = sp.client_counters()
    return counters.get("collector_starts", 0), counters.get("collector_start_failures", 0)


def _kill_collector(layout: RunLayout) -> int:
    """SIGKILL the run's collector and its workers at once, as the OOM killer would; its pid."""
    pid = running_pid(layout.pid_file)
    assert pid is not None
    collector = psutil.Process(pid)
    family = collector.children(recursive=True) + [collector]
    for process in family:
        process.kill()
    psutil.wait_procs(family, timeout=10)
    return pid


def _jsonl_steps(layout: RunLayout, category: str) -> List[int]:
    path = os.path.join(layout.run_dir, "stats.jsonl")
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [row["step"] for row in rows if row.get("category") == category]


def _stop_collector(layout: RunLayout) -> None:
    """Stop the run's collector as `statbus collector stop` does: once every plugin caught up and flushed."""
    pid = running_pid(layout.pid_file)
    assert pid is not None
    control_request(layout.control_address, {"op": "stop", "timeout": 60}, timeout=10)
    assert wait_for_exit(pid, 90), "the collector did not stop"


def test_a_killed_collector_is_started_again_by_its_trainer_and_nothing_is_lost(tmp_path, monkeypatch):
    _plugins_only(tmp_path, monkeypatch)
    layout = RunLayout(str(tmp_path / "results"), "killed")
    sp.configure(run_id=layout.run_id, results_dir=layout.results_dir, linger=5.0)
    reporter = StatsReporter("Cat")
    before = _starts()
    try:
        for step in (1, 2, 3):
            reporter.add_stat("reward", float(step))
            reporter.write_stats(step)
        assert sp.flush(60)  # started on demand, then acked
        first = _kill_collector(layout)
        for step in range(4, 11):
            reporter.add_stat("reward", float(step))
            reporter.write_stats(step)
        assert sp.flush(60)  # only a collector this client started again can ack these
        assert running_pid(layout.pid_file) not in (None, first)
        assert _starts() == (before[0] + 2, before[1])
        sp.shutdown(10)
        _stop_collector(layout)
    finally:
        sp.shutdown(1.0)
        end_daemon(layout)
    assert _jsonl_steps(layout, "Cat") == list(range(1, 11))
    shown, raw = tensorboard_steps(os.path.join(layout.run_dir, "Cat"), "reward")
    assert shown == raw == list(range(1, 11))


def test_a_summary_writer_brings_its_killed_collector_back(tmp_path, monkeypatch):
    _plugins_only(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    layout = RunLayout(str(tmp_path / "runs"), "exp")  # log_dir runs/exp/train: run "exp", category "train"
    writer = sp.SummaryWriter("runs/exp/train")
    try:
        for step in range(3):
            writer.add_scalar("loss", float(step), step)
        writer.flush()
        assert sp.flush(60)
        first = _kill_collector(layout)
        for step in range(3, 10):
            writer.add_scalar("loss", float(step), step)
        writer.flush()
        assert sp.flush(60)
        assert running_pid(layout.pid_file) not in (None, first)
        writer.close()
        sp.shutdown(10)
        _stop_collector(layout)
    finally:
        writer.close()
        sp.shutdown(1.0)
        end_daemon(layout)
    assert _jsonl_steps(layout, "train") == list(range(10))
    shown, raw = tensorboard_steps(os.path.join(layout.run_dir, "train"), "loss")
    assert shown == raw == list(range(10))


_RACER = textwrap.dedent("""
    import json, sys
    import statbus.pipeline as sp
    reporter = sp.StatsReporter("Race")
    reporter.add_stat("x", 1.0)
    ok = sp.flush(60)
    print("acked" if ok else "not acked", flush=True)
    sys.stdin.readline()  # the collector is killed meanwhile
    reporter.add_stat("x", 2.0)
    ok = sp.flush(90)
    print(json.dumps({"ok": ok, **sp.client_counters()}), flush=True)
    sp.shutdown(5)
""")


def test_sixteen_trainers_racing_after_a_kill_make_one_collector(tmp_path, monkeypatch):
    _plugins_only(tmp_path, monkeypatch, keep=("jsonl",))
    layout = RunLayout(str(tmp_path / "results"), "race")
    env = dict(os.environ, STATBUS_RUN_ID=layout.run_id, STATBUS_RESULTS_DIR=layout.results_dir)
    ensure_running(layout, extra=on_demand_arguments(env), env=env)  # as the first trainer would
    racers: List[subprocess.Popen] = []
    try:
        for _ in range(16):
            racers.append(subprocess.Popen([sys.executable, "-c", _RACER], env=env, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        assert [p.stdout.readline().strip() for p in racers] == ["acked"] * 16
        first = _kill_collector(layout)
        for process in racers:
            process.stdin.write("go\n")
            process.stdin.flush()
        reports: List[Dict] = [json.loads(p.stdout.readline()) for p in racers]
        for process in racers:
            assert process.wait(60) == 0, process.stderr.read()
        assert all(report["ok"] for report in reports)
        assert sum(report["collector_starts"] for report in reports) == 1
        assert running_pid(layout.pid_file) not in (None, first)
        with open(layout.log_file, encoding="utf-8") as handle:
            assert handle.read().count("statbus collector ready") == 2  # the first one and one more
    finally:
        for process in racers:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout, process.stderr):
                stream.close()
        end_daemon(layout)


_STARVED = textwrap.dedent("""
    import json, logging, sys, time
    import statbus.pipeline as sp
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    reporter = sp.StatsReporter("Cat")
    reporter.add_stat("x", 1.0)
    reporter.write_stats(1)
    deadline = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline:  # training goes on meanwhile
        reporter.add_stat("x", 2.0)
        time.sleep(0.01)  # paces the training, as a real step would
    print(json.dumps(sp.client_counters()), flush=True)
    sp.shutdown(0)
""")


def test_a_collector_that_cannot_start_is_retried_with_backoff_and_said_once(tmp_path):
    layout = RunLayout(str(tmp_path / "results"), "broken")
    bad = tmp_path / "bad.toml"
    bad.write_text("[plugins.jsonl\nenabled = ")
    env = dict(os.environ, STATBUS_RUN_ID=layout.run_id, STATBUS_RESULTS_DIR=layout.results_dir,
               STATBUS_CONFIG=str(bad))
    env.pop("STATBUS_AUTOSTART", None)
    result = subprocess.run([sys.executable, "-c", _STARVED, "9"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    counters = json.loads(result.stdout)
    said = [line for line in result.stderr.splitlines() if "could not start a collector" in line]
    assert len(said) == 1, result.stderr
    assert "bad.toml" in result.stderr  # what was wrong, from the collector's own error
    # Starts at about 1, 2, 4 and 8 s into the 9 s: retried, never in a tight loop.
    assert 2 <= counters["collector_start_failures"] <= 5, counters
    assert counters["collector_starts"] == 0 and running_pid(layout.pid_file) is None


def test_autostart_off_starts_nothing(tmp_path):
    layout = RunLayout(str(tmp_path / "results"), "off")
    env = dict(os.environ, STATBUS_RUN_ID=layout.run_id, STATBUS_RESULTS_DIR=layout.results_dir,
               STATBUS_AUTOSTART="0")
    result = subprocess.run([sys.executable, "-c", _STARVED, "3"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    counters = json.loads(result.stdout)
    assert counters["collector_starts"] == counters["collector_start_failures"] == 0
    # Nothing of a collector: the run folder holds only the spool the exiting trainer left.
    assert os.listdir(layout.run_dir) == ["statbus"] and os.listdir(layout.statbus_dir) == ["spool"]


def test_a_stalled_collector_is_waited_for_not_started_over(tmp_path, monkeypatch):
    _plugins_only(tmp_path, monkeypatch, keep=("jsonl",))
    layout = RunLayout(str(tmp_path / "results"), "stalled")
    sp.configure(run_id=layout.run_id, results_dir=layout.results_dir, linger=5.0)
    reporter = StatsReporter("Cat")
    before = _starts()
    collector = None
    try:
        reporter.add_stat("x", 1.0)
        assert sp.flush(60)
        collector = psutil.Process(running_pid(layout.pid_file))
        collector.suspend()  # alive, holding its pidfile lock, answering nothing: a busy or stuck collector
        reporter.add_stat("x", 2.0)
        reporter.write_stats(1)
        assert sp.flush(4) is False  # four looks at the lock while nothing acks
        assert _starts() == (before[0] + 1, before[1])  # the first start only; no second one even tried
        assert running_pid(layout.pid_file) == collector.pid
        collector.resume()
        assert sp.flush(60)
    finally:
        if collector is not None:
            collector.resume()
        sp.shutdown(1.0)
        end_daemon(layout)
