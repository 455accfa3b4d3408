"""The in-process baseline: writers called synchronously under one global lock.

This is how an ML-Agents trainer reaches its writers: the reporter state is
process-global, every ``add_stat`` takes the one lock and calls every
writer's ``on_add_stat``, and ``write_stats`` takes the same lock, builds the
period's summaries and calls every writer's ``write_stats`` before it
returns.  A slow writer therefore stalls the caller and every other thread
that records a value; a raising writer raises into the training loop.  Written
from that description for the benchmark; statbus itself never does this.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict
from typing import Dict, List

from ...plugins.settings import RunOptions
from ...plugins.stats import StatsAggregationMethod, StatsSummary, StatsWriter
from ...plugins.writers.console import get_console_writer
from ...plugins.writers.gauges import get_gauges_writer
from ...plugins.writers.jsonl import get_jsonl_writer
from ...plugins.writers.tensorboard import get_tensorboard_writer

CONSOLE_LOGGER = "statbus.console"
"""The console writer's logger; in the baseline its lines go to a file, not over the table."""


class InProcessReporter:
    """ML-Agents-style ``StatsReporter``; the writer list and the values are shared by every instance."""

    writers: List[StatsWriter] = []
    lock = threading.Lock()
    values: Dict[str, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    methods: Dict[str, Dict[str, StatsAggregationMethod]] = defaultdict(dict)

    def __init__(self, category: str) -> None:
        self.category = category

    @classmethod
    def reset(cls, writers: List[StatsWriter]) -> None:
        with cls.lock:
            cls.writers = list(writers)
            cls.values.clear()
            cls.methods.clear()

    def add_stat(self, key: str, value: float,
                 aggregation: StatsAggregationMethod = StatsAggregationMethod.AVERAGE) -> None:
        with InProcessReporter.lock:
            self.values[self.category][key].append(value)
            self.methods[self.category][key] = aggregation
            for writer in self.writers:
                writer.on_add_stat(self.category, key, value, aggregation)

    def write_stats(self, step: int) -> None:
        with InProcessReporter.lock:
            summaries = {
                key: StatsSummary(list(values), self.methods[self.category].get(key, StatsAggregationMethod.AVERAGE))
                for key, values in self.values[self.category].items() if values
            }
            for writer in self.writers:
                writer.write_stats(self.category, summaries, step)
            self.values.pop(self.category, None)


def builtin_writers(results_dir: str, run_id: str) -> List[StatsWriter]:
    """The four built-in writers, as their plugins would register them; console lines go to a file."""
    console_logger = logging.getLogger(CONSOLE_LOGGER)
    if not any(getattr(h, "_statbus_bench", False) for h in console_logger.handlers):
        os.makedirs(results_dir, exist_ok=True)
        handler = logging.FileHandler(os.path.join(results_dir, "baseline-console.log"))
        handler._statbus_bench = True  # type: ignore[attr-defined]
        console_logger.addHandler(handler)
        console_logger.propagate = False
    options = RunOptions.create(run_id, results_dir)
    writers: List[StatsWriter] = []
    for register in (get_console_writer, get_tensorboard_writer, get_gauges_writer, get_jsonl_writer):
        writers.extend(register(options))
    return writers


def close_writers(writers: List[StatsWriter]) -> None:
    for writer in writers:
        close = getattr(writer, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001 — the benchmark's cleanup must go on
                logging.getLogger(__name__).exception("baseline writer close failed")
    console_logger = logging.getLogger(CONSOLE_LOGGER)
    for handler in list(console_logger.handlers):
        if getattr(handler, "_statbus_bench", False):
            console_logger.removeHandler(handler)
            handler.close()
    console_logger.propagate = True
