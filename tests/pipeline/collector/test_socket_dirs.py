"""Collectors leave no socket directories behind under ``statbus-<uid>/``."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

from collector_helpers import CollectorProcess
from statbus.pipeline.control import control_request
from statbus.pipeline.layout import make_private_dir, socket_root
from statbus.pipeline.collector.lifecycle.pidfile import PidFile, hold_if_free
from statbus.pipeline.collector.lifecycle.socket_dirs import OWNER_FILE, UNOWNED_MIN_AGE, sweep_dead


def test_a_clean_stop_removes_its_sockets_and_directory(tmp_path):
    collector = CollectorProcess(str(tmp_path), "r")
    try:
        collector.start()
        directory = collector.layout.socket_dir
        assert sorted(os.listdir(directory)) == ["ctl", "data", OWNER_FILE, "work"]
        assert collector.terminate() == 0
        assert not os.path.exists(directory), os.listdir(directory)
    finally:
        collector.close()


def _dead_unowned_dir(name: str, age: float) -> str:
    """A directory as an older statbus left it: sockets nobody listens on, no owner file."""
    directory = make_private_dir(os.path.join(socket_root(), name))
    for sock_name in ("ctl", "data", "work"):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.bind(os.path.join(directory, sock_name))
        probe.close()  # the file stays; connecting to it is refused
    then = time.time() - age
    os.utime(directory, (then, then))
    return directory


def test_a_start_removes_the_directories_of_dead_collectors_only(tmp_path):
    killed = CollectorProcess(str(tmp_path), "killed")
    alive = CollectorProcess(str(tmp_path), "alive")
    third = CollectorProcess(str(tmp_path), "third")
    old_unowned = _dead_unowned_dir(f"test-old-{os.getpid()}", UNOWNED_MIN_AGE + 60)
    young_unowned = _dead_unowned_dir(f"test-young-{os.getpid()}", 0)
    try:
        killed.start()
        killed.process.send_signal(signal.SIGKILL)
        killed.process.wait(timeout=30)
        dead_dir = killed.layout.socket_dir
        assert os.path.isdir(dead_dir)  # a killed collector cannot clean up
        alive.start()
        # A directory holding something that is not ours stays, whoever owned it.
        with open(os.path.join(young_unowned, "not-a-socket"), "w") as handle:
            handle.write("x")

        third.start()

        assert not os.path.exists(dead_dir), "the killed collector's directory was not removed"
        assert not os.path.exists(old_unowned), "an old directory of dead sockets was not removed"
        assert os.path.isdir(young_unowned), "a directory made moments ago was removed"
        assert os.path.isdir(alive.layout.socket_dir)
        assert control_request(alive.layout.control_address, {"op": "ping"}, timeout=10)["ok"]
    finally:
        for collector in (killed, alive, third):
            collector.close()
        for directory in (old_unowned, young_unowned):
            if os.path.isdir(directory):
                for name in os.listdir(directory):
                    os.unlink(os.path.join(directory, name))
                os.rmdir(directory)


def test_sweep_keeps_a_directory_whose_collector_holds_its_lock(tmp_path):
    collector = CollectorProcess(str(tmp_path), "r")
    try:
        collector.start()
        collector.process.send_signal(signal.SIGSTOP)  # alive but deaf: the lock still says alive
        try:
            assert collector.layout.socket_dir not in sweep_dead()
            assert os.path.isdir(collector.layout.socket_dir)
        finally:
            collector.process.send_signal(signal.SIGCONT)
    finally:
        collector.close()


def test_a_collector_starting_during_a_sweep_waits_for_the_sweepers_hold(tmp_path):
    pidfile = str(tmp_path / "collector.pid")
    with open(pidfile, "w") as handle:
        handle.write("999999999\n")  # a dead collector's pid
    acquired = threading.Event()
    failed = []
    holder = PidFile(pidfile)

    def start() -> None:
        try:
            holder.acquire()
            acquired.set()
        except Exception as exc:  # noqa: BLE001 — reported below
            failed.append(exc)

    with hold_if_free(pidfile) as free:
        assert free
        thread = threading.Thread(target=start)
        thread.start()
        assert not acquired.wait(0.05)
    thread.join(10)
    try:
        assert acquired.is_set() and not failed, failed
    finally:
        holder.release()
