"""The collector while its journal cannot be written: fault injection at the journal's system calls."""

from __future__ import annotations

import errno
import logging
import threading
import time

import pytest

from collector_helpers import RawTrainer, journal_frames, journal_summaries, settle, wait_for
from disk_fault import Disk
from statbus.pipeline.cli.status import format_status
from statbus.pipeline.collector.loop import Collector
from statbus.pipeline.collector.options import CollectorOptions
from statbus.pipeline.control import control_request
from statbus.pipeline.layout import RunLayout
from statbus.pipeline.wire import write_record
from statbus.plugins.records import pack_values
from waiting import holds_for


def stat(category, key, values):
    return [0, category, key, 0, 0, pack_values(values)]


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "disk full"), (errno.EDQUOT, "disk full"), (errno.EIO, "write error")])
def test_the_collector_holds_acks_while_the_journal_cannot_be_written_and_resumes_by_itself(
    tmp_path, monkeypatch, context, caplog, code, reason
):
    layout = RunLayout(str(tmp_path / "results"), "run")
    disk = Disk(layout.journal_dir, monkeypatch)
    collector = Collector(layout, CollectorOptions(segment_bytes=4096))
    codes = []
    thread = threading.Thread(target=lambda: codes.append(collector.run()), daemon=True)
    t = RawTrainer(context, layout.data_address, "t")

    def status():
        return control_request(layout.control_address, {"op": "status"}, timeout=10)

    caplog.set_level(logging.INFO)
    thread.start()
    try:
        wait_for(lambda: status()["ok"], what="collector answering")
        for step in range(1, 6):
            t.frame([stat("C", "k", [float(step)] * 50), write_record("C", step)])
        settle([t])
        acked = t.acked
        disk.free, disk.error = 0, code
        for step in range(6, 21):
            t.frame([stat("C", "k", [float(step)] * 50), write_record("C", step)])
        wait_for(lambda: status()["journal"]["state"] == reason, what="the stall shows in status")
        def nothing_acked() -> bool:
            t.pump()
            t.resend()
            return t.acked == acked

        # Several retries and re-sends: still nothing acked, and one log line.
        holds_for(nothing_acked, 2.5, "no ack while the journal cannot be written", interval=0.2)
        assert thread.is_alive()
        shown = status()
        stall = shown["journal"]["write_error"]
        assert stall["reason"] == reason and stall["errno"] == errno.errorcode[code] and stall["retries"] >= 1
        assert stall["pending_bytes"] > 0 and stall["frames_deferred"] > 0
        assert f"journal: {reason} since {stall['since_text']}" in format_status(shown)
        began = [r for r in caplog.records if r.getMessage().startswith(f"journal: {reason} since")]
        assert len(began) == 1 and "free at least" in began[0].getMessage()
        disk.free = None  # space is back
        settle([t], timeout=30)
        assert status()["journal"]["state"] == "ok" and status()["journal"]["write_error"] is None
        assert thread.is_alive()
    finally:
        collector.request_stop(graceful=False)
        thread.join(timeout=30)
        t.close()
    assert codes == [0]
    # Every frame journaled once, in order; every summary once, with its own values.
    assert journal_frames(layout.journal_dir) == [("t", seq) for seq in range(1, 21)]
    assert [(s[1], s[2]["k"][1]) for s in journal_summaries(layout.journal_dir)] == [
        (step, [float(step)] * 50) for step in range(1, 21)
    ]
    assert len([r for r in caplog.records if r.getMessage().startswith("journal: writing again")]) == 1


class Consumers:
    """What the collector asks of a supervisor, for retention: one plugin whose cursor the test moves."""

    def __init__(self) -> None:
        self.cursor = 0

    def start(self, head_position: int = 0) -> None: ...
    def tick(self, head_position: int) -> None: ...
    def committed(self, plugin: str) -> int: return self.cursor
    def skip_positions(self, plugin: str): return frozenset()
    def consumers(self): return ["p"]
    def status(self): return []
    def all_caught_up(self, head_position: int) -> bool: return self.cursor >= head_position
    def settled(self) -> bool: return True
    def stop(self, timeout: float) -> None: ...


def test_retention_frees_segments_every_cursor_passed_and_the_journal_goes_on_by_itself(tmp_path, monkeypatch, context):
    layout = RunLayout(str(tmp_path / "results"), "run")
    disk = Disk(layout.journal_dir, monkeypatch)
    consumers = Consumers()
    collector = Collector(layout, CollectorOptions(segment_bytes=4096), supervisor_factory=lambda hooks: consumers)
    codes = []
    thread = threading.Thread(target=lambda: codes.append(collector.run()), daemon=True)
    t = RawTrainer(context, layout.data_address, "t")

    def status():
        return control_request(layout.control_address, {"op": "status"}, timeout=10)

    thread.start()
    try:
        wait_for(lambda: status()["ok"], what="collector answering")
        t.frame([stat("C", "k", [0.0]), write_record("C", 0)])
        settle([t])  # connected: from here on frames arrive in order
        disk.capacity = 5 * 4096  # a quota of five segments
        step = 0
        while status()["journal"]["state"] == "ok":
            step += 1
            t.frame([stat("C", "k", [float(step)] * 50), write_record("C", step)])
            t.pump()
            time.sleep(0.01)  # paces the load: the quota fills within a frame or two of the status that sees it
            assert step < 500, "the journal never filled its quota"
        last = step
        stall = status()["journal"]["write_error"]
        assert stall["reason"] == "disk full"
        # The one plugin reads everything written so far: every segment but the newest may go.
        consumers.cursor = status()["journal"]["head"] - stall["pending_bytes"]
        settle([t], timeout=30)  # no space freed by the test: retention did it
        assert status()["journal"]["state"] == "ok" and status()["journal"]["deleted_bytes"] > 0
    finally:
        collector.request_stop(graceful=False)
        thread.join(timeout=30)
        t.close()
    assert codes == [0]
    frames = journal_frames(layout.journal_dir)
    assert frames == [("t", seq) for seq in range(frames[0][1], last + 2)]  # what is left: in order, once each
