"""The host's heartbeat thread: proof of life on the state page, and the host's own watchdog.

It ends the process when the collector (the parent) is gone, or when a writer
call has been stuck past ``call_timeout``: the main thread may be the one stuck.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Optional

from ..exits import ExitCode, die
from ..pids import pid_alive
from ..statepage import StatePage

HEARTBEAT_INTERVAL = 0.75
"""Seconds between two heartbeats (and parent / call-timeout checks); the supervisor asks for a
quarter of the plugin's ``heartbeat_timeout`` (0.75 s for the default 3 s), one a second at most."""

CALL_TIMEOUT_GRACE = 1.0
"""The host gives up on a stuck writer call this long after ``call_timeout``:
the supervisor, which watches ``busy_since``, normally acts first."""


class Heartbeat(threading.Thread):
    """Beats every ``interval`` s; ends the process when the parent is gone or a call is stuck."""

    def __init__(
        self,
        page: StatePage,
        parent_pid: Optional[int],
        call_timeout: Optional[float],
        current_call: Callable[[], str],
        interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        super().__init__(name="statbus-heartbeat", daemon=True)
        self._page = page
        self._parent_pid = parent_pid
        self._ppid_at_start = os.getppid()
        self._call_timeout = call_timeout
        self._current_call = current_call
        self._stop_event = threading.Event()
        self._interval = interval

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def run(self) -> None:
        while True:
            now = time.time()
            self._page.heartbeat = now
            # Without --parent-pid only the reparenting check applies.
            parent_gone = self._parent_pid is not None and not pid_alive(self._parent_pid)
            if os.getppid() != self._ppid_at_start or parent_gone:
                # The collector died without stopping us: nobody reads what we
                # would write, and lingering would hold the plugin's files.
                die(ExitCode.LOST_PARENT, f"parent process {self._parent_pid or self._ppid_at_start} is gone")
            busy_since = self._page.busy_since
            if self._call_timeout is not None and busy_since and now - busy_since > self._call_timeout + CALL_TIMEOUT_GRACE:
                die(ExitCode.WRITER_CRASH, f"{self._current_call()} did not return within {self._call_timeout:g} s")
            if self._stop_event.wait(self._interval):
                return
