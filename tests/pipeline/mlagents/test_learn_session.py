"""The collector ``statbus learn`` starts: its arguments and environment (logic only, no process)."""

from __future__ import annotations

import json
import time
import types

import pytest

from statbus.pipeline.__main__ import select_plugins
from statbus.pipeline.collector.lifecycle.daemon import Started
from statbus.pipeline.control import control_request
from statbus.pipeline.layout import RunLayout
from statbus.pipeline.mlagents import session
from statbus.plugins import PluginInfo, RunOptions, discover_plugins

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
