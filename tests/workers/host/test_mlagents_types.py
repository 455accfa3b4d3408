"""A plugin that imported the real mlagents is called with ML-Agents' own types (real mlagents 1.1.0)."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # mlagents 1.1.0's generated protos and its pkg_resources import warn on this protobuf/setuptools.
    warnings.simplefilter("ignore")
    from mlagents.trainers import stats as ml_stats  # the test extra installs mlagents 1.1.0

from statbus.plugins import StatsAggregationMethod, StatsPropertyType, StatsSummary
from statbus.workers.host.dispatch import _describe, overrides
from statbus.workers.host.mlagents_types import TypedWriter, real_mlagents_types


class Checker(ml_stats.StatsWriter):
    """Written for ML-Agents: compares with mlagents' enums, reads mlagents' StatsSummary."""

    def __init__(self) -> None:
        self.hyperparameters = []
        self.summaries = []
        self.histograms = []

    def write_stats(self, category, values, step):
        for key, summary in values.items():
            assert isinstance(summary, ml_stats.StatsSummary), type(summary)
            if summary.aggregation_method == ml_stats.StatsAggregationMethod.HISTOGRAM:
                self.histograms.append(key)
            self.summaries.append((category, key, summary.mean, summary.num, step))

    def add_property(self, category, property_type, value):
        if property_type == ml_stats.StatsPropertyType.HYPERPARAMETERS:
            self.hyperparameters.append((category, value))


def test_a_real_mlagents_plugin_sees_mlagents_types():
    types = real_mlagents_types()
    assert types is not None
    plugin = Checker()
    writer = TypedWriter(plugin, types)
    writer.add_property("3DBall", StatsPropertyType.HYPERPARAMETERS, {"lr": 3e-4})
    writer.write_stats("3DBall", {
        "Policy/Entropy": StatsSummary([1.0, 2.0], StatsAggregationMethod.AVERAGE),
        "Environment/Cumulative Reward": StatsSummary([3.0], StatsAggregationMethod.HISTOGRAM),
    }, 500)
    assert plugin.hyperparameters == [("3DBall", {"lr": 3e-4})]
    assert plugin.summaries == [("3DBall", "Policy/Entropy", 1.5, 2, 500),
                                ("3DBall", "Environment/Cumulative Reward", 3.0, 1, 500)]
    assert plugin.histograms == ["Environment/Cumulative Reward"]


def test_the_wrapper_overrides_what_the_plugin_overrides_and_is_named_after_it():
    writer = TypedWriter(Checker(), real_mlagents_types())
    assert overrides(writer, "add_property")
    assert not overrides(writer, "on_add_stat")  # ML-Agents' no-op: per-value delivery stays skipped
    assert _describe(writer) == "Checker"


def test_on_add_stat_gets_mlagents_aggregation_and_text_stays_statbus():
    seen = []

    class Values(ml_stats.StatsWriter):
        def write_stats(self, category, values, step):
            pass

        def on_add_stat(self, category, key, value, aggregation=ml_stats.StatsAggregationMethod.AVERAGE):
            seen.append(aggregation)

        def add_property(self, category, property_type, value):
            seen.append(property_type)

    writer = TypedWriter(Values(), real_mlagents_types())
    writer.on_add_stat("c", "k", 1.0, StatsAggregationMethod.SUM)
    writer.add_property("c", StatsPropertyType.TEXT, "notes")
    assert seen == [ml_stats.StatsAggregationMethod.SUM, StatsPropertyType.TEXT]
