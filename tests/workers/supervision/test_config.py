"""Per-plugin settings from TOML and overrides; error messages name file, table and key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from statbus.plugins import ConfigError
from statbus.workers.supervision.config import Config, PluginSettings, load_config, parse_override, parse_overrides


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "statbus.toml"
    path.write_text(text)
    return str(path)


def test_no_file_gives_defaults() -> None:
    config = load_config(None)
    settings = config.for_plugin("anything")
    assert settings == PluginSettings()
    assert settings.enabled and settings.memory_cap_mb == 1024 and settings.call_timeout == 60.0
    assert settings.heartbeat_timeout == 3.0 and settings.options == {} and not settings.backfill
    assert settings.python == sys.executable


def test_plugin_table_over_default_table(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[plugins.default]
memory_cap_mb = 512
options = { a = 1, b = 2 }

[plugins.tensorboard]
enabled = false

[plugins."my.plugin"]
interpreter = "/opt/py/bin/python"
call_timeout = 120
options = { b = 3, c = "x" }
backfill = true

[collector]
fsync = "always"
""",
    )
    config = load_config(path)
    assert config.source == path
    assert config.for_plugin("tensorboard") == PluginSettings(enabled=False, memory_cap_mb=512, options={"a": 1, "b": 2})
    mine = config.for_plugin("my.plugin")
    assert mine.python == "/opt/py/bin/python"
    assert mine.call_timeout == 120 and mine.memory_cap_mb == 512 and mine.backfill
    assert mine.options == {"a": 1, "b": 3, "c": "x"}
    assert config.for_plugin("other") == config.default
    assert config.default.memory_cap_mb == 512
    assert config.extra == {"collector": {"fsync": "always"}}


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[plugins.jsonl]\nenabled = false\noptions = { x = 1 }\n")
    overrides = parse_overrides(
        ["jsonl.enabled=true", "jsonl.options.y=two", "default.call_timeout=5", "new.memory_cap_mb=64.5"]
    )
    config = load_config(path, overrides)
    jsonl = config.for_plugin("jsonl")
    assert jsonl.enabled and jsonl.options == {"x": 1, "y": "two"} and jsonl.call_timeout == 5
    assert config.for_plugin("new").memory_cap_mb == 64.5
    assert config.for_plugin("new").call_timeout == 5


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[plugins.tb]\nenabeld = true\n", ["[plugins.tb]", "'enabeld'", "enabled"]),
        ("[plugins.tb]\nenabled = 1\n", ["[plugins.tb]", "'enabled'", "true or false"]),
        ("[plugins.tb]\nmemory_cap_mb = -5\n", ["[plugins.tb]", "'memory_cap_mb'", "positive"]),
        ("[plugins.tb]\ncall_timeout = true\n", ["'call_timeout'"]),
        ("[plugins.tb]\noptions = 3\n", ["'options'", "table"]),
        ("[plugins.default]\nmax_restarts = 1.5\n", ["[plugins.default]", "'max_restarts'"]),
        ("[plugins.tb]\ninterpreter = ''\n", ["'interpreter'"]),
        ("plugins = 3\n", ["plugins"]),
        ("[plugins]\ntb = 3\n", ["[plugins.tb]", "table"]),
        ("[plugins.tb\n", ["invalid TOML"]),
    ],
)
def test_errors_name_file_table_and_key(tmp_path: Path, text: str, fragments: list) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert path in message
    for fragment in fragments:
        assert fragment in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(tmp_path / "nope.toml"))


def test_bad_override_values_are_reported() -> None:
    with pytest.raises(ConfigError, match=r"<overrides>.*\[plugins.tb\].*'enabled'"):
        load_config(None, parse_overrides(["tb.enabled=maybe"]))


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("tb.enabled=false", ("tb", "enabled", False)),
        ("tb.memory_cap_mb=256", ("tb", "memory_cap_mb", 256)),
        ("my.dotted.plugin.call_timeout=1.5", ("my.dotted.plugin", "call_timeout", 1.5)),
        ("tb.interpreter=/usr/bin/python3", ("tb", "interpreter", "/usr/bin/python3")),
        ('tb.options.name="quoted"', ("tb", "options.name", "quoted")),
        ("tb.options.list=[1, 2]", ("tb", "options.list", [1, 2])),
    ],
)
def test_parse_override(item: str, expected: tuple) -> None:
    assert parse_override(item) == expected


@pytest.mark.parametrize("item", ["tb.enabled", "tb=1", "tb.nothing=1", "tb.options=1", "tb.enabled.x=1", "enabled=1"])
def test_bad_overrides(item: str) -> None:
    with pytest.raises(ConfigError):
        parse_override(item)


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(Exception):
        config.default = PluginSettings()  # type: ignore[misc]


def test_a_default_table_that_turns_every_plugin_off_is_warned_about(tmp_path: Path, caplog) -> None:
    # ML-Agents' own entry point is also named "default": a user who disables it this way
    # disables every plugin.
    path = write(tmp_path, "[plugins.default]\nenabled = false\n")
    with caplog.at_level("WARNING", logger="statbus.workers.supervision.config"):
        config = load_config(path)
    assert not config.for_plugin("jsonl").enabled
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert path in caplog.text and "[plugins.default]" in caplog.text and "every plugin" in caplog.text

    caplog.clear()
    chosen = write(tmp_path, "[plugins.default]\nenabled = false\n\n[plugins.jsonl]\nenabled = true\n")
    with caplog.at_level("WARNING", logger="statbus.workers.supervision.config"):
        config = load_config(chosen)
    assert config.for_plugin("jsonl").enabled and not config.for_plugin("console").enabled
    assert caplog.records == []
