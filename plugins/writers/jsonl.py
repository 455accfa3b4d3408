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

Written from a worker host, a summary line also holds ``"journal_position"``: the
position of its SUMMARY entry in the run's journal.  Replays are dropped: a summary
whose entry is at or below the highest position this run's lines hold (read back
at construction), or a property equal to the last one of its category and type; so
a restarted worker writes nothing twice.  A second summary at a step already
written (late values of a process that joined a ``SummaryWriter`` log_dir late) is
a new entry, and a second line at that step.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from .output_file import OutputFile
from ..delivery import already_written, journal_position
from ..records import finite_or_none
from ..settings import RunOptions
from ..stats import StatsAggregationMethod, StatsPropertyType, StatsSummary, StatsWriter, summarize

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


_VALUES = b',"values":'


def _recovery_fields(raw: bytes) -> Any:
    """The fields of one line that recovery reads: of a summary line, all but its values.

    A summary line's values are nearly all of its bytes and recovery needs none of
    them.  Its other fields come first, and none can hold ``,"values":`` (a quote
    inside a JSON string is escaped), so the text before the first one, closed, is
    those fields.  Any other line (a property, whose value may hold that text) is
    parsed whole.
    """
    cut = raw.find(_VALUES)
    if cut > 0 and b'"property":' not in raw[:cut]:
        try:
            head = json.loads(raw[:cut] + b"}")
        except ValueError:
            head = None
        if isinstance(head, dict) and "step" in head:
            return head
    try:
        return json.loads(raw)
    except ValueError:
        return None


class JsonlWriter(StatsWriter):
    """Appends one JSON object per ``write_stats`` and per property to ``path``."""

    def __init__(self, path: str, start_time: Optional[float] = None, flush_secs: float = DEFAULT_FLUSH_SECS) -> None:
        self.path = path
        self.start_time = time.time() if start_time is None else start_time
        self.flush_secs = flush_secs
        self._written = -1
        """The highest journal position of a summary line this run wrote, -1 before the first."""
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
        self._file = OutputFile(path)  # never loses nor repeats a line on a full disk
        self._last_flush = time.monotonic()

    def _recover(self) -> None:
        """Learn what this run already wrote; cut a torn last line off.

        Line by line, and a summary line only up to its values: a run's file grows by
        gigabytes a day, and a worker restarted late in a run must start as small and
        nearly as fast as one restarted early (reading the whole file took twice its
        size in memory: past the worker's memory cap, it could never start again).
        """
        try:
            f = open(self.path, "rb+")
        except FileNotFoundError:
            return
        with f:
            end = 0
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                end += len(raw)
                self._learn(_recovery_fields(raw))
            size = f.seek(0, os.SEEK_END)
            if size > end:
                # A crash mid-write leaves a partial line; its record was never
                # committed, so it will be delivered again.
                f.truncate(end)
                logger.warning("jsonl: cut a torn last line (%d bytes) off %s", size - end, self.path)

    def _learn(self, obj: Any) -> None:
        if not isinstance(obj, dict) or not isinstance(obj.get("time"), (int, float)):
            return
        # Lines of earlier runs in the same file are not replays of this one.
        if obj["time"] < self.start_time or not isinstance(obj.get("category"), str):
            return
        position = obj.get("journal_position")
        if type(position) is int:
            self._written = max(self._written, position)
        elif isinstance(obj.get("property"), str):
            self._last_property[(obj["category"], obj["property"])] = _dumps(obj.get("value"))

    def write_stats(self, category: str, values: Dict[str, StatsSummary], step: int) -> None:
        position = journal_position()
        if already_written(position, self._written):
            logger.debug("jsonl: dropping replayed summary %s step %s (journal position %s)", category, step, position)
            return
        self._write_line(self._summary_line(category, values, step, time.time(), position))
        if position is not None:
            self._written = position

    def _summary_line(self, category: str, values: Dict[str, StatsSummary], step: int, now: float,
                      position: Optional[int] = None) -> str:
        """The summary line, written by hand: ``json.dumps`` of the nested dicts was most of the cost.

        The text is what ``_dumps`` makes of ``{"category", "step", "time",
        ["journal_position",] "values": {key: summary_to_dict(summary)}}``; an
        unusual type (a non-str name, a non-int step) takes that path itself.
        """
        if type(category) is not str or type(step) is not int:
            return self._summary_line_slow(category, values, step, now, position)
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
                return self._summary_line_slow(category, values, step, now, position)
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
        where = "" if position is None else f'"journal_position":{position:d},'
        return f'{{"category":{name},"step":{step},"time":{_number(now)},{where}"values":{{{",".join(parts)}}}}}'

    def _summary_line_slow(self, category: Any, values: Dict[Any, StatsSummary], step: Any, now: float,
                           position: Optional[int]) -> str:
        line = {"category": category, "step": step, "time": now}
        if position is not None:
            line["journal_position"] = position
        line["values"] = {key: summary_to_dict(summary) for key, summary in values.items()}
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
        self._file.write((line + "\n").encode("utf-8"))
        if time.monotonic() - self._last_flush >= self.flush_secs:
            self._file.flush_soon()  # a full disk is reported by flush(), which the host retries
            self._last_flush = time.monotonic()

    def flush(self) -> None:
        self._file.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self._file.close()


def get_jsonl_writer(run_options: RunOptions) -> List[StatsWriter]:
    """Registration function of the ``jsonl`` plugin.

    Plugin options: ``flush_secs`` (default 2): longest time a line stays in
    the writer's buffer when nobody calls ``flush()``.
    """
    options = run_options.plugin_options
    path = os.path.join(run_options.checkpoint_settings.write_path, FILE_NAME)
    return [JsonlWriter(path, start_time=run_options.start_time, flush_secs=float(options.get("flush_secs", DEFAULT_FLUSH_SECS)))]
