"""The ``wandb`` writer's outbox: every row and config update it logs, written down first.

``run.log`` only hands a row to ``wandb-core``, which writes it to the run's ``.wandb``
file (and uploads it) later: a worker killed a moment after ``run.log`` returned loses
rows that the host may already have committed past (measured: 90 of 200 rows logged
just before a SIGKILL never reached the file).  So each row is appended here, handed
to the OS (``os.write``, which a SIGKILL of the process cannot undo), and only then
logged; a restarted worker logs again the rows of the outbox that the W&B run does
not hold (its next ``_step``: see :mod:`.wandb_tracker`).  One JSON line per entry::

    {"row": 12, "mark": [8812, 0], "category": "3DBall", "step": 5000, "values": {"3DBall/Reward": 1.5, "3DBall/Loss": {"histogram": [..]}}}
    {"row": 13, "mark": [9020, 1], "category": "3DBall", "step": 5000, "values": {"3DBall/tag": {"html": "..."}}}
    {"mark": [9020, 0], "config": {"3DBall": {...}}}

``row`` is the W&B ``_step`` the row was logged at; ``mark`` the writer call's journal
position and ordinal (:class:`.tracker_common.CallMarks`), null outside a worker host.  NaN and infinities are written as
Python's json writes them (this file is read only here).  A torn last line (a kill in
the middle of a write) is cut off when the outbox is opened.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List

logger = logging.getLogger(__name__)


class Outbox:
    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: List[Dict[str, Any]] = self._read()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _read(self) -> List[Dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        if end < len(data):
            # A row cut off mid-write was never logged: it comes again from the journal.
            with open(self.path, "rb+") as handle:
                handle.truncate(end)
            logger.warning("wandb: cut a torn last line (%d bytes) off %s", len(data) - end, self.path)
        entries = []
        for line in data[:end].splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                logger.warning("wandb: skipping an unreadable line of %s", self.path)
        return entries

    def append(self, entry: Dict[str, Any]) -> None:
        """Write ``entry`` down (to the OS, at once); the caller logs it to W&B afterwards."""
        data = (json.dumps(entry, separators=(",", ":")) + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError:
            # A full disk: no half line may stay before the retried call's whole one.
            if done:
                os.ftruncate(self._fd, size)
            raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
