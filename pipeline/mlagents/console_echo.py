"""The console writer's lines, printed in the terminal where ``statbus learn`` runs.

The ``console`` plugin runs in a worker whose output goes to the run's
``statbus/logs/console.log`` (as ``<time> <LEVEL> worker[console <pid>]
statbus.console: <message>``).  A thread of the launcher follows that file
and prints each of the writer's messages as ML-Agents' logger does
(``[INFO] <message>``); the lines of a multi-line message (the hyperparameters)
follow it.  Other loggers' lines (the worker's own) stay in the file.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from typing import IO, Optional

_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) worker\[\S+ \d+\] (\S+): (.*)$")
_CONSOLE_LOGGER = "statbus.console"
POLL_SECONDS = 1.0
"""ML-Agents prints a line per summary, seconds apart: a second late is on time, and the
training process's threads wake less (each wake-up of this thread also takes the GIL)."""


class ConsoleEcho:
    """Follows ``path`` from its current end; :meth:`stop` prints what is left and ends."""

    def __init__(self, path: str, out: Optional[IO[str]] = None) -> None:
        self.path = path
        self._out = out
        self._offset = os.path.getsize(path) if os.path.exists(path) else 0
        self._partial = b""
        self._echoing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="statbus-console-echo", daemon=True)

    def start(self) -> "ConsoleEcho":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._read()  # the worker's last lines, written before the collector stopped

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._read()

    def _read(self) -> None:
        try:
            if os.stat(self.path).st_size <= self._offset:
                return  # nothing new: one stat, no open (the common case)
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except OSError:
            return
        if not data:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        out = self._out or sys.stdout
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            match = _RECORD.match(line)
            if match is not None:
                level, name, message = match.groups()
                self._echoing = name == _CONSOLE_LOGGER
                if self._echoing:
                    out.write(f"[{level}] {message}\n")
            elif self._echoing:
                out.write(line + "\n")
        out.flush()
