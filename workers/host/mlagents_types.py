"""ML-Agents' own record types for a plugin that imported the real mlagents.

Where mlagents is installed the worker leaves it alone (:mod:`..compat`), so a
plugin compares what it is handed with ``mlagents.trainers.stats``' enums and
reads ``mlagents.trainers.stats.StatsSummary``.  statbus's types have the same
names and values but are other classes: ``property_type ==
StatsPropertyType.HYPERPARAMETERS`` would be silently false, and an
``isinstance(values[key], StatsSummary)`` check would fail.  Such a plugin's
writers are wrapped so that every call carries ML-Agents' types.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from .dispatch import overrides


class MlagentsTypes:
    """The conversions, built from the real ``mlagents.trainers.stats``."""

    def __init__(self, stats_module: Any) -> None:
        self._summary = stats_module.StatsSummary
        self._aggregations = {member.value: member for member in stats_module.StatsAggregationMethod}
        self._properties = {member.value: member for member in stats_module.StatsPropertyType}

    def aggregation(self, aggregation: Any) -> Any:
        return self._aggregations.get(getattr(aggregation, "value", aggregation), aggregation)

    def property_type(self, property_type: Any) -> Any:
        # statbus's TEXT (SummaryWriter.add_text) has no ML-Agents counterpart: it stays ours.
        return self._properties.get(getattr(property_type, "value", property_type), property_type)

    def summaries(self, values: Mapping[str, Any]) -> Dict[str, Any]:
        summary = self._summary
        return {key: summary(s.full_dist, self.aggregation(s.aggregation_method)) for key, s in values.items()}


class TypedWriter:
    """One plugin writer, called with ML-Agents' types.

    Only the methods the writer really overrides are set on the instance, so
    that :func:`.dispatch.overrides` finds the same ones it finds on the writer.
    """

    def __init__(self, writer: Any, types: MlagentsTypes) -> None:
        self.writer = writer
        self._statbus_wrapped = writer  # crash and timeout messages name the plugin's class
        self._types = types
        if overrides(writer, "on_add_stat"):
            self.on_add_stat = self._on_add_stat
        if overrides(writer, "add_property"):
            self.add_property = self._add_property
        for name in ("flush", "close"):
            method = getattr(writer, name, None)
            if callable(method):
                setattr(self, name, method)

    def write_stats(self, category: str, values: Mapping[str, Any], step: int) -> None:
        self.writer.write_stats(category, self._types.summaries(values), step)

    def _on_add_stat(self, category: str, key: str, value: float, aggregation: Any) -> None:
        self.writer.on_add_stat(category, key, value, self._types.aggregation(aggregation))

    def _add_property(self, category: str, property_type: Any, value: Any) -> None:
        self.writer.add_property(category, self._types.property_type(property_type), value)


def real_mlagents_types() -> Optional[MlagentsTypes]:
    """The conversions, or None when ``mlagents.trainers.stats`` cannot be imported."""
    try:
        from mlagents.trainers import stats
    except Exception:  # noqa: BLE001 — a broken mlagents install: the plugin gets statbus's types
        return None
    return MlagentsTypes(stats)
