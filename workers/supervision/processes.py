"""One worker host as an operating-system process: spawn, signal, reap, sample, explain.

The supervisor decides *what* happens to a plugin (with :mod:`.states` and
:mod:`.policy`); this module is *how* it is done to the process, and nothing
else (split out of ``supervisor.py`` so that each module has one job):

* **Spawning**: ``python -m statbus.workers ...`` (never a fork of the
  threaded collector) in a new session, so the host leads a process group of
  its own; stdout and stderr appended to the plugin's log file after a
  ``--- statbus: starting ...`` banner, whose end offset is remembered so that
  the host's last error is looked for only in what *this* host wrote.
* **Signals** go to the whole group: whatever a plugin started goes with it.
* **Reaping**: an exit is noticed with ``waitid(WNOWAIT)`` first, the group
  is killed while the leader is still an unreaped zombie (its pid, which is
  the group id, cannot have been reused yet), and only then is it reaped.
* **Resources**: RSS of the host plus all its descendants, and CPU, by psutil.
* **Why it ended**: the host's own ``statbus-worker-error:`` line, else the
  exit code's name or the signal, else the last line it printed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from typing import Any, Callable, List, Mapping, Optional, Tuple

import psutil

from ..exits import HOST_EXITS, ExitCode, parse_error_line

logger = logging.getLogger(__name__)

DEFAULT_GRACE = 2.0
"""Seconds between TERM and KILL."""

LOG_TAIL_BYTES = 64 * 1024
"""How much of a host's log is searched for its last error line."""

LAST_OUTPUT_CHARS = 300
"""Longest piece of a host's last output quoted as its last error."""

FATAL_EXITS = frozenset({ExitCode.BAD_CONFIG, ExitCode.IMPORT_FAILURE, ExitCode.REGISTRATION_FAILURE})
"""Exits that restarting cannot fix."""

NOT_A_RECORD_FAULT = frozenset({ExitCode.LOST_PARENT, ExitCode.LOST_COLLECTOR}) | FATAL_EXITS
"""Exits that say nothing about the record in flight (no poison strike)."""

EXTERNAL_EXITS = frozenset({ExitCode.OK, ExitCode.LOST_COLLECTOR, -signal.SIGKILL})
"""Exits of a host the supervisor was not stopping that someone else caused.

A host exits OK only when told to stop (SIGTERM), LOST_COLLECTOR when this
collector did not answer for seconds (our stall, not the plugin's), and a
SIGKILL the supervisor did not send came from outside (an operator, a chaos
test, the OOM killer).
Neither is the plugin's or the record's fault: restart promptly, spending no
budget and striking no record (see :meth:`RestartPolicy.failed`).  The
supervisor's own kills (hang, memory cap) carry their own attribution."""

Spawn = Callable[..., "subprocess.Popen[bytes]"]


