"""What every watcher of one supervisor shares: where a run's per-plugin files are, the clocks, how to spawn."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from typing import Any, Callable, Mapping, Optional

from ...plugins.settings import RunOptions
from .processes import DEFAULT_GRACE, Spawn

DeadLetterSource = Callable[[str, int], Optional[Mapping[str, Any]]]
"""``(plugin, position) -> record``: the journal entry a poison record's dead-letter line quotes."""


@dataclasses.dataclass(frozen=True)
class WorkerPaths:
    """Where the supervisor keeps a run's per-plugin files: the folders are the run layout's
    (``pipeline/layout.py`` ``RunLayout.worker_paths``), each plugin's file in them named here."""

    consumers_dir: str
    logs_dir: str
    dead_letter_dir: str

    def state_file(self, plugin: str) -> str:
        return os.path.join(self.consumers_dir, f"{plugin}.state")

    def log_file(self, plugin: str) -> str:
        return os.path.join(self.logs_dir, f"{plugin}.log")

    def dead_letter_file(self, plugin: str) -> str:
        return os.path.join(self.dead_letter_dir, f"{plugin}.jsonl")


@dataclasses.dataclass(frozen=True)
class WatchContext:
    """What every watcher of one supervisor shares: the run, the clocks, how to spawn."""

    paths: WorkerPaths
    run_options: RunOptions
    worker_address: str
    head: Callable[[], int]
    """The journal head now (a new plugin's first cursor, unless it back-fills)."""
    stopping: Callable[[], bool]
    """True once the supervisor shuts down: nothing is started any more."""
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    spawn: Spawn = subprocess.Popen
    on_dead_letter: Optional[DeadLetterSource] = None
    grace: float = DEFAULT_GRACE
    sample_interval: float = 1.0
    env: Optional[Mapping[str, str]] = None
    log_level: Optional[str] = None
