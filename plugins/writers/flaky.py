"""A deliberately flaky writer, for demonstrations of crash isolation.

It records every summary it receives in ``<write_path>/flaky_plugin.jsonl``
(before it may crash, so its output holds every summary at least once), then
ends its own process at random, about once every ``crash_every`` records.
It is not registered in any entry-point group: ``statbus demo`` makes it
discoverable for its own collector only.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Dict, List

from ..settings import RunOptions
from ..stats import StatsAggregationMethod, StatsSummary, StatsWriter

CRASH_EXIT_CODE = 13


class FlakyWriter(StatsWriter):
    def __init__(self, path: str, crash_every: int, seed: int | None = None) -> None:
        self.path = path
        self.crash_every = max(1, crash_every)
        self.rng = random.Random(seed)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    def _maybe_crash(self) -> None:
        if self.rng.random() < 1.0 / self.crash_every:
            # A hard exit, like a segfault in an extension: no cleanup runs.
            os._exit(CRASH_EXIT_CODE)

    def on_add_stat(
        self,
        category: str,
        key: str,
        value: float,
        aggregation: StatsAggregationMethod = StatsAggregationMethod.AVERAGE,
    ) -> None:
        self._maybe_crash()

    def write_stats(self, category: str, values: Dict[str, StatsSummary], step: int) -> None:
        line = {"category": category, "step": step, "keys": {k: v.num for k, v in values.items()}}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
        self._maybe_crash()

    def add_property(self, category: str, property_type: Any, value: Any) -> None:
        self._maybe_crash()


def get_flaky_writer(run_options: RunOptions) -> List[StatsWriter]:
    options = run_options.plugin_options
    path = os.path.join(run_options.checkpoint_settings.write_path, "flaky_plugin.jsonl")
    return [FlakyWriter(path, int(options.get("crash_every", 8000)), options.get("seed"))]
