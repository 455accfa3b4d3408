"""The collector's pidfile, held with a lock for the collector's whole life.

The lock, not the file's existence, says whether a collector runs: after a
``kill -9`` the file stays but the lock is gone, so the next start proceeds.
A collector takes the lock *before* binding its sockets, which is what makes
many trainers starting collectors at once end up with exactly one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from typing import Iterator, Optional

from ....plugins import StatbusError
from ....workers.pids import pid_alive


class AlreadyRunning(StatbusError):
    def __init__(self, path: str, pid: Optional[int]) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"a collector is already running for this run ({who}; pidfile {path})")
        self.pid = pid


def read_pid(path: str) -> Optional[int]:
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def is_locked(path: str) -> bool:
    """True while some process holds the pidfile's lock (a collector is alive)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def hold_if_free(path: str) -> Iterator[bool]:
    """Hold the pidfile's lock for a moment if no collector holds it (True), else yield False.

    For the sweep of dead collectors' socket directories: while it holds the lock,
    no collector of that run can start.  A missing pidfile is free (nothing to hold).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


ACQUIRE_PATIENCE = 1.0
"""Seconds to wait for a lock held while the pid in the file is dead: a sweeper's short hold."""


def running_pid(path: str) -> Optional[int]:
    """The pid of the live collector, or None when none holds the lock."""
    return read_pid(path) if is_locked(path) else None


class PidFile:
    """Exclusive lock on ``path`` holding this process's pid; released at exit."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + ACQUIRE_PATIENCE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pid = read_pid(self.path)
                # A lock held while the recorded collector is dead is a sweeper's
                # (socket_dirs) for a few milliseconds: wait it out.
                if (pid is not None and pid_alive(pid)) or time.monotonic() >= deadline:
                    os.close(fd)
                    raise AlreadyRunning(self.path, pid) from None
                time.sleep(0.01)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self, unlink: bool = True) -> None:
        """Give up the lock; and remove the file if ``unlink`` and the path still names it."""
        if self._fd is None:
            return
        if unlink and self.is_ours():
            # Only our own file: after the run folder was replaced, the pidfile at this
            # path is the next collector's, and taking it away would hide that one.
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self._fd)
        self._fd = None

    def is_ours(self) -> bool:
        """True while :attr:`path` names the file this process locked (not deleted, not replaced)."""
        if self._fd is None:
            return False
        try:
            here, held = os.stat(self.path), os.fstat(self._fd)
        except OSError:
            return False
        return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)

    def restore(self) -> bool:
        """Put this process's pidfile back at :attr:`path` when nothing is there; True if it did.

        For a live collector whose pidfile was removed under it: without it the statbus
        command and the trainers take the run for collector-less.  The new file is
        locked before it is linked into place, so that a collector starting meanwhile
        either finds it held or has made its own first (then the link fails, and that
        one is left alone).
        """
        if self._fd is None or os.path.lexists(self.path):
            return False  # ours, or another process's: not ours to replace
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError:
            return False  # its folder is gone, or cannot be written: nothing to put back into
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
            os.link(temporary, self.path)
        except OSError:
            os.close(fd)
            return False
        finally:
            try:
                os.unlink(temporary)
            except OSError:
                pass
        os.close(self._fd)  # the lock on the removed file goes with it
        self._fd = fd
        return True

    def __enter__(self) -> "PidFile":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
