"""The worker host's heartbeat (workers/host/heartbeat.py): proof of life on the state page, and the
host's own watchdog, ending the process when its parent is gone or a writer call is stuck.

The thread on its own (in this process, and in a child process it ends), then the host process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from collector_helpers import REPO
from host_process import Host, start, summary
from statbus.workers.exits import ExitCode, parse_error_line
from statbus.workers.host.heartbeat import Heartbeat
from statbus.workers.statepage import HostState, StatePage
from waiting import holds_for, wait_for
from zoo import zoo_env, zoo_plugin

BEATING = textwrap.dedent(
    """
    import sys, time
    from statbus.workers.host.heartbeat import Heartbeat
    from statbus.workers.statepage import StatePage

    path, parent, call_timeout, busy_for = sys.argv[1:]
    page = StatePage(path, create=True)
    page.busy_since = time.time() - float(busy_for) if float(busy_for) else 0.0
    # Said before the heartbeat starts: a gone parent or a stuck call may end the process at its first beat.
    print("beating", flush=True)
    Heartbeat(page, int(parent) if parent != "-" else None, float(call_timeout) if call_timeout != "-" else None,
              lambda: "write_stats('C', 7)", interval=0.05).start()
    sys.stdin.read()  # the main thread waits (or is the one stuck); only the heartbeat ends this process
    """
)


@pytest.fixture
def beating(tmp_path):
    """Starts a process whose heartbeat runs with the given parent pid, call timeout and busy time."""
    started = []

    def start_beating(parent: str = "-", call_timeout: str = "-", busy_for: float = 0.0) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", BEATING, str(tmp_path / "page.state"), parent, call_timeout, str(busy_for)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", "")),
        )
        started.append(process)
        assert process.stdout.readline().strip() == "beating", process.stderr.read()
        return process

    try:
        yield start_beating
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
            for stream in (process.stdin, process.stdout, process.stderr):
                if not stream.closed:
                    stream.close()


def error_of(process: subprocess.Popen) -> str:
    _, err = process.communicate(timeout=30)
    lines = [line for line in err.splitlines() if line.strip()]
    return parse_error_line(lines[-1]) if lines else ""


def test_it_beats_on_the_page_until_stopped(tmp_path) -> None:
    with StatePage(str(tmp_path / "page.state"), create=True) as page:
        heartbeat = Heartbeat(page, os.getpid(), None, lambda: "", interval=0.02)
        heartbeat.start()
        first = wait_for(lambda: page.heartbeat, what="a first heartbeat")
        wait_for(lambda: page.heartbeat > first, what="a second heartbeat")
        heartbeat.stop()
        assert not heartbeat.is_alive()
        last = page.heartbeat
        holds_for(lambda: page.heartbeat == last, 0.2, what="no heartbeat after stop()")


def test_a_parent_pid_that_is_gone_ends_the_process_with_lost_parent(beating) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    process = beating(parent=str(gone.pid))
    assert process.wait(timeout=30) == ExitCode.LOST_PARENT
    assert error_of(process) == f"LOST_PARENT: parent process {gone.pid} is gone"


def test_a_call_stuck_past_its_timeout_ends_the_process_naming_the_call(beating) -> None:
    process = beating(parent=str(os.getpid()), call_timeout="0.5", busy_for=60)
    assert process.wait(timeout=30) == ExitCode.WRITER_CRASH
    assert error_of(process) == "WRITER_CRASH: write_stats('C', 7) did not return within 0.5 s"


def test_a_live_parent_and_a_call_within_its_timeout_keep_the_process(beating, tmp_path) -> None:
    process = beating(parent=str(os.getpid()), call_timeout="30", busy_for=1)
    with StatePage(str(tmp_path / "page.state"), readonly=True) as page:
        first = page.heartbeat
        holds_for(lambda: process.poll() is None, 0.5, what="the process alive")
        assert page.heartbeat > first
    process.stdin.close()
    assert process.wait(timeout=30) == 0


# --- in the host process ------------------------------------------------------------------


def test_hung_writer_shows_inflight_and_busy_since(tmp_path, fake_collector, hosts):
    position = fake_collector.add(*summary("A", 1, x=[1.0]))
    host = start(hosts, tmp_path, zoo_plugin("hangs"), fake_collector.address)
    host.wait_ready()
    wait_for(lambda: host.page.inflight == position, what="inflight")
    busy = host.page.busy_since
    assert busy > 0
    heartbeat = host.page.heartbeat
    wait_for(lambda: host.page.heartbeat > heartbeat, what="heartbeats from a host whose writer hangs")
    assert host.page.busy_since == busy and host.page.committed == 0
    assert host.proc.poll() is None


def test_call_timeout_ends_a_stuck_host(tmp_path, fake_collector, hosts):
    position = fake_collector.add(*summary("A", 1, x=[1.0]))
    host = start(hosts, tmp_path, zoo_plugin("hangs"), fake_collector.address, extra_args=("--call-timeout", "0.3"))
    assert host.wait_exit() == ExitCode.WRITER_CRASH
    assert "did not return within 0.3 s" in host.last_error()
    assert host.page.inflight == position


def test_a_gone_parent_pid_exits_67(tmp_path, fake_collector, hosts):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names no process (short of pid reuse within seconds)
    host = start(hosts, tmp_path, zoo_plugin("good"), fake_collector.address, extra_args=("--parent-pid", str(gone.pid)))
    assert host.wait_exit() == ExitCode.LOST_PARENT
    assert (host.last_error() or "").startswith("LOST_PARENT: "), host.log()


ORPHANER = textwrap.dedent(
    """
    import ctypes, os, signal, subprocess, sys
    PR_SET_CHILD_SUBREAPER = 36
    assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    # parent: a process that starts the host and then dies, orphaning it.
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys; p = subprocess.Popen(sys.argv[1:]); print(p.pid, flush=True); sys.stdin.read()",
         *sys.argv[1:]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    host = int(parent.stdout.readline())
    print(host, flush=True)
    sys.stdin.readline()          # the test says: the host is ready
    parent.kill(); parent.wait()  # the host is now our (the subreaper's) child

    def give_up(*_):
        os.kill(host, 9); os.waitpid(host, 0)
        print("timeout", flush=True)
        os._exit(0)

    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(60)  # the deadline of the wait below
    _, status = os.waitpid(host, 0)
    signal.alarm(0)
    print(os.waitstatus_to_exitcode(status), flush=True)
    """
)


def test_lost_parent_exits_67(tmp_path, fake_collector, hosts):
    host = Host(tmp_path, zoo_plugin("good"), fake_collector.address)
    helper = subprocess.Popen(
        [sys.executable, "-c", ORPHANER, *host.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env=zoo_env(),
    )
    try:
        host_pid = int(helper.stdout.readline())
        with StatePage(wait_for(lambda: os.path.exists(host.state_file) and host.state_file), readonly=True) as page:
            wait_for(lambda: page.pid == host_pid and page.state == HostState.READY, what="READY")
        helper.stdin.write("go\n")
        helper.stdin.flush()
        assert helper.stdout.readline().strip() == str(int(ExitCode.LOST_PARENT))
    finally:
        helper.kill()
        helper.wait()
        helper.stdin.close()
        helper.stdout.close()

