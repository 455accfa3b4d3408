"""Discovery from metadata, loading in a worker, and ``statbus plugins``.

Test-only plugins are made as a distribution on a temporary ``sys.path``
entry (a ``*.dist-info`` folder with METADATA and entry_points.txt next to
their module): importlib_metadata finds it there, and nothing is installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import statbus.plugins.groups
import statbus.plugins.settings
import statbus.plugins.stats
from statbus.plugins import StatsAggregationMethod, StatsSummary
from statbus.plugins.discovery import discover_plugins, find_plugin
from statbus.plugins.errors import PluginError, PluginImportError, PluginRegistrationError
from statbus.plugins.groups import ML_AGENTS_STATS_WRITER, STATBUS_STATS_WRITER
from statbus.plugins.loader import load_writers

BUILTINS = {
    "console": "statbus.plugins.writers.console:get_console_writer",
    "tensorboard": "statbus.plugins.writers.tensorboard:get_tensorboard_writer",
    "gauges": "statbus.plugins.writers.gauges:get_gauges_writer",
    "jsonl": "statbus.plugins.writers.jsonl:get_jsonl_writer",
    "wandb": "statbus.plugins.writers.wandb_tracker:get_wandb_writer",
    "mlflow": "statbus.plugins.writers.mlflow_tracker:get_mlflow_writer",
}

FIXTURE_MODULE = "sb_fixture_plugins"

FIXTURE_CODE = textwrap.dedent(
    '''
    from statbus.plugins import StatsWriter

    LOADED = []

    class Recorder(StatsWriter):
        def __init__(self):
            self.calls = []

        def write_stats(self, category, values, step):
            self.calls.append((category, step))

    def good(run_options):
        LOADED.append("good")
        return [Recorder()]

    def good_tuple(run_options):
        return (Recorder(), Recorder())

    def raises(run_options):
        raise RuntimeError("boom in registration")

    def not_iterable(run_options):
        return Recorder()

    def not_a_writer(run_options):
        return [Recorder(), "a string"]

    not_callable = 42
    '''
)

FIXTURE_ENTRY_POINTS = {
    "good": "good",
    "good_tuple": "good_tuple",
    "raises": "raises",
    "not_iterable": "not_iterable",
    "not_a_writer": "not_a_writer",
    "not_callable": "not_callable",
}


@pytest.fixture
def fixture_plugins(tmp_path, monkeypatch):
    """A distribution ``sb-fixture-plugins`` 9.9 with plugins in mlagents.stats_writer."""
    root = tmp_path / "site"
    dist_info = root / "sb_fixture_plugins-9.9.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: sb-fixture-plugins\nVersion: 9.9\n")
    lines = [f"[{ML_AGENTS_STATS_WRITER}]"]
    lines += [f"{name} = {FIXTURE_MODULE}:{attr}" for name, attr in FIXTURE_ENTRY_POINTS.items()]
    lines += ["missing_module = sb_no_such_module:register", "", "[some.other_group]", "unrelated = x:y", ""]
    (dist_info / "entry_points.txt").write_text("\n".join(lines))
    (root / f"{FIXTURE_MODULE}.py").write_text(FIXTURE_CODE)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, FIXTURE_MODULE, raising=False)
    yield root
    sys.modules.pop(FIXTURE_MODULE, None)


@pytest.fixture
def mlagents_aliases(monkeypatch):
    """What the worker host does where mlagents is not installed."""
    import types

    for name in ("mlagents", "mlagents.trainers"):
        package = types.ModuleType(name)
        package.__path__ = []  # a package, so that submodule imports resolve in sys.modules
        monkeypatch.setitem(sys.modules, name, package)
    monkeypatch.setitem(sys.modules, "mlagents.trainers.stats", statbus.plugins.stats)
    monkeypatch.setitem(sys.modules, "mlagents.trainers.settings", statbus.plugins.settings)
    monkeypatch.setitem(sys.modules, "mlagents.plugins", statbus.plugins.groups)
    monkeypatch.delitem(sys.modules, "statbus_example_plugin", raising=False)
    yield
    sys.modules.pop("statbus_example_plugin", None)


def test_builtins_are_discovered_with_distribution_and_version():
    import importlib_metadata

    version = importlib_metadata.version("statbus")
    found = {p.name: p for p in discover_plugins() if p.group == STATBUS_STATS_WRITER}
    assert {name: p.target for name, p in found.items()} == BUILTINS
    for plugin in found.values():
        assert (plugin.distribution, plugin.version) == ("statbus", version)


def test_discovery_imports_nothing(fixture_plugins):
    plugins = discover_plugins()
    assert FIXTURE_MODULE not in sys.modules
    names = {p.name for p in plugins if p.group == ML_AGENTS_STATS_WRITER}
    assert set(FIXTURE_ENTRY_POINTS) | {"missing_module"} <= names
    assert "unrelated" not in {p.name for p in plugins}
    good = find_plugin("good")
    assert (good.group, good.target, good.distribution, good.version) == (
        ML_AGENTS_STATS_WRITER,
        f"{FIXTURE_MODULE}:good",
        "sb-fixture-plugins",
        "9.9",
    )
    assert good.as_dict() == good._asdict()


def test_the_example_plugin_is_discovered():
    example = find_plugin(f"{ML_AGENTS_STATS_WRITER}:example")
    assert example.target == "statbus_example_plugin:get_example_writer"
    assert example.distribution == "statbus-example-plugin"
    assert example.version == "0.1.0"


def test_the_example_plugin_loads_with_mlagents_aliases(mlagents_aliases, run_options, tmp_path):
    [writer] = load_writers(find_plugin("example"), run_options)
    try:
        # It subclasses the StatsWriter it imported as mlagents.trainers.stats.
        assert isinstance(writer, statbus.plugins.stats.StatsWriter)
        writer.write_stats("3DBall", {"reward": StatsSummary([1.0, 2.0], StatsAggregationMethod.AVERAGE)}, 10)
    finally:
        writer.close()
    output = tmp_path / run_options.run_id / "example_plugin.txt"
    assert output.read_text().splitlines() == ["3DBall 10 reward=1.5"]


def test_a_failing_registration_is_reported_by_name_while_others_load(fixture_plugins, run_options):
    loaded, errors = {}, {}
    for plugin in discover_plugins():
        if plugin.group != ML_AGENTS_STATS_WRITER or plugin.distribution != "sb-fixture-plugins":
            continue
        try:
            loaded[plugin.name] = load_writers(plugin, run_options)
        except PluginError as exc:
            errors[plugin.name] = exc
    assert sorted(loaded) == ["good", "good_tuple"]
    assert len(loaded["good_tuple"]) == 2  # any sized iterable of writers
    assert sorted(errors) == ["missing_module", "not_a_writer", "not_callable", "not_iterable", "raises"]
    for name, exc in errors.items():
        assert exc.plugin == name and repr(name) in str(exc)
    assert isinstance(errors["raises"], PluginRegistrationError) and "boom in registration" in str(errors["raises"])
    assert isinstance(errors["not_iterable"], PluginRegistrationError) and "Recorder" in str(errors["not_iterable"])
    assert isinstance(errors["not_a_writer"], PluginRegistrationError) and "item 1" in str(errors["not_a_writer"])
    assert isinstance(errors["missing_module"], PluginImportError) and "sb_no_such_module" in str(errors["missing_module"])
    assert isinstance(errors["not_callable"], PluginImportError)


def test_unknown_plugin_names_what_is_installed():
    with pytest.raises(PluginError) as info:
        find_plugin("no-such-plugin")
    assert "console" in str(info.value)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "statbus.pipeline.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_statbus_plugins_json():
    result = run_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert all(set(p) == {"group", "name", "target", "distribution", "version", "default"} for p in listed)
    builtins = {p["name"]: p["target"] for p in listed if p["group"] == STATBUS_STATS_WRITER}
    assert builtins == BUILTINS
    defaults = {p["name"]: p["default"] for p in listed if p["group"] == STATBUS_STATS_WRITER}
    assert defaults == {"console": "on", "tensorboard": "on", "gauges": "on", "jsonl": "on",
                        "wandb": "off (STATBUS_WANDB=1)", "mlflow": "off (STATBUS_MLFLOW=1)"}
    assert {"group": ML_AGENTS_STATS_WRITER, "name": "example", "target": "statbus_example_plugin:get_example_writer",
            "distribution": "statbus-example-plugin", "version": "0.1.0", "default": "on"} in listed
    # ML-Agents' own writers (installed with the mlagents extra) are what the built-ins replace.
    replaced = [p["default"] for p in listed if (p["group"], p["name"]) == (ML_AGENTS_STATS_WRITER, "default")]
    assert replaced == ["off (statbus's built-in writers replace it; name it in --plugins to run it)"]


def test_statbus_plugins_table():
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["GROUP", "NAME", "TARGET", "DISTRIBUTION", "VERSION", "DEFAULT"]
    assert any(row.split()[:3] == [STATBUS_STATS_WRITER, "tensorboard", BUILTINS["tensorboard"]] for row in rows)


def test_cli_main_in_process(capsys):
    from statbus.pipeline.cli.main import main

    assert main(["plugins", "--json"]) == 0
    assert {p["name"] for p in json.loads(capsys.readouterr().out)} >= set(BUILTINS)
    with pytest.raises(SystemExit) as info:
        main(["plugins", "--bogus"])
    assert info.value.code == 2


def test_a_distribution_with_broken_metadata_hides_no_plugin(tmp_path, monkeypatch):
    dist_info = tmp_path / "broken-1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\n")  # no Name, no Version
    (dist_info / "entry_points.txt").write_text(f"[{ML_AGENTS_STATS_WRITER}]\nnameless = sb_nameless:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = {p.name: p for p in discover_plugins()}
    assert (found["nameless"].distribution, found["nameless"].version) == (None, None)
    assert set(BUILTINS) <= set(found)
