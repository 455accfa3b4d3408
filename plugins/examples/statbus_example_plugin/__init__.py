"""An example stats-writer plugin, written the way an ML-Agents plugin author writes one.

It imports only ML-Agents' names (``mlagents.trainers.stats`` and
``mlagents.trainers.settings``): it runs under ``mlagents-learn`` and, unchanged,
in a statbus worker, which provides those modules where mlagents is not installed.

For every summary it appends one line ``<category> <step> <key>=<mean> ...`` to
``<results_dir>/<run_id>/example_plugin.txt`` and flushes it, so that what it
wrote can be checked while the run goes on.
"""

import os
from typing import Dict, List

from mlagents.trainers.settings import RunOptions
from mlagents.trainers.stats import StatsSummary, StatsWriter

OUTPUT_FILE = "example_plugin.txt"


class ExampleWriter(StatsWriter):
    """Appends one text line per summary.

    ``add_property`` and ``on_add_stat`` are left to StatsWriter's defaults,
    which do nothing: a plugin implements only what it needs.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def write_stats(self, category: str, values: Dict[str, StatsSummary], step: int) -> None:
        fields = " ".join(f"{key}={summary.mean:g}" for key, summary in values.items())
        self._write(f"{category} {step} {fields}".rstrip())

    def _write(self, line: str) -> None:
        self._file.write(line + "\n")
        # Flushed per line so that a reader (or a test) sees it at once.
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def get_example_writer(run_options: RunOptions) -> List[StatsWriter]:
    """The registration function named by the entry point in pyproject.toml."""
    path = os.path.join(run_options.checkpoint_settings.write_path, OUTPUT_FILE)
    return [ExampleWriter(path)]
