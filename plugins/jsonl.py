"""The ``jsonl`` writer: every summary and property as one JSON line.

``<results_dir>/<run_id>/stats.jsonl``, appended to.  A summary line::

    {"category": "3DBall", "step": 1000, "time": 1700000000.5,
     "values": {"Environment/Cumulative Reward": {"aggregation": "AVERAGE", "num": 3,
               "sum": 3.0, "mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0,
               "aggregated_value": 1.0}}}

A property line: ``{"category", "time", "property": "hyperparameters", "value": ...}``.
JSON has no NaN or infinity: non-finite numbers are written as ``null``, so
every line is valid JSON for any reader.  Huge finite values (a sum past the
float range) do not crash the writer: see ``summarize``.

Replays are dropped: a summary for a (category, step) not after the last one
written, or a property equal to the last one of its category and type.  The
last steps are recovered from the file at construction (lines written since
the run started), so a restarted worker that is caught up writes nothing twice.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import time
from fractions import Fraction
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .records import finite_or_none
from .settings import RunOptions
from .stats import StatsAggregationMethod, StatsPropertyType, StatsSummary, StatsWriter

logger = logging.getLogger(__name__)

FILE_NAME = "stats.jsonl"
DEFAULT_FLUSH_SECS = 2.0


def to_json_value(value: Any) -> Any:
    """``value`` made encodable with ``allow_nan=False``: non-finite floats become None."""
    if isinstance(value, float):
        return finite_or_none(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, enum.Enum):
        return to_json_value(value.value)
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json_value(v) for v in value]
    try:  # numpy scalars and the like
        return to_json_value(float(value))
    except (TypeError, ValueError):
        return repr(value)


def summarize(full_dist: Sequence[float]) -> Tuple[int, float, float, float, Optional[float], Optional[float]]:
    """``(num, sum, mean, std, min, max)`` of one key's values, each reduction done once.

    ``sum``, ``mean`` and ``std`` are the floats ``StatsSummary.sum``, ``.mean``
    and ``.std`` compute (the same expressions, so the same roundings); ``min``
    and ``max`` are over the finite values, ``None`` when there is none.  Where
    ``StatsSummary`` would raise (``math.fsum`` overflows on huge finite values
    such as ``[1e308, 1e308]``, ``(v - mean) ** 2`` overflows for ``|v - mean|``
    past ~1.3e154, ``fsum`` refuses ``inf + -inf``), the result is what exact
    arithmetic rounds to instead (``inf``/``nan`` where IEEE sums give them), so
    one extreme value cannot crash a writer.
    """
    num = len(full_dist)
    if not num:
        return 0, 0.0, math.nan, math.nan, None, None
    try:
        total = math.fsum(full_dist)
        mean = total / num
    except (OverflowError, ValueError):
        total, mean = _exact_sum_and_mean(full_dist)
    if not math.isfinite(mean):
        # Some value is NaN or infinite (fsum propagates them); the std is then
        # NaN whichever way it is computed, and min/max skip those values.
        finite = [v for v in full_dist if math.isfinite(v)]
        if finite:
            return num, total, mean, math.nan, min(finite), max(finite)
        return num, total, mean, math.nan, None, None
    # A finite mean means every value is finite.
    if num == 1:
        # (v - mean) is 0 exactly, so the population std is 0.0 exactly.
        value = full_dist[0]
        return 1, total, mean, 0.0, value, value
    try:
        std = math.sqrt(math.fsum([(v - mean) ** 2 for v in full_dist]) / num)
    except OverflowError:
        std = math.inf
    if std == math.inf:
        std = _scaled_std(full_dist, mean)
    return num, total, mean, std, min(full_dist), max(full_dist)


def _exact_sum_and_mean(full_dist: Sequence[float]) -> Tuple[float, float]:
    """Sum and mean where ``math.fsum`` gave up: IEEE for non-finite values, else exact."""
    non_finite = [float(v) for v in full_dist if not math.isfinite(v)]
    if non_finite:
        # inf + -inf is NaN here, as in numpy, rather than fsum's ValueError.
        total = sum(non_finite)
        return total, total / len(full_dist)
    # Only finite values: fsum overflowed on a partial sum.  Rational
    # arithmetic is exact; only the rounding to float can overflow.
    exact = sum((Fraction(float(v)) for v in full_dist), Fraction(0))
    try:
        total = float(exact)
    except OverflowError:
        total = math.inf if exact > 0 else -math.inf
    # The mean of finite floats is within their range, so it is finite.
    return total, float(exact / len(full_dist))


def _scaled_std(full_dist: Sequence[float], mean: float) -> float:
    """Population std without overflow: deviations are halved, then scaled to at most 1."""
    deviations = [v * 0.5 - mean * 0.5 for v in full_dist]
    largest = max(abs(d) for d in deviations)
    if largest == 0.0:
        return 0.0
    # Scaled back last: the std never exceeds the largest deviation, so only a
    # std past the float range overflows.
    return 2.0 * (largest * math.sqrt(math.fsum([(d / largest) ** 2 for d in deviations]) / len(full_dist)))


def summary_to_dict(summary: StatsSummary) -> Dict[str, Any]:
    """The ``values`` entry of one key, as a dict; ``JsonlWriter`` writes the same text directly."""
    num, total, mean, std, low, high = summarize(summary.full_dist)
    return {
        "aggregation": summary.aggregation_method.name,
        "num": num,
        "sum": finite_or_none(total),
        "mean": finite_or_none(mean),
        "std": finite_or_none(std),
        "min": low,
        "max": high,
        "aggregated_value": finite_or_none(total if summary.aggregation_method == StatsAggregationMethod.SUM else mean),
    }


def _dumps(obj: Any) -> str:
    return json.dumps(obj, allow_nan=False, separators=(",", ":"))


_float_repr = float.__repr__
_MAX_ENCODED = 4096
"""Bound of the cache of JSON-encoded names; category and key names are few, but a plugin could invent many."""


def _number(value: Any) -> str:
    """``value`` as ``json.dumps`` writes it, non-finite as ``null``."""
    if type(value) is float:
        # json writes a finite float as float.__repr__ (shortest round-trip form, "1.0" for one).
        return _float_repr(value) if value - value == 0.0 else "null"
    # ints, bools, numpy scalars: whatever json made of them before.
    return _dumps(to_json_value(value))


class JsonlWriter(StatsWriter):
    """Appends one JSON object per ``write_stats`` and per property to ``path``."""

    def __init__(self, path: str, start_time: Optional[float] = None, flush_secs: float = DEFAULT_FLUSH_SECS) -> None:
        self.path = path
        self.start_time = time.time() if start_time is None else start_time
        self.flush_secs = flush_secs
        self._last_step: Dict[str, int] = {}
        self._last_property: Dict[Tuple[str, str], str] = {}
        # json.dumps of a name once, not per line: the JSON text of each
        # category, and of each key's entry up to its "num" (with the
        # aggregation it was made for).  Bounded: names come from plugins.
        self._encoded: Dict[str, str] = {}
        self._heads: Dict[str, Tuple[Any, str]] = {}
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._recover()
        self._file = open(path, "a", encoding="utf-8")
        self._last_flush = time.monotonic()

    def _recover(self) -> None:
        """Learn what this run already wrote; cut a torn last line off."""
        try:
            f = open(self.path, "rb+")
        except FileNotFoundError:
            return
        with f:
            data = f.read()
            end = len(data)
            if data and not data.endswith(b"\n"):
                # A crash mid-write leaves a partial line; its record was never
                # committed, so it will be delivered again.
                end = data.rfind(b"\n") + 1
                f.truncate(end)
                logger.warning("jsonl: cut a torn last line (%d bytes) off %s", len(data) - end, self.path)
        for raw in data[:end].splitlines():
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("time"), (int, float)):
                continue
            # Lines of earlier runs in the same file are not replays of this one.
            if obj["time"] < self.start_time or not isinstance(obj.get("category"), str):
                continue
            category = obj["category"]
            if isinstance(obj.get("step"), int):
                self._last_step[category] = max(obj["step"], self._last_step.get(category, -1))
            elif isinstance(obj.get("property"), str):
                self._last_property[(category, obj["property"])] = _dumps(obj.get("value"))

    def write_stats(self, category: str, values: Dict[str, StatsSummary], step: int) -> None:
        if step <= self._last_step.get(category, -1):
            logger.debug("jsonl: dropping replayed summary %s step %s", category, step)
            return
        self._write_line(self._summary_line(category, values, step, time.time()))
        self._last_step[category] = step

    def _summary_line(self, category: str, values: Dict[str, StatsSummary], step: int, now: float) -> str:
        """The summary line, written by hand: ``json.dumps`` of the nested dicts was most of the cost.

        The text is what ``_dumps`` makes of ``{"category", "step", "time",
        "values": {key: summary_to_dict(summary)}}``; an unusual type (a
        non-str name, a non-int step) takes that path itself.
        """
        if type(category) is not str or type(step) is not int:
            return self._summary_line_slow(category, values, step, now)
        encoded = self._encoded
        heads = self._heads
        parts: List[str] = []
        for key, summary in values.items():
            method = summary.aggregation_method
            # Keyed by name alone: hashing an Enum member runs Python code.
            cached = heads.get(key)
            if cached is not None and cached[0] is method:
                head = cached[1]
            elif type(key) is str and isinstance(method, StatsAggregationMethod):
                head = f'{_dumps(key)}:{{"aggregation":{_dumps(method.name)},"num":'
                if len(heads) >= _MAX_ENCODED:
                    heads.clear()
                heads[key] = (method, head)
            else:
                return self._summary_line_slow(category, values, step, now)
            full_dist = summary.full_dist
            if len(full_dist) == 1 and type(full_dist[0]) is float and full_dist[0] - full_dist[0] == 0.0:
                # The common case, one finite value v: sum and mean are v (fsum
                # turns -0.0 into 0.0), std 0.0, min and max v itself.
                value = full_dist[0]
                text = _float_repr(value)
                total_text = text if value != 0.0 else "0.0"
                parts.append(
                    f'{head}1,"sum":{total_text},"mean":{total_text},"std":0.0,'
                    f'"min":{text},"max":{text},"aggregated_value":{total_text}}}'
                )
                continue
            num, total, mean, std, low, high = summarize(full_dist)
            total_text = _number(total)
            mean_text = _number(mean)
            low_text = _number(low) if low is not None else "null"
            high_text = _number(high) if high is not None else "null"
            parts.append(
                f'{head}{num},"sum":{total_text},"mean":{mean_text},"std":{_number(std)},'
                f'"min":{low_text},"max":{high_text},'
                f'"aggregated_value":{total_text if method is StatsAggregationMethod.SUM else mean_text}}}'
            )
        name = encoded.get(category)
        if name is None:
            if len(encoded) >= _MAX_ENCODED:
                encoded.clear()
            name = encoded[category] = _dumps(category)
        return f'{{"category":{name},"step":{step},"time":{_number(now)},"values":{{{",".join(parts)}}}}}'

    def _summary_line_slow(self, category: Any, values: Dict[Any, StatsSummary], step: Any, now: float) -> str:
        line = {
            "category": category,
            "step": step,
            "time": now,
            "values": {key: summary_to_dict(summary) for key, summary in values.items()},
        }
        return _dumps(line)

    def add_property(self, category: str, property_type: StatsPropertyType, value: Any) -> None:
        encoded_value = _dumps(to_json_value(value))
        key = (category, property_type.value)
        if self._last_property.get(key) == encoded_value:
            return
        self._append({"category": category, "time": time.time(), "property": property_type.value, "value": to_json_value(value)})
        self._last_property[key] = encoded_value

    def _append(self, obj: Dict[str, Any]) -> None:
        self._write_line(_dumps(obj))

    def _write_line(self, line: str) -> None:
        self._file.write(line + "\n")
        if time.monotonic() - self._last_flush >= self.flush_secs:
            self.flush()

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


def get_jsonl_writer(run_options: RunOptions) -> List[StatsWriter]:
    """Registration function of the ``jsonl`` plugin.

    Plugin options: ``flush_secs`` (default 2): longest time a line stays in
    the writer's buffer when nobody calls ``flush()``.
    """
    options = run_options.plugin_options
    path = os.path.join(run_options.checkpoint_settings.write_path, FILE_NAME)
    return [JsonlWriter(path, start_time=run_options.start_time, flush_secs=float(options.get("flush_secs", DEFAULT_FLUSH_SECS)))]
