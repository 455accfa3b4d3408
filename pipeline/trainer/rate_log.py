"""Trouble on the trainer side is logged at most once per kind per ``LOG_EVERY`` seconds."""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, Dict

LOG_EVERY = 10.0
"""Seconds between two log lines of the same kind of trouble."""


class RateLimitedLog:
    """At most one line per kind per ``LOG_EVERY`` seconds; the lines it swallowed are counted."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._last: Dict[str, float] = {}
        self._suppressed: Dict[str, int] = collections.Counter()

    def warn(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < LOG_EVERY:
            self._suppressed[kind] += 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._log.warning(message, *args)
