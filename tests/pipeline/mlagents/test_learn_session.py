"""The collector ``statbus learn`` starts: its arguments and environment, and its life beside the training."""

from __future__ import annotations

import json
import os
import time
import types
import warnings

import psutil
import pytest

from statbus.pipeline.__main__ import select_plugins
from statbus.pipeline.collector.lifecycle.daemon import Started, ensure_running
from statbus.pipeline.collector.lifecycle.pidfile import running_pid
from statbus.pipeline.control import control_request
from statbus.pipeline.layout import RunLayout
from statbus.pipeline.mlagents import session
from statbus.pipeline.trainer import reporter
from statbus.plugins import RunOptions
from statbus.plugins.discovery import PluginInfo, discover_plugins

from collector_helpers import end_daemon
from waiting import holds_for, wait_for
from zoo import zoo_env, zoo_plugins


def _options(force: bool, resume: bool) -> types.SimpleNamespace:
    checkpoint = types.SimpleNamespace(run_id="r", results_dir="res", resume=resume, force=force, initialize_from=None)
    as_dict = {"behaviors": {"Target": {"summary_freq": 500}}, "env_settings": {"seed": 7},
               "checkpoint_settings": {"run_id": "r"}}
    return types.SimpleNamespace(checkpoint_settings=checkpoint, debug=False, as_dict=lambda: as_dict)


@pytest.fixture
def started(monkeypatch):
    calls = []

    def ensure_running(layout, extra=(), timeout=30.0, env=None):
        calls.append({"layout": layout, "extra": list(extra), "env": env})
        return Started(4242, layout.data_address)

    monkeypatch.setattr(session, "ensure_running", ensure_running)
    monkeypatch.delenv(session.ENV_FORCE, raising=False)
    return calls


@pytest.mark.parametrize("force", [True, False])
def test_force_reaches_the_collector_as_statbus_force(tmp_path, started, force):
    layout = RunLayout(str(tmp_path), "r")
    options = _options(force=force, resume=False)
    collector = session.CollectorSession(layout)
    collector.start(session.plugin_run_options(options, start_time=12.5), force=force)
    (call,) = started
    # STATBUS_FORCE=1, turned into this training's start (identity's on-demand force): the
    # collector starts the run over unless it began since (a restart of this very run).
    assert ("--force-before" in call["extra"]) is force
    assert (session.ENV_FORCE in call["env"]) is force
    assert call["extra"][:1] == ["--on-demand"]
    # The training's own collector yields the CPU to it (its workers lower still).
    assert call["extra"][call["extra"].index("--nice") + 1] == str(session.COLLECTOR_NICE)
    assert collector.ours and collector.pid == 4242


def test_mlagents_default_writers_are_replaced_unless_named():
    found = [
        PluginInfo("statbus.stats_writer", "tensorboard", "m:f", "statbus", "0"),
        PluginInfo("mlagents.stats_writer", "default", "mlagents.plugins.stats_writer:get_default_stats_writers",
                   "mlagents", "1.1.0"),
        PluginInfo("mlagents.stats_writer", "example", "e:f", "example", "0"),
    ]
    assert [p.name for p in select_plugins(found, [], [])] == ["tensorboard", "example"]
    assert [p.name for p in select_plugins(found, ["default"], [])] == ["default"]


def test_plugins_get_the_mlagents_options_through_statbus_run_options(tmp_path, started):
    layout = RunLayout(str(tmp_path), "r")
    collector = session.CollectorSession(layout)
    collector.start(session.plugin_run_options(_options(force=False, resume=True), start_time=12.5), force=False)
    path = started[0]["extra"][started[0]["extra"].index("--run-options") + 1]
    with open(path, encoding="utf-8") as handle:
        options = RunOptions.from_dict(json.load(handle))
    assert options.resume and options.start_time == 12.5
    assert options.behaviors == {"Target": {"summary_freq": 500}}
    assert options.mlagents_options["env_settings"] == {"seed": 7}


def test_import_statbus_pipeline_imports_no_mlagents_nor_torch():
    import subprocess
    import sys

    code = "import sys, statbus.pipeline; print(sorted(m for m in ('mlagents', 'torch', 'mlagents_envs') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert callable(__import__("statbus.pipeline", fromlist=["learn"]).learn)


