"""The `statbus` commands as a user runs them: a real detached daemon, real trainers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Dict, Iterator, List

import psutil
import pytest

from collector_helpers import REPO, end_daemon, wait_for
from statbus.pipeline.collector.lifecycle.pidfile import running_pid
from statbus.pipeline.layout import RunLayout
from waiting import holds_for

PLUGINS = "console,jsonl,gauges"


def statbus(*args: str, env: Dict[str, str] | None = None, timeout: float = 90.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "statbus.pipeline.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


@pytest.fixture
def layout(tmp_path) -> Iterator[RunLayout]:
    run = RunLayout(str(tmp_path / "results"), "cli")
    try:
        yield run
    finally:
        end_daemon(run)


def run_args(layout: RunLayout) -> List[str]:
    return ["--run-id", layout.run_id, "--results-dir", layout.results_dir]


def start(layout: RunLayout, *extra: str, env: Dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return statbus("collector", "start", *run_args(layout), "--plugins", PLUGINS, *extra, env=env)


def status(layout: RunLayout) -> Dict:
    result = statbus("status", *run_args(layout), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def plugin(status_reply: Dict, name: str) -> Dict:
    return next(p for p in status_reply["plugins"] if p["name"] == name)


TRAINER = """
import sys
from statbus.pipeline import StatsReporter, flush, shutdown
reporter = StatsReporter("Cat")
for i in range(int(sys.argv[1])):
    reporter.add_stat("v", float(i))
if sys.argv[2] == "write":
    reporter.write_stats(1)
