"""The collectors' socket directories under ``statbus-<uid>/``: claimed at start, removed at stop.

A collector binds its ``ipc://`` sockets (``data``, ``work``, ``ctl``) in a private
directory per run (:attr:`RunLayout.socket_dir`) and writes there an ``owner`` file
naming its pidfile.  A clean stop removes the sockets and the directory.  A
collector killed with SIGKILL cannot; the next collector to start (of any run)
removes the directories of collectors that are provably dead:

* the pidfile their ``owner`` names is not locked (the lock, not the pid, says a
  collector lives: :mod:`.pidfile`) — the sweeper holds that lock while it looks
  and removes, so no collector of that run can start and claim the directory
  meanwhile (:class:`.pidfile.PidFile` waits out such a short hold) — and
* every socket file in them refuses a connection (nobody listens).

A directory without an ``owner`` (made by an older statbus) counts as dead only
when its sockets refuse connections and it is older than :data:`UNOWNED_MIN_AGE`,
so that a directory a starting collector has just made is never taken from it.
Only socket files and the ``owner`` file are removed: a directory holding anything
else stays.

A run folder deleted or replaced under a live collector makes a second case: the
directory's name comes from the run folder's *path*, so the collector a new training
starts there claims the directory the old one still holds.  The old one notices that
its folder is gone (:mod:`.run_folder`) and leaves within a second or two; the new one
waits for that (:data:`PREDECESSOR_PATIENCE`) before it claims, and a collector only
ever removes a directory whose ``owner`` is itself.  The ``owner`` file and the ``ctl``
socket are also how the ``statbus`` command finds a collector whose pidfile is gone
(:func:`owner_pid`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat
import time
from typing import Any, Callable, Dict, List, Optional

from ....workers.pids import pid_alive
from ...layout import RunLayout, make_private_dir, socket_root
from .pidfile import hold_if_free

logger = logging.getLogger(__name__)

OWNER_FILE = "owner"
SOCKET_NAMES = ("data", "work", "ctl")
UNOWNED_MIN_AGE = 60.0
"""Seconds a directory without an owner file must be unchanged before it may be removed."""
CONNECT_TIMEOUT = 0.2
PREDECESSOR_PATIENCE = 10.0
"""Seconds a starting collector waits for a live predecessor to leave the run's socket directory."""
PREDECESSOR_POLL = 0.05


def claim(layout: RunLayout, patience: float = PREDECESSOR_PATIENCE) -> str:
    """Make the run's socket directory and say who owns it; call with the run's pidfile held."""
    make_private_dir(socket_root())
    _await_predecessor(make_private_dir(layout.socket_dir), patience)
    while True:
        # Made again: a predecessor that just left removed it (and may be removing it still).
        directory = make_private_dir(layout.socket_dir)
        path = os.path.join(directory, OWNER_FILE)
        temporary = f"{path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump({"pid": os.getpid(), "pidfile": os.path.abspath(layout.pid_file)}, handle)
        except FileNotFoundError:
            continue
        os.replace(temporary, path)
        return directory


def _await_predecessor(directory: str, patience: float) -> None:
    """Wait until no other collector owns ``directory``; past ``patience``, take it anyway.

    Called with the run's pidfile held: a collector still listening here holds no lock
    on that file, so its run folder was deleted or replaced, and it leaves by itself
    (its :func:`release` removes the ``owner`` file last, after its sockets).
    """
    pid = owner_pid(directory)
    if pid is None or pid == os.getpid() or not pid_alive(pid) or _nobody_listens(directory):
        return
    logger.warning(
        "the socket directory %s is still held by collector pid %s, whose run folder was deleted or "
        "replaced; waiting up to %.0f s for it to notice and leave", directory, pid, patience,
    )
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        time.sleep(PREDECESSOR_POLL)
        if owner_pid(directory) != pid or not pid_alive(pid):
            logger.info("collector pid %s left the socket directory %s", pid, directory)
            return
    logger.warning(
        "collector pid %s did not leave the socket directory %s within %.0f s; taking it over "
        "(that collector is out of reach of the statbus command now: end it with kill %s)",
        pid, directory, patience, pid,
    )


def release(directory: str) -> None:
    """Remove this collector's sockets, owner file and directory (what else is there stays).

    A directory another collector has claimed since (this one's run folder was replaced)
    is that one's: nothing of it is touched.
    """
    owner = owner_pid(directory)
    if owner is not None and owner != os.getpid():
        logger.info("left the socket directory %s to collector pid %s", directory, owner)
        return
    for name in (*SOCKET_NAMES, OWNER_FILE):
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("could not remove %s: %s", os.path.join(directory, name), exc)
    try:
        os.rmdir(directory)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            logger.warning("could not remove the socket directory %s: %s", directory, exc)


def listening(path: str) -> bool:
    """True when something accepts a connection on the AF_UNIX socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(CONNECT_TIMEOUT)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return True  # cannot tell (a timeout, a full backlog): assume alive
    finally:
        probe.close()
    return True


def _owner(directory: str) -> Dict[str, Any]:
    try:
        with open(os.path.join(directory, OWNER_FILE), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _owner_pidfile(directory: str) -> Optional[str]:
    pidfile = _owner(directory).get("pidfile")
    return pidfile if isinstance(pidfile, str) else None


def owner_pid(directory: str) -> Optional[int]:
    """The pid the ``owner`` file of ``directory`` names (the collector that claimed it), or None."""
    pid = _owner(directory).get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def _nobody_listens(directory: str) -> bool:
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        try:
            is_socket = stat.S_ISSOCK(os.lstat(path).st_mode)
        except OSError:
            continue
        if is_socket and listening(path):
            return False
    return True


def _remove(directory: str) -> None:
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if entry == OWNER_FILE or stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    os.rmdir(directory)


def remove_if_dead(directory: str, clock: Callable[[], float] = time.time) -> bool:
    """Remove ``directory`` if it belonged to a collector that is provably gone; True if removed."""
    pidfile = _owner_pidfile(directory)
    if pidfile is None:
        if clock() - os.stat(directory).st_mtime < UNOWNED_MIN_AGE or not _nobody_listens(directory):
            return False
        _remove(directory)
        return True
    with hold_if_free(pidfile) as free:
        if not free or not _nobody_listens(directory):
            return False
        _remove(directory)
        return True


def sweep_dead(keep: Optional[str] = None, clock: Callable[[], float] = time.time) -> List[str]:
    """Remove the socket directories of dead collectors; the directories removed.  Never raises."""
    root = socket_root()
    try:
        names = os.listdir(root)
    except OSError:
        return []
    uid = os.getuid()
    removed = []
    for name in sorted(names):
        directory = os.path.join(root, name)
        if keep is not None and os.path.abspath(directory) == os.path.abspath(keep):
            continue
        try:
            info = os.lstat(directory)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or not remove_if_dead(directory, clock):
                continue
        except OSError as exc:
            logger.debug("left the socket directory %s: %s", directory, exc)
            continue
        removed.append(directory)
    if removed:
        logger.info("removed %d socket director%s of stopped collectors", len(removed), "y" if len(removed) == 1 else "ies")
    return removed