def test_training_waits_until_no_worker_is_still_starting(tmp_path, monkeypatch):
    # A real collector of the run with three plugins: jsonl and the zoo's good plugin come up,
    # register_raises exits at registration; none of them may still be STARTING once the wait ends.
    kept = {"jsonl", "good", "register_raises"}
    # ([plugins.default] would be the settings of every plugin; ML-Agents' `default` is left out anyway.)
    found = ({p.name for p in discover_plugins()} | set(zoo_plugins())) - {"default"}
    settings = tmp_path / "plugins.toml"
    settings.write_text("".join(f"[plugins.{name}]\nenabled = false\n\n" for name in sorted(found - kept)))
    for name, value in zoo_env(STATBUS_CONFIG=str(settings)).items():
        monkeypatch.setenv(name, value)
    layout = RunLayout(str(tmp_path / "results"), "ready")
    checkpoint = types.SimpleNamespace(run_id="ready", results_dir=layout.results_dir, resume=False, force=False,
                                       initialize_from=None)
    options = types.SimpleNamespace(checkpoint_settings=checkpoint, debug=False, as_dict=lambda: {})
    collector = session.CollectorSession(layout)
    collector.start(session.plugin_run_options(options, start_time=time.time()), force=False)
    try:
        assert collector.ours
        assert collector.wait_for_workers()
        plugins = control_request(layout.control_address, {"op": "status"})["plugins"]
        states = {p["name"]: p["state"] for p in plugins if p["enabled"]}
        assert set(states) == kept
        assert states["jsonl"] == states["good"] == "READY"
        assert states["register_raises"] != "STARTING"
    finally:
        assert collector.stop(timeout=20)


def _only_jsonl(tmp_path, monkeypatch, **extra: str) -> None:
    """This process's environment: the run's collectors run the jsonl plugin alone."""
    others = sorted({p.name for p in discover_plugins()} - {"jsonl", "default"})
    settings = tmp_path / "plugins.toml"
    settings.write_text("".join(f"[plugins.{name}]\nenabled = false\n\n" for name in others))
    monkeypatch.setenv("STATBUS_CONFIG", str(settings))
    for name, value in extra.items():
        monkeypatch.setenv(name, value)


def _bare_options(layout: RunLayout) -> types.SimpleNamespace:
    checkpoint = types.SimpleNamespace(run_id=layout.run_id, results_dir=layout.results_dir, resume=False,
                                       force=False, initialize_from=None)
    return types.SimpleNamespace(checkpoint_settings=checkpoint, debug=False, as_dict=lambda: {})


def test_the_collector_waits_for_a_training_that_is_slow_to_send_its_first_stat(tmp_path, monkeypatch):
    # ML-Agents builds its environment and trainers between starting statbus and its first
    # stat; on a slow host that took longer than an on-demand collector's idle period, the
    # collector left, and every stat of the training had nowhere to go.
    _only_jsonl(tmp_path, monkeypatch, STATBUS_IDLE_EXIT="0.3")
    layout = RunLayout(str(tmp_path / "results"), "slow")
    collector = session.CollectorSession(layout)
    try:
        collector.start(session.plugin_run_options(_bare_options(layout), start_time=time.time()), force=False)
        assert collector.ours
        # No stat, no trainer; the launcher (this process) still runs: the collector stays.
        holds_for(lambda: running_pid(layout.pid_file) == collector.pid, 3.0, "the collector stays up")
    finally:
        stopped = collector.stop(timeout=20)
        end_daemon(layout)
    assert stopped
    # Without an owner the same collector leaves within its idle period (what the owner prevents).
    other = RunLayout(str(tmp_path / "results"), "ownerless")
    try:
        started = ensure_running(other, extra=["--on-demand"])
        wait_for(lambda: running_pid(other.pid_file) is None, timeout=30, what="the ownerless collector to idle out")
        assert started.pid not in {running_pid(other.pid_file)}
    finally:
        end_daemon(other)


def test_a_collector_that_dies_during_training_is_started_again_and_nothing_is_lost(tmp_path, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mlagents 1.1.0's protos and pkg_resources import warn here
        from statbus.pipeline.mlagents.launcher import LearnSession

    _only_jsonl(tmp_path, monkeypatch, STATBUS_IDLE_EXIT="1")
    layout = RunLayout(str(tmp_path / "results"), "crash")
    learn = LearnSession()
    try:
        (writer,) = learn.register_stats_writer_plugins(_bare_options(layout))
        first = learn.collector.pid

        def summary(step: int) -> None:
            writer.on_add_stat("Target", "Policy/Entropy", float(step))
            writer.write_stats("Target", {}, step)

        for step in (10, 20, 30):
            summary(step)
        assert reporter.flush(20)
        # The collector and its workers die at once, as in an OOM kill; its sockets stay behind.
        family = psutil.Process(first).children(recursive=True) + [psutil.Process(first)]
        for process in family:
            process.kill()
        psutil.wait_procs(family, timeout=10)
        for step in (40, 50, 60):
            summary(step)
        # The training's client starts the run's collector again, as statbus learn started it.
        assert reporter.flush(60)
        second = running_pid(layout.pid_file)
        assert second not in (None, first)
        command = psutil.Process(second).cmdline()
        assert command[command.index("--owner-pid") + 1] == str(os.getpid())
        assert "--run-options" in command and "--force-before" not in command
        learn.close()
        assert running_pid(layout.pid_file) is None  # close() waited for the new collector
    finally:
        reporter.shutdown(0)
        end_daemon(layout)
    with open(os.path.join(layout.run_dir, "stats.jsonl"), encoding="utf-8") as handle:
        steps = [json.loads(line).get("step") for line in handle]
    assert steps == [10, 20, 30, 40, 50, 60]
