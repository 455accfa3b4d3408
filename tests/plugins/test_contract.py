"""Conformance of the plugin contract with ML-Agents 1.1.0's stats API."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from statbus.plugins import ConfigError, RunOptions, StatsAggregationMethod, StatsPropertyType, StatsSummary, StatsWriter
from statbus.plugins.groups import ML_AGENTS_STATS_WRITER, STATBUS_STATS_WRITER
from statbus.plugins.settings import CheckpointSettings


def test_enum_values_match_ml_agents():
    assert [(m.name, m.value) for m in StatsAggregationMethod] == [
        ("AVERAGE", 0),
        ("MOST_RECENT", 1),
        ("SUM", 2),
        ("HISTOGRAM", 3),
    ]
    assert StatsPropertyType.HYPERPARAMETERS.value == "hyperparameters"
    assert StatsPropertyType.SELF_PLAY.value == "selfplay"
    # ML-Agents' two, plus statbus's TEXT (SummaryWriter.add_text), which ML-Agents plugins never receive
    # unless a SummaryWriter logs text (they compare with HYPERPARAMETERS / SELF_PLAY and ignore it).
    assert [m.name for m in StatsPropertyType] == ["HYPERPARAMETERS", "SELF_PLAY", "TEXT"]


def test_groups():
    assert STATBUS_STATS_WRITER == "statbus.stats_writer"
    assert ML_AGENTS_STATS_WRITER == "mlagents.stats_writer"


@pytest.mark.parametrize("method", list(StatsAggregationMethod))
def test_summary_statistics_per_aggregation(method):
    summary = StatsSummary(list(range(10)), method)
    assert summary.num == 10
    assert summary.sum == 45
    assert summary.mean == pytest.approx(4.5)
    # Population std, as numpy.std computes it (ML-Agents uses numpy).
    assert summary.std == pytest.approx(2.8722813232690143)
    expected = 45 if method == StatsAggregationMethod.SUM else 4.5
    assert summary.aggregated_value == pytest.approx(expected)


def test_summary_of_one_value_and_most_recent():
    summary = StatsSummary([7.5], StatsAggregationMethod.MOST_RECENT)
    assert (summary.num, summary.sum, summary.mean, summary.std, summary.aggregated_value) == (1, 7.5, 7.5, 0.0, 7.5)


def test_summary_is_a_named_tuple_with_ml_agents_fields():
    summary = StatsSummary(full_dist=[1.0, 2.0], aggregation_method=StatsAggregationMethod.SUM)
    assert summary._fields == ("full_dist", "aggregation_method")
    full_dist, method = summary
    assert full_dist == [1.0, 2.0] and method is StatsAggregationMethod.SUM


def test_summary_equality():
    a = StatsSummary([1.0, 2.0], StatsAggregationMethod.AVERAGE)
    assert a == StatsSummary([1.0, 2.0], StatsAggregationMethod.AVERAGE)
    assert a != StatsSummary([1.0, 2.0], StatsAggregationMethod.SUM)
    assert a != StatsSummary([2.0, 1.0], StatsAggregationMethod.AVERAGE)


def test_empty_summary():
    empty = StatsSummary.empty()
    assert empty == StatsSummary([], StatsAggregationMethod.AVERAGE)
    assert empty.num == 0
    assert empty.sum == 0
    # numpy gives NaN for the mean of nothing; so do we, but without a warning
    # (warnings are errors in this suite).
    assert math.isnan(empty.mean) and math.isnan(empty.std) and math.isnan(empty.aggregated_value)


def test_stats_writer_is_abstract_and_defaults_do_nothing():
    with pytest.raises(TypeError):
        StatsWriter()  # type: ignore[abstract]

    calls = []

    class Minimal(StatsWriter):
        def write_stats(self, category, values, step):
            calls.append((category, values, step))

    writer = Minimal()
    assert writer.on_add_stat("c", "k", 1.0) is None
    assert writer.on_add_stat("c", "k", 1.0, StatsAggregationMethod.SUM) is None
    assert writer.add_property("c", StatsPropertyType.SELF_PLAY, True) is None
    writer.write_stats("c", {"k": StatsSummary([1.0], StatsAggregationMethod.AVERAGE)}, 3)
    assert calls == [("c", {"k": StatsSummary([1.0], StatsAggregationMethod.AVERAGE)}, 3)]


def test_run_options_paths(tmp_path):
    options = RunOptions.create("run1", results_dir=str(tmp_path), resume=True)
    assert options.run_id == "run1"
    assert options.results_dir == str(tmp_path)
    assert options.resume is True
    assert options.checkpoint_settings.write_path == str(tmp_path / "run1")
    assert options.checkpoint_settings.run_logs_dir == str(tmp_path / "run1" / "run_logs")


def test_run_options_round_trip_through_json():
    options = RunOptions(
        checkpoint_settings=CheckpointSettings(run_id="r", results_dir="/x", resume=True, initialize_from="old"),
        behaviors={"3DBall": {"trainer_type": "ppo", "hyperparameters": {"batch_size": 64}}},
        env_settings={"num_envs": 4},
        debug=True,
        start_time=1234.5,
        plugin_options={"hidden_keys": ["Step"]},
    )
    # It travels to worker processes as JSON on a command line.
    copy = RunOptions.from_dict(json.loads(json.dumps(options.as_dict())))
    assert copy == options
    assert copy.as_dict() == options.as_dict()
    assert copy.start_time == 1234.5
    assert copy.plugin_options == {"hidden_keys": ["Step"]}


def test_run_options_from_nothing_and_bad_input():
    assert isinstance(RunOptions.from_dict(None), RunOptions)
    with pytest.raises(ConfigError):
        RunOptions.from_dict({"no_such_option": 1})
    with pytest.raises(ConfigError):
        RunOptions.from_dict({"checkpoint_settings": {"nope": 1}})
    with pytest.raises(ConfigError):
        RunOptions.from_dict([1, 2])  # type: ignore[arg-type]


def test_with_plugin_options_keeps_the_rest():
    options = RunOptions.create("r", start_time=10.0)
    plugin = options.with_plugin_options({"log_level": "DEBUG"})
    assert plugin.plugin_options == {"log_level": "DEBUG"}
    assert plugin.start_time == 10.0 and plugin.run_id == "r"
    assert options.plugin_options == {}


def test_importing_the_contract_does_not_import_tensorboard():
    import subprocess

    code = "import sys, statbus.plugins, statbus.plugins.writers.tensorboard; sys.exit(1 if 'tensorboard' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.parametrize(
    "module, function",
    [
        ("statbus.plugins.writers.console", "get_console_writer"),
        ("statbus.plugins.writers.tensorboard", "get_tensorboard_writer"),
        ("statbus.plugins.writers.gauges", "get_gauges_writer"),
        ("statbus.plugins.writers.jsonl", "get_jsonl_writer"),
    ],
)
def test_builtin_registration_functions_return_one_writer(run_options, module, function):
    import importlib

    writers = getattr(importlib.import_module(module), function)(run_options)
    try:
        assert isinstance(writers, list) and len(writers) == 1
        assert isinstance(writers[0], StatsWriter)
    finally:
        for writer in writers:
            writer.close()


@pytest.mark.parametrize(
    "values, total, mean, std",
    [
        ([1e308, 1e308], math.inf, 1e308, 0.0),  # fsum's partial sum overflows; the mean does not
        ([1e308, 1e308, -1e308], 1e308, 1e308 / 3, None),
        ([1e200, -1e200], 0.0, 0.0, 1e200),  # (v - mean) ** 2 overflows; the std does not
        ([math.inf, -math.inf], math.nan, math.nan, math.nan),  # fsum refuses inf + -inf
        ([math.inf, 1e308, 1e308], math.inf, math.inf, math.nan),
    ],
)
def test_reductions_of_extreme_values_never_raise(values, total, mean, std) -> None:
    summary = StatsSummary(values, StatsAggregationMethod.AVERAGE)

    def same(a: float, b: float) -> bool:
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12)

    assert same(summary.sum, total) and same(summary.mean, mean)
    if std is not None:
        assert same(summary.std, std)
    assert same(summary.aggregated_value, mean)
    assert same(StatsSummary(values, StatsAggregationMethod.SUM).aggregated_value, total)


def test_the_package_exports_the_plugin_contract_and_nothing_else():
    import statbus.plugins

    assert sorted(statbus.plugins.__all__) == [
        "CheckpointSettings", "ConfigError", "RunOptions", "StatbusError",
        "StatsAggregationMethod", "StatsPropertyType", "StatsSummary", "StatsWriter",
    ]
    assert all(hasattr(statbus.plugins, name) for name in statbus.plugins.__all__)


def test_a_trainer_imports_no_entry_point_machinery():
    # Discovery (importlib_metadata) is the collector's and the workers': a trainer never pays for it.
    code = ("import sys, statbus.pipeline; "
            "print(sorted(m for m in ('importlib_metadata', 'statbus.plugins.discovery') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
