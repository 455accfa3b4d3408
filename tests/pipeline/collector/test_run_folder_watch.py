"""A collector whose run folder is deleted, moved or replaced stops, acks nothing more, and leaves its sockets."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from typing import Callable, Iterator

import pytest

from collector_helpers import RawTrainer, settle
from statbus.pipeline.collector.lifecycle.daemon import find_collector
from statbus.pipeline.collector.lifecycle.pidfile import AlreadyRunning, PidFile, is_locked, read_pid
from statbus.pipeline.collector.lifecycle.run_folder import FolderWatch
from statbus.pipeline.collector.lifecycle.socket_dirs import OWNER_FILE, claim, owner_pid, release
from statbus.pipeline.layout import RunLayout
from statbus.pipeline.wire import hello_record, stat_record
from statbus.plugins.records import pack_values
from statbus.workers.exits import ExitCode
from waiting import holds_for, wait_for


def _made(tmp_path) -> RunLayout:
    layout = RunLayout(str(tmp_path / "results"), "r")
    os.makedirs(layout.journal_dir)
    return layout


def _rm_rf(layout: RunLayout) -> None:
    shutil.rmtree(layout.results_dir)


def _moved(layout: RunLayout) -> None:
    os.rename(layout.run_dir, layout.run_dir + ".old")


def _moved_and_made_again(layout: RunLayout) -> None:
    os.rename(layout.run_dir, layout.run_dir + ".old")
    os.makedirs(layout.journal_dir)


def _journal_replaced(layout: RunLayout) -> None:
    shutil.rmtree(layout.journal_dir)
    os.makedirs(layout.journal_dir)


@pytest.mark.parametrize("change, what, why", [
    (_rm_rf, "run folder", "was deleted"),
    (_moved, "run folder", "was moved away"),
    (_moved_and_made_again, "run folder", "was replaced by another folder"),
    # The file system may give the new folder the deleted one's inode number: still told apart.
    (_journal_replaced, "journal folder", "was deleted and made again"),
])
def test_the_watch_tells_a_deleted_or_replaced_folder_from_an_unchanged_one(tmp_path, request, change, what, why):
    layout = _made(tmp_path)
    watch = FolderWatch(layout)
    request.addfinalizer(watch.close)
    with open(os.path.join(layout.run_dir, "stats.jsonl"), "w") as handle:
        handle.write("{}\n")  # what writers do in the folder changes nothing
    assert watch.lost() is None
    change(layout)
    path = layout.run_dir if what == "run folder" else layout.journal_dir
    assert watch.lost() == f"its {what} {path} {why}"


def test_a_folder_that_cannot_be_looked_at_is_not_taken_for_lost(tmp_path, request, caplog):
    layout = _made(tmp_path)
    denied = {"on": False}

    def stat(path: str) -> os.stat_result:
        if denied["on"] and path == layout.journal_dir:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return os.stat(path)

    watch = FolderWatch(layout, stat=stat)
    request.addfinalizer(watch.close)
    denied["on"] = True
    with caplog.at_level(logging.WARNING):
        assert watch.lost() is None and watch.lost() is None
    assert [r.getMessage() for r in caplog.records if "cannot tell" in r.getMessage()] == [
        f"cannot tell whether the journal folder {layout.journal_dir} is still this collector's: "
        f"[Errno 13] Permission denied: '{layout.journal_dir}'"
    ]  # said once, not at every tick
    denied["on"] = False
    _rm_rf(layout)
    assert watch.lost() is not None


def test_a_collector_whose_run_folder_is_deleted_acks_nothing_more_and_exits(collector, context):
    layout = collector.layout
    trainer = RawTrainer(context, layout.data_address, "t")
    try:
        trainer.frame([hello_record({"pid": 1, "host": "h"})])
        settle([trainer])
        shutil.rmtree(layout.run_dir)
        # Frames from the moment the folder went (most before the collector's next tick
        # looks at it) until it exits: none is acknowledged.
        while collector.process.poll() is None:
            trainer.frame([stat_record("Cat", "v", 0, 0, pack_values([1.0]))])
            trainer.socket.poll(1)
            trainer.pump()
        assert collector.process.returncode == ExitCode.RUN_FOLDER_GONE
        trainer.pump()
        assert trainer.acked == 1 and len(trainer.unacked) == trainer.seq - 1 > 1
    finally:
        trainer.close()
    log = collector.log()
    assert f"its run folder {layout.run_dir} was deleted. Stopping at once" in log, log
    assert not os.path.exists(layout.socket_dir)  # released: the next collector of the run binds there
    assert not os.path.exists(layout.run_dir)  # and nothing was made again in the path on the way out


def test_a_collector_whose_journal_goes_removes_nothing_from_the_folder_on_its_way_out(collector):
    # As in the middle of `rm -rf` (or shutil.rmtree, which fails on a file gone under it):
    # the journal is gone, the rest of the folder not yet.
    layout = collector.layout
    shutil.rmtree(layout.journal_dir)
    assert collector.process.wait(timeout=30) == ExitCode.RUN_FOLDER_GONE
    assert f"its journal folder {layout.journal_dir} was deleted. Stopping at once" in collector.log()
    assert {"collector.pid", "collector.ready"} <= set(os.listdir(layout.statbus_dir))
    assert not os.path.exists(layout.socket_dir)


def test_a_removed_pidfile_is_put_back_locked_and_a_foreign_one_is_left_alone(tmp_path):
    path = str(tmp_path / "collector.pid")
    held = PidFile(path)
    held.acquire()
    try:
        assert not held.restore()  # in place: nothing to do
        os.unlink(path)
        assert not held.is_ours() and held.restore()
        assert held.is_ours() and is_locked(path) and read_pid(path) == os.getpid()
        with pytest.raises(AlreadyRunning):
            PidFile(path).acquire()  # a collector starting now finds it held
        assert sorted(os.listdir(tmp_path)) == ["collector.pid"]  # no temporary file left

        foreign = str(tmp_path / "other")
        with open(foreign, "w") as handle:
            handle.write("999999999\n")
        os.replace(foreign, path)
        assert not held.restore() and not held.is_ours()
    finally:
        held.release()
    assert read_pid(path) == 999999999  # released without removing what is not its own


@pytest.fixture
def socket_dir(tmp_path) -> Iterator[RunLayout]:
    layout = RunLayout(str(tmp_path / "results"), "r")
    try:
        yield layout
    finally:
        if os.path.isdir(layout.socket_dir):
            for name in os.listdir(layout.socket_dir):
                os.unlink(os.path.join(layout.socket_dir, name))
            os.rmdir(layout.socket_dir)


PREDECESSOR = """
import json, os, socket, sys
directory = sys.argv[1]
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(os.path.join(directory, "ctl"))
listener.listen(8)
with open(os.path.join(directory, "owner"), "w") as handle:
    json.dump({"pid": os.getpid(), "pidfile": "/gone/collector.pid"}, handle)