def descendant_pids(pid: int) -> Optional[List[int]]:
    """Every descendant of ``pid``, read from ``/proc/<pid>/task/<tid>/children``; None where Linux has no such file.

    psutil's ``children()`` reads the parent of every process of the machine
    (``/proc/*/stat``) each time: sampled once a second per worker, that was
    most of an idle collector's CPU on a busy machine.  These files list each
    thread's own children, a few small reads per worker.
    """
    found: List[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            if parent == pid and not os.path.isdir("/proc/self/task"):
                return None
            continue  # ended meanwhile
        for thread in threads:
            try:
                with open(f"/proc/{parent}/task/{thread}/children", "rb") as handle:
                    children = [int(field) for field in handle.read().split()]
            except FileNotFoundError:
                if not os.path.exists(f"/proc/{parent}/task/{thread}"):
                    continue  # the thread ended
                return None  # a kernel without CONFIG_PROC_CHILDREN
            except (OSError, ValueError):
                continue
            found.extend(children)
            pending.extend(children)
    return found


class ResourceSampler:
    """RSS (host plus descendants) and CPU of one host, sampled with psutil."""

    def __init__(self, pid: int) -> None:
        self.rss_mb = 0.0
        self.cpu_percent = 0.0
        self._next = float("-inf")
        try:
            self._process: Optional[psutil.Process] = psutil.Process(pid)
            self._process.cpu_percent(None)  # the first call only sets the reference point
        except psutil.Error:
            self._process = None

    def due(self, now: float, interval: float) -> bool:
        return self._process is not None and now >= self._next

    def sample(self, now: float, interval: float) -> None:
        self._next = now + interval
        process = self._process
        if process is None:
            return
        try:
            rss = process.memory_info().rss
            self.cpu_percent = process.cpu_percent(None)
            pids = descendant_pids(process.pid)
            children = process.children(recursive=True) if pids is None else pids
            for child in children:
                try:
                    rss += (psutil.Process(child) if isinstance(child, int) else child).memory_info().rss
                except psutil.Error:
                    pass  # a child that just ended uses nothing
        except psutil.Error:
            return  # the host is ending; its exit is handled by the next reap
        self.rss_mb = rss / (1024 * 1024)


def host_argv(
    python: str,
    *,
    plugin: str,
    group: str,
    target: str,
    address: str,
    state_file: str,
    run_options: Mapping[str, Any],
    call_timeout: float,
    heartbeat_timeout: float,
    log_level: Optional[str] = None,
) -> List[str]:
    """The command line of a worker host (docs/internals.md, "Worker host")."""
    argv = [
        python, "-m", "statbus.workers",
        "--plugin", plugin,
        "--group", group,
        "--target", target,
        "--address", address,
        "--state-file", state_file,
        "--run-options", json.dumps(dict(run_options), default=str),
        "--call-timeout", repr(float(call_timeout)),
        # Four beats at least within the timeout (the collector's quiet tick sees a beat up to 1 s
        # late): 0.75 s for the default 3 s; never slower than one a second (an idle host's wakeups).
        "--heartbeat-interval", repr(min(1.0, float(heartbeat_timeout) / 4)),
        "--parent-pid", str(os.getpid()),
    ]
    if log_level:
        argv += ["--log-level", log_level]
    return argv


class HostProcess:
    """A spawned worker host: its Popen, its log and its resource sampler."""

    def __init__(self, proc: "subprocess.Popen[bytes]", log_path: str, log_offset: int) -> None:
        self.proc = proc
        self.log_path = log_path
        self.log_offset = log_offset
        """Where this host's own output starts in the (shared, appended) log file."""
        self.resources = ResourceSampler(proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal_group(self, sig: signal.Signals) -> None:
        """``sig`` to the host's whole process group; a group already gone is fine."""
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # the whole group is gone already

    def reap(self) -> Optional[int]:
        """The host's exit status if it ended (its group then killed, itself reaped), else None."""
        try:
            # WNOWAIT: leave the zombie in place so the group id stays ours while
            # we kill whatever else the plugin left running in its group.
            if os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return None
            self.signal_group(signal.SIGKILL)
        except ChildProcessError:
            pass  # not our child (a spawn stand-in) or already reaped: poll decides
        return self.proc.poll()

    def describe_exit(self, returncode: int) -> str:
        """Why this host ended, in one line (see :func:`describe_exit`)."""
        return describe_exit(returncode, *read_log_tail(self.log_path, self.log_offset))


def spawn_host(
    argv: List[str],
    log_path: str,
    *,
    plugin: str,
    spawn: Spawn = subprocess.Popen,
    env: Optional[Mapping[str, str]] = None,
    wall_clock: Callable[[], float] = time.time,
    nice: int = 0,
) -> HostProcess:
    """Start one worker host in a session of its own, output appended to ``log_path``, ``nice`` lower in priority.

    Raises ``OSError`` when the log cannot be written or the interpreter not started.
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall_clock()))
        log.write(f"--- statbus: starting worker host for {plugin} at {stamp}\n".encode())
        log.flush()
        offset = log.tell()
        child_env = dict(os.environ if env is None else env)
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        proc = spawn(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=child_env,
        )
    if nice:
        _lower_priority(proc.pid, nice)
    return HostProcess(proc, log_path, offset)


def _lower_priority(pid: int, nice: int) -> None:
    """Renice the new host, whose one thread is still starting Python: its threads to come inherit it.

    Done from here rather than in the child (no ``preexec_fn`` in a threaded parent), a few
    milliseconds into its start; a host that already ended is no error.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))
    except ProcessLookupError:
        pass
    except OSError as exc:  # not permitted under some sandboxes: the host runs, at our priority
        logger.warning("could not lower the priority of worker host %d: %s", pid, exc)



def describe_exit(returncode: int, error: Optional[str], last_output: Optional[str] = None) -> str:
    """A one-line reason: the host's own error line, else the exit code or signal name.

    An exit status that is none of the host's codes means the host never got
    going (say, an interpreter without statbus installed): its last line of
    output then tells why.
    """
    if error:
        return error  # already "CODE_NAME: message"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    if returncode in HOST_EXITS:
        return ExitCode(returncode).name
    if last_output:
        return f"exit status {returncode}: {last_output[:LAST_OUTPUT_CHARS]}"
    return f"exit status {returncode}"


def read_log_tail(path: str, since: int) -> Tuple[Optional[str], Optional[str]]:
    """(last ``statbus-worker-error:`` message, last non-empty line) written after offset ``since``."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(since, size - LOG_TAIL_BYTES))
            tail = handle.read()
    except OSError:
        return None, None
    lines = [raw.decode("utf-8", "replace").strip() for raw in tail.splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        parsed = parse_error_line(line)
        if parsed is not None:
            return parsed, lines[-1]
    return None, (lines[-1] if lines else None)


def last_error_line(path: str, since: int) -> Optional[str]:
    """The last ``statbus-worker-error:`` message written to ``path`` after offset ``since``."""
    return read_log_tail(path, since)[0]
