"""Whether a process exists: the one check every statbus process uses (collector, worker host, CLI)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while a process with id ``pid`` (> 0) exists, ours or another user's.

    Signal 0 probes without touching the process.  ``PermissionError`` means it
    exists but belongs to someone else: alive, the safe answer for every caller
    (a collector kept up, a parent not yet mourned, a stop still waited for).
    No process has an id <= 0 (to ``kill()`` those name process groups): False.
    What a missing pid (None) means is each caller's to say before asking.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