print("ready", flush=True)
sys.stdin.readline()  # then leave as a collector does: sockets first, the owner file last
listener.close()
os.unlink(os.path.join(directory, "ctl"))
os.unlink(os.path.join(directory, "owner"))
"""


@pytest.fixture
def predecessor(socket_dir) -> Iterator[subprocess.Popen]:
    """A process holding the run's socket directory as a collector would, until told to leave."""
    socket_dir.ensure_socket_dir()
    process = subprocess.Popen([sys.executable, "-c", PREDECESSOR, socket_dir.socket_dir],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "ready\n"
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdin.close()
        process.stdout.close()


def _claim_in_thread(layout: RunLayout, patience: float) -> Callable[[], bool]:
    done = threading.Event()

    def run() -> None:
        claim(layout, patience=patience)
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return done.is_set


def test_a_starting_collector_waits_for_its_predecessor_to_leave_the_socket_directory(socket_dir, predecessor):
    claimed = _claim_in_thread(socket_dir, patience=60)
    holds_for(lambda: not claimed(), 0.5, what="the claim waiting while the predecessor listens")
    assert owner_pid(socket_dir.socket_dir) == predecessor.pid
    predecessor.stdin.write("leave\n")
    predecessor.stdin.flush()
    wait_for(claimed, timeout=30, what="the claim after the predecessor left")
    assert owner_pid(socket_dir.socket_dir) == os.getpid()


def test_a_predecessor_that_does_not_leave_is_taken_over_and_named(socket_dir, predecessor, caplog):
    with caplog.at_level(logging.WARNING):
        claim(socket_dir, patience=0.3)
    assert owner_pid(socket_dir.socket_dir) == os.getpid()
    assert f"collector pid {predecessor.pid} did not leave" in caplog.text
    assert f"kill {predecessor.pid}" in caplog.text


def test_release_leaves_a_socket_directory_another_collector_claimed(socket_dir):
    directory = claim(socket_dir)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open(os.path.join(directory, OWNER_FILE), "w") as handle:
            json.dump({"pid": other.pid, "pidfile": socket_dir.pid_file}, handle)
        release(directory)
        assert os.listdir(directory) == [OWNER_FILE] and owner_pid(directory) == other.pid
        claim(socket_dir, patience=0)  # ours again (nobody listens in it: nothing to wait for)
        release(directory)
        assert not os.path.exists(directory)
    finally:
        other.kill()
        other.wait()


def test_the_command_finds_a_collector_without_a_pidfile_even_when_it_does_not_answer(collector):
    layout = collector.layout
    pid = collector.process.pid
    assert find_collector(layout) == (pid, True)
    os.unlink(layout.pid_file)
    assert find_collector(layout) == (pid, False)  # its ctl socket answers ping
    collector.process.send_signal(signal.SIGSTOP)
    try:
        assert find_collector(layout, timeout=0.3) == (pid, False)  # its owner file, and it is a collector
    finally:
        collector.process.send_signal(signal.SIGCONT)
    assert collector.terminate() == 0
    assert find_collector(layout) is None
