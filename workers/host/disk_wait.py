"""A writer whose output hits a full disk waits for space inside its worker, instead of crashing.

Why in the worker host and not in the supervisor's restart policy (a "disk full"
exit code that does not count against the restart budget): a restart throws away
what the writer holds in memory — its buffered output, its open files — and
re-imports the plugin and replays everything since the last commit, once per
attempt, for as long as the disk stays full; and a record being delivered at
each crash would be taken for poison and set aside after three.  Retrying the
one call that failed keeps all of it: the writer's state, the entry being
delivered, the cursor.  Each value and summary reaches each writer once, and the
writers built on :class:`~statbus.plugins.writers.output_file.OutputFile` complete
their files exactly where they stopped.  Meanwhile the heartbeat thread keeps
beating and the call-timeout clock is off (``busy_since`` is 0 between tries),
so the supervisor sees a live, waiting plugin; ``statbus status`` shows it from
the state page's ``disk_full_since``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from ...plugins.errors import StatbusError, disk_full_error
from ..statepage import StatePage

logger = logging.getLogger(__name__)

DISK_RETRY_FIRST = 0.5
"""Seconds before the first retry of a call that failed on a full disk ..."""
DISK_RETRY_MAX = 5.0
"""... doubling up to this: prompt once space is back, cheap while it is not."""
_STEP = 0.05


class StoppedWaiting(StatbusError):
    """The host was told to stop while a writer waited for disk space (nothing was committed past it)."""


class DiskWait:
    """Retries one failed writer call until it returns, a non-disk error, or a stop request."""

    def __init__(
        self,
        page: StatePage,
        should_stop: Callable[[], bool],
        plugin: str,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._page = page
        self._should_stop = should_stop
        self._plugin = plugin
        self._sleep = sleep
        self._clock = clock

    def retry(self, error: OSError, what: str, call: Callable[[], Any]) -> None:
        """``call`` (the call that raised ``error``) again, with backoff, until it succeeds.

        Raises what ``call`` raises when that is not a full disk, and
        :class:`StoppedWaiting` on a stop request.
        """
        page = self._page
        started = self._clock()
        page.disk_full_since = time.time()
        logger.warning(
            "plugin %s: %s hit a full disk (%s); waiting for space, trying again every %g to %g s "
            "(nothing is skipped or written twice)",
            self._plugin, what, error.strerror or error, DISK_RETRY_FIRST, DISK_RETRY_MAX,
        )
        delay = DISK_RETRY_FIRST
        tries = 0
        try:
            while True:
                page.busy_since = 0.0  # waiting is not hanging: the call timeout must not fire
                self._wait(delay)
                delay = min(delay * 2, DISK_RETRY_MAX)
                tries += 1
                page.busy_since = time.time()
                try:
                    call()
                except (Exception, SystemExit) as exc:
                    if disk_full_error(exc) is None:
                        raise
                    continue
                break
        finally:
            page.disk_full_since = 0.0
        logger.warning(
            "plugin %s: disk space is back after %.0f s (%d tries); carrying on", self._plugin, self._clock() - started, tries
        )

    def _wait(self, seconds: float) -> None:
        deadline = self._clock() + seconds
        while True:
            if self._should_stop():
                raise StoppedWaiting(f"plugin {self._plugin}: stopped while waiting for disk space")
            left = deadline - self._clock()
            if left <= 0:
                return
            self._sleep(min(_STEP, left))
            if left <= _STEP:
                return
