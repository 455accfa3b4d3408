"""Starting the collector as a detached daemon and waiting until it is ready.

Used by ``statbus collector start`` and by trainers that start a collector on
demand.  The daemon is the same program as ``statbus collector start
--foreground`` (``python -m statbus.pipeline``), started in its own session with
its output in the run's ``collector.log``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from typing import List, Mapping, NamedTuple, Optional, Sequence

from ....plugins import StatbusError
from ....workers.exits import ExitCode
from ....workers.pids import pid_alive
from ...layout import RunLayout
from .pidfile import AlreadyRunning, read_pid, running_pid
from .socket_dirs import listening, owner_pid

logger = logging.getLogger(__name__)



class StartFailed(StatbusError):
    """The daemon exited, or never became ready, instead of serving."""


@dataclasses.dataclass(frozen=True)
class Started:
    pid: int
    address: str
    already_running: bool = False
    under_way: bool = False
    """Another process is starting it (it holds the starters' lock); not waited for."""


def collector_command(layout: RunLayout, extra: Sequence[str] = ()) -> List[str]:
    return [
        sys.executable,
        "-m",
        "statbus.pipeline",
        "--run-id",
        layout.run_id,
        "--results-dir",
        layout.results_dir,
        *extra,
    ]


def is_ready(layout: RunLayout, timeout: float = 0.5) -> bool:
    """True when a collector answers on the run's control socket."""
    from ...control import control_request

    if running_pid(layout.pid_file) is None:
        return False
    try:
        reply = control_request(layout.control_address, {"op": "ping"}, timeout=timeout)
    except StatbusError:
        return False
    return bool(reply.get("ok"))


def _log_tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def start_detached(
    layout: RunLayout,
    extra: Sequence[str] = (),
    timeout: float = 30.0,
    env: Optional[Mapping[str, str]] = None,
) -> Started:
    """Start a collector for ``layout`` and return once it answers.

    Raises :class:`AlreadyRunning` when one already holds the run's pidfile and
    :class:`StartFailed` (with the end of its log) when it exits or does not
    become ready within ``timeout``.
    """
    pid = running_pid(layout.pid_file)
    if pid is not None:
        raise AlreadyRunning(layout.pid_file, pid)
    os.makedirs(layout.statbus_dir, exist_ok=True)
    with open(layout.log_file, "ab") as log:
        process = subprocess.Popen(
            collector_command(layout, extra),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=None if env is None else dict(env),
        )
    # Reap the daemon whenever it ends, so a long-lived starter (a trainer)
    # never keeps a zombie; a CLI starter exits long before that.
    threading.Thread(target=process.wait, name="statbus-daemon-reaper", daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.returncode if process.returncode is not None else process.poll()
        if code is not None:
            if code == ExitCode.ALREADY_RUNNING:
                raise AlreadyRunning(layout.pid_file, read_pid(layout.pid_file))
            raise StartFailed(
                f"the collector exited with code {code} before it was ready; "
                f"end of {layout.log_file}:\n{_log_tail(layout.log_file)}"
            )
        if is_ready(layout, timeout=0.5):
            return Started(process.pid, layout.data_address)
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise StartFailed(
        f"the collector was not ready within {timeout:.0f} s and was killed; "
        f"end of {layout.log_file}:\n{_log_tail(layout.log_file)}"
    )


def ensure_running(
    layout: RunLayout,
    extra: Sequence[str] = (),
    timeout: float = 30.0,
    env: Optional[Mapping[str, str]] = None,
    wait_behind: bool = True,
) -> Started:
    """Make sure exactly one collector serves ``layout``; start it if none does.

    Starters serialize on a lock file, so that many trainers starting at once
    spawn one daemon between them instead of a crowd that all but one lose.
    ``wait_behind=False``: when another starter holds that lock, return at once
    (``under_way``) instead of queueing behind it.
    """
    os.makedirs(layout.statbus_dir, exist_ok=True)
    fd = os.open(layout.autostart_lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait_behind else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return Started(0, layout.data_address, already_running=True, under_way=True)
        if is_ready(layout):
            pid = read_pid(layout.pid_file) or 0
            return Started(pid, layout.data_address, already_running=True)
        try:
            return start_detached(layout, extra, timeout, env=env)
        except AlreadyRunning as exc:
            # Started by someone who does not take the starters' lock (a script):
            # it is coming up; wait for it to answer.
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if is_ready(layout):
                    return Started(exc.pid or 0, layout.data_address, already_running=True)
                time.sleep(0.1)
            raise
    finally:
        os.close(fd)


class Found(NamedTuple):
    pid: int
    by_pidfile: bool
    """False: the pidfile is gone or not the collector's, found through the run's socket directory."""


def _is_collector(pid: int) -> bool:
    """True when process ``pid`` is a statbus collector (its command line says so)."""
    import psutil

    try:
        return any("statbus.pipeline" in part for part in psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def find_collector(layout: RunLayout, timeout: float = 2.0) -> Optional[Found]:
    """The run's live collector: by its pidfile, else through the run's socket directory.

    A collector whose run folder was deleted or replaced, or whose pidfile was removed,
    has no pidfile the path names; its socket directory (named by the run folder's
    path) still has its ``ctl`` socket, which answers ``ping`` with its pid, and its
    ``owner`` file, whose pid counts if that process is a statbus collector (one too
    busy or stuck to answer).
    """
    from ...control import control_request

    pid = running_pid(layout.pid_file)
    if pid is not None:
        return Found(pid, True)
    if listening(layout.control_address[len("ipc://"):]):
        try:
            reply = control_request(layout.control_address, {"op": "ping"}, timeout=timeout)
        except StatbusError:
            reply = {}
        pid = reply.get("pid")
        if isinstance(pid, int) and reply.get("run_id") == layout.run_id:
            return Found(pid, False)
    pid = owner_pid(layout.socket_dir)
    if pid is not None and pid_alive(pid) and _is_collector(pid):
        return Found(pid, False)
    return None


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` (not our child) is gone; True if it is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False



def default_layout(run_id: Optional[str], results_dir: Optional[str]) -> RunLayout:
    return RunLayout(results_dir or os.environ.get("STATBUS_RESULTS_DIR", "results"),
                     run_id or os.environ.get("STATBUS_RUN_ID", "ppo"))
