"""One live worker host per plugin of a run: an exclusive lock held for the host's whole life.

A host's writers read back what their predecessor wrote and skip it (the
"nothing twice" rule of :mod:`statbus.plugins.delivery`); that is only right when
the predecessor has stopped writing.  A collector killed with SIGKILL leaves its
hosts running until their heartbeat sees the parent gone (0.75 s, far longer on a
loaded machine: hosts run at a lower priority), and meanwhile they reconnect to
the next collector's socket and go on delivering, while that collector's new host
of the same plugin reads back and delivers the same entries: everything twice.

So a host takes an ``flock`` on ``<state page>.lock`` before it loads its plugin
and keeps it until it exits; the kernel drops it at any death, SIGKILL included.
A host that finds it taken waits, saying which pid holds it, and again every
:data:`REPORT_EVERY` seconds, until the holder is gone or it is told to stop.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import time
from typing import Callable, Optional

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.1
"""Seconds between two tries while another host holds the lock."""

REPORT_EVERY = 10.0
"""Seconds between two log lines of a host still waiting."""


def lock_path(state_file: str) -> str:
    """The plugin's lock file, beside its state page."""
    return state_file + ".lock"


def _holder(fd: int) -> str:
    """The pid the holder wrote into the lock file, as text (``"?"`` when unreadable)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"


def acquire(path: str, plugin: str, should_stop: Callable[[], bool], wake_fd: Optional[int] = None,
            clock: Callable[[], float] = time.monotonic) -> Optional[int]:
    """Take the lock at ``path``, waiting for its holder; the open fd (keep it open), or None if told to stop first.

    ``wake_fd`` (readable when a signal arrived) ends a wait between two tries at once.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        started = reported = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            now = clock()
            if started is None:
                started = reported = now
                logger.warning("plugin %s: another worker host of this plugin (pid %s) is still running; "
                               "waiting for it to end before delivering (lock %s)", plugin, _holder(fd), path)
            elif now - reported >= REPORT_EVERY:
                reported = now
                logger.warning("plugin %s: still waiting for worker host pid %s to end (%.0f s so far)",
                               plugin, _holder(fd), now - started)
            if should_stop():
                os.close(fd)
                return None
            if wake_fd is not None:
                select.select([wake_fd], [], [], POLL_INTERVAL)
            else:
                time.sleep(POLL_INTERVAL)
        if started is not None:
            logger.info("plugin %s: the earlier worker host ended after %.1f s; going on", plugin, clock() - started)
        try:  # only for the message of a host waiting after us: a full disk must not stop this one
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError as exc:
            logger.debug("plugin %s: could not write our pid into %s: %s", plugin, path, exc)
        return fd
    except BaseException:
        os.close(fd)
        raise