ok = flush(60)
shutdown()
sys.exit(0 if ok else 3)
"""


def read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def trainer_env(layout: RunLayout, **extra: str) -> Dict[str, str]:
    return dict(os.environ, STATBUS_RUN_ID=layout.run_id, STATBUS_RESULTS_DIR=layout.results_dir, **extra)


def test_start_status_stop(layout) -> None:
    result = start(layout)
    assert result.returncode == 0, result.stderr
    pid = running_pid(layout.pid_file)
    assert pid is not None and f"pid:     {pid}" in result.stdout
    assert layout.data_address in result.stdout
    wait_for(lambda: all(p["state"] == "READY" for p in status(layout)["plugins"]), timeout=60, what="workers ready")
    reply = status(layout)
    assert reply["run_id"] == "cli" and reply["pid"] == pid and reply["on_demand"] is False
    assert sorted(p["name"] for p in reply["plugins"]) == sorted(PLUGINS.split(","))
    for entry in reply["plugins"]:
        assert {"state", "restarts", "lag_records", "pid", "last_error"} <= set(entry)
    human = statbus("status", *run_args(layout))
    assert human.returncode == 0 and "plugins (3)" in human.stdout and "jsonl" in human.stdout

    trainer = subprocess.run([sys.executable, "-c", TRAINER, "100", "write"], env=trainer_env(layout), timeout=90)
    assert trainer.returncode == 0
    stopped = statbus("collector", "stop", *run_args(layout))
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert running_pid(layout.pid_file) is None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    # Graceful: the plugins caught up before the collector left.
    with open(os.path.join(layout.run_dir, "stats.jsonl"), encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    assert [(line["category"], line["step"], line["values"]["v"]["num"]) for line in lines] == [("Cat", 1, 100)]
    again = statbus("collector", "stop", *run_args(layout))
    assert again.returncode == 0 and "no collector is running" in again.stdout


def test_set_overrides_a_plugin_setting_and_watch_refreshes_until_interrupted(layout) -> None:
    assert start(layout, "--set", "gauges.enabled=false").returncode == 0
    wait_for(lambda: plugin(status(layout), "jsonl")["state"] == "READY", timeout=60, what="jsonl ready")
    assert plugin(status(layout), "gauges")["state"] == "DISABLED"
    watch = subprocess.Popen(
        [sys.executable, "-m", "statbus.pipeline.cli", "status", *run_args(layout), "--watch", "--interval", "0.1"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert watch.stdout is not None
        seen = ""
        while seen.count("\x1b[2J") < 3:
            seen += watch.stdout.read(1)
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=30) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        watch.stdout.close()
    assert "plugins (3)" in seen and "DISABLED" in seen


def test_start_twice_is_refused_with_the_running_pid(layout) -> None:
    assert start(layout).returncode == 0
    pid = running_pid(layout.pid_file)
    second = start(layout)
    assert second.returncode == 75  # ExitCode.ALREADY_RUNNING: a script can tell it from a failure
    assert "already running" in second.stderr and str(pid) in second.stderr
    assert running_pid(layout.pid_file) == pid


def test_stale_pidfile_after_kill_9_does_not_block_a_new_start(layout) -> None:
    assert start(layout).returncode == 0
    first = running_pid(layout.pid_file)
    end_daemon(layout)
    assert os.path.exists(layout.pid_file)  # the file stays; its lock died with the process
    assert running_pid(layout.pid_file) is None
    result = start(layout)
    assert result.returncode == 0, result.stderr
    assert running_pid(layout.pid_file) not in (None, first)


def test_bad_config_and_unknown_plugin_fail_with_the_reason(layout, tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[plugins.jsonl]\nmemory_cap_mb = 'lots'\n")
    result = start(layout, "--config", str(bad))
    assert result.returncode != 0
    assert "memory_cap_mb" in result.stderr
    result = statbus("collector", "start", *run_args(layout), "--plugins", "no-such-plugin")
    assert result.returncode != 0 and "no-such-plugin" in result.stderr
    assert running_pid(layout.pid_file) is None


def test_restart_disable_enable_one_plugin_leaves_the_others_alone(layout) -> None:
    assert start(layout).returncode == 0
    wait_for(lambda: all(p["state"] == "READY" for p in status(layout)["plugins"]), timeout=60, what="workers ready")
    before = {p["name"]: p["pid"] for p in status(layout)["plugins"]}
    result = statbus("restart", "jsonl", *run_args(layout))
    assert result.returncode == 0, result.stderr
    wait_for(lambda: (lambda p: p["state"] == "READY" and p["pid"] != before["jsonl"])(plugin(status(layout), "jsonl")),
             timeout=60, what="jsonl restarted")
    after = {p["name"]: p["pid"] for p in status(layout)["plugins"]}
    assert after["console"] == before["console"] and after["gauges"] == before["gauges"]

    assert statbus("disable", "gauges", *run_args(layout)).returncode == 0
    wait_for(lambda: plugin(status(layout), "gauges")["state"] == "DISABLED", timeout=30, what="gauges disabled")
    assert statbus("enable", "gauges", *run_args(layout)).returncode == 0
    wait_for(lambda: plugin(status(layout), "gauges")["state"] == "READY", timeout=60, what="gauges enabled")
    unknown = statbus("restart", "nope", *run_args(layout))
    assert unknown.returncode != 0 and "nope" in unknown.stderr


def test_on_demand_start_raced_by_8_trainers_gives_one_collector_that_idles_out(layout) -> None:
    env = trainer_env(layout, STATBUS_IDLE_EXIT="1")
    trainers = [subprocess.Popen([sys.executable, "-c", TRAINER, "50", "no"], env=env) for _ in range(8)]
    try:
        codes = [t.wait(timeout=120) for t in trainers]
    finally:
        for t in trainers:
            if t.poll() is None:
                t.kill()
                t.wait()
    assert codes == [0] * 8  # every trainer's values were acknowledged
    log = read_text(layout.log_file)
    assert log.count("statbus collector ready") == 1, log
    # Nobody stops it: every trainer said goodbye, so it leaves by itself.
    wait_for(lambda: running_pid(layout.pid_file) is None, timeout=60, what="on-demand collector to exit")
    assert "on-demand collector" in read_text(layout.log_file)


def test_statbus_config_sets_up_the_plugins_of_a_collector_started_on_demand(layout, tmp_path) -> None:
    settings = tmp_path / "plugins.toml"
    settings.write_text("[plugins.tensorboard]\nenabled = false\n")
    env = trainer_env(layout, STATBUS_IDLE_EXIT="1", STATBUS_CONFIG=str(settings))
    trainer = subprocess.run([sys.executable, "-c", TRAINER, "10", "write"], env=env, timeout=90)
    assert trainer.returncode == 0
    wait_for(lambda: running_pid(layout.pid_file) is None, timeout=60, what="on-demand collector to exit")
    # jsonl wrote the summary; tensorboard, disabled by the file, never ran.
    with open(os.path.join(layout.run_dir, "stats.jsonl"), encoding="utf-8") as handle:
        assert [json.loads(line)["step"] for line in handle] == [1]
    assert not any(name.startswith("events.out") for _, _, files in os.walk(layout.run_dir) for name in files)
    assert not os.path.exists(os.path.join(layout.statbus_dir, "logs", "tensorboard.log"))


def test_a_scripted_collector_does_not_idle_out(layout) -> None:
    env = dict(os.environ, STATBUS_IDLE_EXIT="0.5")
    assert start(layout, env=env).returncode == 0
    pid = running_pid(layout.pid_file)
    trainer = subprocess.run([sys.executable, "-c", TRAINER, "10", "write"], env=trainer_env(layout), timeout=90)
    assert trainer.returncode == 0
    wait_for(lambda: status(layout)["trainers"] and all(t["bye"] for t in status(layout)["trainers"]),
             timeout=30, what="the trainer's goodbye")
    # Several idle periods later it still serves.
    holds_for(lambda: running_pid(layout.pid_file) == pid, 3.0, "the collector keeps running", interval=0.2)


def test_operator_scripts_start_and_stop(layout) -> None:
    env = dict(
        os.environ,
        STATBUS_RUN_ID=layout.run_id,
        STATBUS_RESULTS_DIR=layout.results_dir,
        STATBUS_PLUGINS="jsonl",
        STATBUS=f"{sys.executable} -m statbus.pipeline.cli",
    )
    started = subprocess.run(["bash", os.path.join(REPO, "scripts", "start-collector")],
                             env=env, capture_output=True, text=True, timeout=90)
    assert started.returncode == 0, started.stderr
    assert running_pid(layout.pid_file) is not None
    assert [p["name"] for p in status(layout)["plugins"]] == ["jsonl"]
    stopped = subprocess.run(["bash", os.path.join(REPO, "scripts", "stop-collector")],
                             env=env, capture_output=True, text=True, timeout=90)
    assert stopped.returncode == 0, stopped.stderr
    assert running_pid(layout.pid_file) is None


def test_sigterm_stops_gracefully(layout) -> None:
    assert start(layout).returncode == 0
    pid = running_pid(layout.pid_file)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: running_pid(layout.pid_file) is None, timeout=60, what="collector to stop on SIGTERM")
    assert "graceful stop" in read_text(layout.log_file)


def test_demo_end_to_end(tmp_path) -> None:
    results = tmp_path / "results"
    result = statbus("demo", "--results-dir", str(results), "--run-id", "demo", "--duration", "6",
                     "--env-workers", "2", "--crash-every", "2000", timeout=240)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "nothing was lost." in result.stdout
        assert "[FAILED]" not in result.stdout
        assert f"tensorboard --logdir {results / 'demo'}" in result.stdout
    finally:
        end_daemon(RunLayout(str(results), "demo"))
