"""Plugins that are off until asked for (the tracker writers): who turns them on, and a missing library."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from statbus.plugins.discovery import PluginInfo
from statbus.plugins.groups import ML_AGENTS_STATS_WRITER, STATBUS_STATS_WRITER
from statbus.plugins.opt_in import OPT_IN_PLUGINS, OptIn
from statbus.workers.supervision.config import load_config, load_plugin_config

PLUGINS = [PluginInfo(STATBUS_STATS_WRITER, name, f"m:{name}", "statbus", "0") for name in ("jsonl", "wandb", "mlflow")]


def enabled(config, names=("jsonl", "wandb", "mlflow")):
    return {name: config.for_plugin(name).enabled for name in names}


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "statbus.toml"
    path.write_text(text)
    return str(path)


def test_off_by_default_and_the_default_table_cannot_turn_them_on(tmp_path: Path) -> None:
    assert enabled(load_plugin_config(PLUGINS, environ={})) == {"jsonl": True, "wandb": False, "mlflow": False}
    path = write(tmp_path, "[plugins.default]\nenabled = true\nmemory_cap_mb = 300\n")
    config = load_plugin_config(PLUGINS, path, environ={})
    assert enabled(config) == {"jsonl": True, "wandb": False, "mlflow": False}
    assert config.for_plugin("wandb").memory_cap_mb == 300  # every other default setting applies


def test_one_line_turns_each_on(tmp_path: Path) -> None:
    path = write(tmp_path, "[plugins.wandb]\nenabled = true\n")
    assert enabled(load_plugin_config(PLUGINS, path, environ={})) == {"jsonl": True, "wandb": True, "mlflow": False}
    assert enabled(load_plugin_config(PLUGINS, environ={"STATBUS_MLFLOW": "1"})) == {"jsonl": True, "wandb": False, "mlflow": True}
    assert enabled(load_plugin_config(PLUGINS, overrides={"wandb": {"enabled": True}}, environ={}))["wandb"]
    assert enabled(load_plugin_config(PLUGINS, environ={}, named=["wandb"]))["wandb"]


def test_the_environment_ranks_above_the_file_and_below_set(tmp_path: Path) -> None:
    path = write(tmp_path, "[plugins.wandb]\nenabled = true\n[plugins.mlflow]\nenabled = false\n")
    config = load_plugin_config(PLUGINS, path, environ={"STATBUS_WANDB": "0", "STATBUS_MLFLOW": "yes"})
    assert enabled(config) == {"jsonl": True, "wandb": False, "mlflow": True}
    config = load_plugin_config(PLUGINS, path, overrides={"mlflow": {"enabled": False}}, environ={"STATBUS_MLFLOW": "1"})
    assert not config.for_plugin("mlflow").enabled
    # An unreadable value decides nothing.
    assert not load_plugin_config(PLUGINS, environ={"STATBUS_WANDB": "maybe"}).for_plugin("wandb").enabled


def test_only_statbus_s_own_plugins_of_those_names_are_off() -> None:
    theirs = [PluginInfo(ML_AGENTS_STATS_WRITER, "wandb", "their:wandb", "their-dist", "1")]
    assert load_plugin_config(theirs, environ={}).for_plugin("wandb").enabled
    assert load_config(None).for_plugin("wandb").enabled  # the plain loader knows no plugin names


def test_enabled_without_its_library_says_what_to_install_in_one_line(monkeypatch, caplog) -> None:
    monkeypatch.setitem(OPT_IN_PLUGINS, "wandb", OptIn("STATBUS_WANDB", "wandb", ("statbus_no_such_module_xyz",)))
    with caplog.at_level(logging.ERROR):
        config = load_plugin_config(PLUGINS, environ={"STATBUS_WANDB": "1", "STATBUS_MLFLOW": "1"})
    assert enabled(config) == {"jsonl": True, "wandb": False, "mlflow": True}
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert lines == ["plugin wandb is enabled but statbus_no_such_module_xyz is not installed: "
                     "pip install 'statbus[wandb]' (the other plugins run)"]


@pytest.mark.parametrize("interpreter", ["/opt/other/bin/python"])
def test_a_plugin_with_its_own_interpreter_is_not_checked_here(tmp_path: Path, monkeypatch, interpreter: str) -> None:
    monkeypatch.setitem(OPT_IN_PLUGINS, "wandb", OptIn("STATBUS_WANDB", "wandb", ("statbus_no_such_module_xyz",)))
    path = write(tmp_path, f'[plugins.wandb]\nenabled = true\ninterpreter = "{interpreter}"\n')
    assert load_plugin_config(PLUGINS, path, environ={}).for_plugin("wandb").enabled
