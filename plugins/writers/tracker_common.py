"""What the ``wandb`` and ``mlflow`` writers share: the tracker run's identity, their folder, names, values.

Both writers keep a folder of their own under the run's statbus folder
(``<results_dir>/<run_id>/statbus/trackers/<name>/``) holding a lock that
only one worker at a time can take: a restarted worker (or one started by a
new collector) waits there until its predecessor is gone, so two processes
never log into the same tracker run at once, and what the tracker holds is
settled when the new worker reads it back.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
import re
import time
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

from ..delivery import journal_position
from ..errors import PluginError
from ..settings import RunOptions
from ..stats import StatsAggregationMethod, StatsSummary, sum_and_mean

logger = logging.getLogger(__name__)

LOCK_TIMEOUT = 60.0
"""Seconds a worker waits for its predecessor's lock (a worker the host's parent lost dies within seconds)."""


def tracker_dir(run_options: RunOptions, name: str) -> str:
    """``<write_path>/statbus/trackers/<name>``, created."""
    path = os.path.join(run_options.checkpoint_settings.write_path, "statbus", "trackers", name)
    os.makedirs(path, exist_ok=True)
    return path


def tracker_run_key(run_options: RunOptions) -> str:
    """The statbus run's identity as a tracker run id: ``<run_id>-<8 hex>``.

    The same for every worker and collector of one run (the run's start time is
    its ``run.json``'s), different for a run started over (``--force``, or after
    ``rm -rf results``): W&B run ids allow letters, digits, ``-`` and ``_``.
    """
    where = os.path.realpath(run_options.checkpoint_settings.write_path)
    digest = hashlib.sha1(f"{where}\0{run_options.run_id}\0{run_options.start_time!r}".encode()).hexdigest()[:8]
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", run_options.run_id).strip("-")[:48] or "run"
    return f"{readable}-{digest}"


def take_lock(directory: str, timeout: float = LOCK_TIMEOUT) -> int:
    """Hold ``directory/lock`` for the life of this process (returns its descriptor).

    Raises PluginError when another live process keeps it past ``timeout``.
    """
    fd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise PluginError(os.path.basename(directory), f"{directory}/lock is held by another worker") from None
            if not waited:
                logger.info("waiting for the previous worker of %s to end", directory)
                waited = True
            time.sleep(0.1)


def flatten(value: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """``{"a": {"b": 1}}`` → ``("a.b", 1)``: nested settings as MLflow params (lists stay whole)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def scalar(summary: StatsSummary) -> Optional[float]:
    """The point a summary puts on a chart: its sum for SUM, else its mean; None when it holds no value.

    HISTOGRAM keys give their mean too (what ML-Agents' TensorBoard scalar shows).
    """
    if not summary.full_dist:
        return None
    total, mean = sum_and_mean(summary.full_dist)
    return float(total if summary.aggregation_method is StatsAggregationMethod.SUM else mean)


def finite_values(summary: StatsSummary) -> list:
    return [float(v) for v in summary.full_dist if math.isfinite(v)]


class CallMarks:
    """Each writer call's mark: (journal position of its entry, its ordinal among the calls of that entry).

    A worker caught up from the journal makes the same calls for the same entries, so a
    call whose mark is at or below the highest a tracker (or the outbox) holds is a replay.
    A step cannot tell: a late ``SummaryWriter`` value is a second summary at a step
    already written, and steps may go back.  Outside a worker host there is no position
    and every call is new (mark None).
    """

    def __init__(self) -> None:
        self._position: Optional[int] = None
        self._ordinal = 0

    def next(self) -> Optional[Tuple[int, int]]:
        position = journal_position()
        if position is None:
            return None
        if position != self._position:
            self._position, self._ordinal = position, 0
        else:
            self._ordinal += 1
        return (position, self._ordinal)
