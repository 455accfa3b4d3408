"""The ``gauges`` writer: ML-Agents' ``timers.json`` gauges, kept current during the run.

``<results_dir>/<run_id>/run_logs/timers.json`` holds, as ML-Agents writes it,
one gauge per ``{category}.{key}.mean`` and ``{category}.{key}.sum`` (``/``
turned into ``.``, spaces removed), each ``{"value", "min", "max", "count"}``:
the latest value, the extremes and the number of updates.  NaN is skipped, as
ML-Agents' ``set_gauge`` does (and so is infinity, which JSON cannot hold).

ML-Agents writes the file once, at the end of training; here it is rewritten
atomically (temporary file + ``os.replace``) every few seconds, on ``flush()``
and on ``close()``, so a reader never sees half a file and a crash loses at
most what was not yet flushed.

Replays are dropped by journal position: the highest position of a summary the
gauges hold is kept in the file's metadata (``statbus_journal_position``, written
with them) and reloaded at construction, so a restarted worker does not count an
update twice, while a second summary at a step already seen (late values of a
``SummaryWriter`` log_dir) is counted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, Dict, List, Optional

from ..delivery import already_written, journal_position
from ..settings import RunOptions
from ..stats import StatsSummary, StatsWriter

logger = logging.getLogger(__name__)

FILE_NAME = "timers.json"
DEFAULT_FLUSH_SECS = 5.0
TIMER_FORMAT_VERSION = "0.1.0"


def sanitize_gauge_name(name: str) -> str:
    """ML-Agents' gauge naming: ``/`` becomes ``.``, spaces are removed."""
    return name.replace("/", ".").replace(" ", "")


class GaugesWriter(StatsWriter):
    """Maintains ML-Agents-style gauges for every key and rewrites ``path`` atomically."""

    def __init__(
        self,
        path: str,
        start_time: Optional[float] = None,
        resume: bool = False,
        flush_secs: float = DEFAULT_FLUSH_SECS,
    ) -> None:
        self.path = path
        self.start_time = time.time() if start_time is None else start_time
        self.flush_secs = flush_secs
        self.gauges: Dict[str, Dict[str, float]] = {}
        self._written = -1
        """The highest journal position of a summary counted in the gauges, -1 before the first."""
        self._dirty = False
        self._last_flush = time.monotonic()
        self._load(resume)

    def _load(self, resume: bool) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                tree = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            logger.warning("gauges: ignoring unreadable %s: %s", self.path, exc)
            return
        if not isinstance(tree, dict):
            return
        metadata = tree.get("metadata") if isinstance(tree.get("metadata"), dict) else {}
        same_run = metadata.get("start_time_seconds") == _start_time_text(self.start_time)
        # A file of this very run (a restarted worker) carries on exactly; a
        # resumed run carries the gauges on but starts counting steps afresh;
        # a new run starts from nothing, as ML-Agents does.
        if not (same_run or resume):
            return
        gauges = tree.get("gauges")
        if isinstance(gauges, dict):
            self.gauges = {
                str(name): dict(gauge)
                for name, gauge in gauges.items()
                if isinstance(gauge, dict) and {"value", "min", "max", "count"} <= set(gauge)
            }
        position = metadata.get("statbus_journal_position")
        if same_run and type(position) is int:
            self._written = position

    def set_gauge(self, name: str, value: float) -> None:
        """Update one gauge as ML-Agents' ``set_gauge`` does; NaN is ignored.

        Infinities are ignored too: JSON has no infinity, and a file that
        ``json.loads`` accepts but other readers reject helps nobody.
        """
        if not math.isfinite(value):
            return
        gauge = self.gauges.get(name)
        if gauge is None:
            self.gauges[name] = {"value": value, "min": value, "max": value, "count": 1}
        else:
            gauge["value"] = value
            gauge["min"] = min(gauge["min"], value)
            gauge["max"] = max(gauge["max"], value)
            gauge["count"] += 1
        self._dirty = True

    def write_stats(self, category: str, values: Dict[str, StatsSummary], step: int) -> None:
        position = journal_position()
        if already_written(position, self._written):
            logger.debug("gauges: dropping replayed summary %s step %s (journal position %s)", category, step, position)
            return
        for key, summary in values.items():
            self.set_gauge(sanitize_gauge_name(f"{category}.{key}.mean"), float(summary.mean))
            self.set_gauge(sanitize_gauge_name(f"{category}.{key}.sum"), float(summary.sum))
        if position is not None:
            self._written = position
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.flush_secs:
            self.flush()

    def as_tree(self) -> Dict[str, Any]:
        """The timers.json document: ML-Agents' root node with gauges and metadata."""
        return {
            "name": "root",
            "gauges": self.gauges,
            "metadata": {
                "timer_format_version": TIMER_FORMAT_VERSION,
                "start_time_seconds": _start_time_text(self.start_time),
                "last_update_seconds": str(int(time.time())),
                "statbus_journal_position": self._written,
            },
        }

    def flush(self) -> None:
        """Rewrite the file atomically if anything changed since the last rewrite."""
        self._last_flush = time.monotonic()
        if not self._dirty:
            return
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(self.as_tree(), f, indent=4, allow_nan=False)
        os.replace(temporary, self.path)
        self._dirty = False

    def close(self) -> None:
        self.flush()


def _start_time_text(start_time: float) -> str:
    # ML-Agents writes start_time_seconds as a string of whole seconds; the
    # full value is kept so that a run is recognised exactly.
    return repr(float(start_time))


def get_gauges_writer(run_options: RunOptions) -> List[StatsWriter]:
    """Registration function of the ``gauges`` plugin.

    Plugin options: ``flush_secs`` (default 5): how often the file is
    rewritten while summaries come in.
    """
    options = run_options.plugin_options
    path = os.path.join(run_options.checkpoint_settings.run_logs_dir, FILE_NAME)
    return [
        GaugesWriter(
            path,
            start_time=run_options.start_time,
            resume=run_options.resume,
            flush_secs=float(options.get("flush_secs", DEFAULT_FLUSH_SECS)),
        )
    ]
