"""``pid_alive``: the one process-existence check, against real processes."""

from __future__ import annotations

import os
import subprocess
import sys

from statbus.workers.pids import pid_alive


def test_a_running_process_is_alive_and_a_reaped_one_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert pid_alive(child.pid)
    finally:
        child.stdin.close()  # type: ignore[union-attr]
        child.wait(timeout=30)
    assert not pid_alive(child.pid)
    assert pid_alive(os.getpid())


def test_ids_that_name_process_groups_are_no_process() -> None:
    # kill(0, 0) and kill(-1, 0) would succeed (this process's group, every process): never "alive".
    assert not pid_alive(0)
    assert not pid_alive(-1)


def test_a_process_of_another_user_counts_as_alive(monkeypatch) -> None:
    def refused(pid: int, signal: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", refused)
    assert pid_alive(12345)
