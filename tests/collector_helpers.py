"""Test helpers: a collector in a subprocess, raw wire trainers, a fetching worker, journal readers."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import msgpack
import psutil
import zmq

from statbus.pipeline.collector.lifecycle.pidfile import running_pid
from statbus.pipeline.journal.writer import EntryType, iter_entries
from statbus.pipeline.layout import RunLayout
from statbus.pipeline.wire import decode_ack_or_refusal, encode_frame
from statbus.plugins.records import unpack_summary, unpack_values
from statbus.workers.fetch_protocol import FetchReply, encode_fetch
from statbus.workers.fetch_protocol import decode_reply as decode_fetch_reply
from waiting import wait_for  # noqa: F401 — also re-exported for the collector tests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



class CollectorProcess:
    """``python -m statbus.pipeline`` for one run; always killed and reaped by :meth:`close`."""

    def __init__(
        self,
        results_dir: str,
        run_id: str = "run",
        extra: Sequence[str] = ("--no-plugins",),
        env: Optional[Dict[str, str]] = None,
    ) -> None:
        self.layout = RunLayout(results_dir, run_id)
        self.env = env
        self.extra = list(extra)
        self.process: Optional[subprocess.Popen] = None
        self.starts = 0
        os.makedirs(self.layout.statbus_dir, exist_ok=True)
        self.log_path = os.path.join(results_dir, f"{run_id}-collector-test.log")

    @property
    def ready_file(self) -> str:
        return os.path.join(self.layout.statbus_dir, "collector.ready")

    def start(self, timeout: float = 30.0) -> "CollectorProcess":
        assert self.process is None or self.process.poll() is not None
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "statbus.pipeline", "--run-id", self.layout.run_id,
                 "--results-dir", self.layout.results_dir, *self.extra],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )
        self.starts += 1
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"collector exited with {process.returncode}:\n{self.log()}")
            try:
                with open(self.ready_file, encoding="utf-8") as handle:
                    return json.load(handle).get("pid") == process.pid
            except (OSError, ValueError):
                return False

        wait_for(ready, timeout, what="collector readiness")
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()[-6000:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        self.kill()
        # A killed collector cannot remove its socket directory; the mechanism the next
        # collector uses does it here, now that it is provably dead.
        remove_socket_dir_if_dead(self.layout)


def remove_socket_dir_if_dead(layout: RunLayout) -> None:
    from statbus.pipeline.collector.lifecycle.socket_dirs import remove_if_dead

    if os.path.isdir(layout.socket_dir):
        remove_if_dead(layout.socket_dir)


def end_daemon(layout: RunLayout) -> None:
    """Kill the run's collector (not our child: it detached) and every worker it started."""
    pid = running_pid(layout.pid_file)
    if pid is None:
        return
    try:
        collector = psutil.Process(pid)
        family: List[psutil.Process] = collector.children(recursive=True) + [collector]
    except psutil.NoSuchProcess:
        return
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)
    remove_socket_dir_if_dead(layout)  # a killed collector cannot remove its own


class RawTrainer:
    """A trainer speaking the wire by hand: keeps unacked frames and re-sends them, as the client does."""

    def __init__(self, context: zmq.Context, address: str, sender: str, security=None) -> None:
        from statbus.pipeline.security.curve import secure_connect

        self.sender = sender
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        secure_connect(self.socket, address, security)
        self.seq = 0
        self.acked = 0
        self.unacked: "collections.OrderedDict[int, bytes]" = collections.OrderedDict()
        self.acks: List[int] = []
        self.refusals: List[object] = []

    def frame(self, records: Sequence[list]) -> int:
        """Queue a new frame and try to send it; returns its seq."""
        self.seq += 1
        lowest_sendable = next(iter(self.unacked), self.seq)
        data = encode_frame(self.sender, self.seq, lowest_sendable, 0, records)
        self.unacked[self.seq] = data
        self._send(data)
        return self.seq

    def send_raw(self, data: bytes) -> None:
        self._send(data)

    def _send(self, data: bytes) -> None:
        try:
            self.socket.send(data, zmq.NOBLOCK)
        except zmq.Again:
            pass  # not connected: the re-send after a quiet spell delivers it

    def resend(self) -> None:
        for data in list(self.unacked.values()):
            self._send(data)

    def pump(self) -> bool:
        """Read every ack waiting; True if the acked seq moved."""
        moved = False
        while True:
            try:
                acked, refusal = decode_ack_or_refusal(self.socket.recv(zmq.NOBLOCK))
            except zmq.Again:
                return moved
            if refusal is not None:
                self.refusals.append(refusal)
                continue
            self.acks.append(acked)
            if acked > self.acked:
                self.acked = acked
                moved = True
                for seq in [s for s in self.unacked if s <= acked]:
                    del self.unacked[seq]

    def close(self) -> None:
        self.socket.close(linger=0)


def settle(trainers: Sequence[RawTrainer], timeout: float = 30.0, resend_after: float = 0.5) -> None:
    """Until every trainer's frames are acked; re-send everything unacked after a quiet spell."""
    quiet_since = time.monotonic()
    poller = zmq.Poller()
    for trainer in trainers:
        poller.register(trainer.socket, zmq.POLLIN)

    def all_acked() -> bool:
        nonlocal quiet_since
        if not any(t.unacked for t in trainers):
            return True
        poller.poll(50)
        if any([t.pump() for t in trainers]):
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > resend_after:
            for trainer in trainers:
                trainer.resend()
            quiet_since = time.monotonic()
        return False

    wait_for(all_acked, timeout, lambda: f"acks; unacked frames left: {[(t.sender, list(t.unacked)) for t in trainers]}",
             interval=0)


class Worker:
    """A test DEALER speaking the worker fetch protocol."""

    def __init__(self, context: zmq.Context, address: str, plugin: str) -> None:
        self.plugin = plugin
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(address)

    def request(self, after: int, max_bytes: int = 1 << 20) -> None:
        self.socket.send(encode_fetch(self.plugin, after, max_bytes))

    def reply(self, timeout: float = 10.0) -> FetchReply:
        """The next reply, decoded (and so checked) by the protocol's own codec."""
        if not self.socket.poll(int(timeout * 1000)):
            raise AssertionError("no fetch reply")
        return decode_fetch_reply(self.socket.recv())

    def fetch(self, after: int, max_bytes: int = 1 << 20, timeout: float = 10.0) -> FetchReply:
        self.request(after, max_bytes)
        return self.reply(timeout)

    def close(self) -> None:
        self.socket.close(linger=0)


Summary = Tuple[str, int, Dict[str, Tuple[int, List[float]]]]


def journal_summaries(journal_dir: str) -> List[Summary]:
    """Every SUMMARY entry of a journal: (category, step, {key: (aggregation, values)})."""
    found = []
    for entry in iter_entries(journal_dir):
        if entry.type == EntryType.SUMMARY:
            record = unpack_summary(entry.payload)
            found.append(
                (record.category, record.step, {k: (a.value, unpack_values(p)) for k, a, p in record.entries})
            )
    return found


def journal_frames(journal_dir: str) -> List[Tuple[str, int]]:
    """(sender, seq) of every FRAME entry, in journal order."""
    found = []
    for entry in iter_entries(journal_dir):
        if entry.type == EntryType.FRAME:
            envelope = msgpack.unpackb(entry.payload, raw=False)
            found.append((envelope[1], envelope[2]))
    return found
