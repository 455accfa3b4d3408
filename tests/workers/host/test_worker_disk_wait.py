"""A writer call that fails on a full disk is retried in the worker, exactly that call, until space is back."""

from __future__ import annotations

import errno
import logging
import os
from typing import List

import pytest

from statbus.plugins import StatsAggregationMethod, StatsWriter
from statbus.plugins.records import StatOp, StatRecord
from statbus.plugins.errors import disk_full_error
from statbus.plugins.writers.output_file import OutputFile
from statbus.plugins.records import pack_values
from statbus.workers.host.disk_wait import DISK_RETRY_MAX, DiskWait, StoppedWaiting
from statbus.workers.host.dispatch import WriterCrash, Writers
from statbus.workers.statepage import StatePage


class Clock:
    """An injected clock; ``sleep`` advances it and runs ``on_sleep`` (the test's way to act mid-wait)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: List[float] = []
        self.on_sleep = lambda: None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep()


class Disk:
    """Raises ENOSPC (or ``code``) ``failures`` more times, then lets calls through."""

    def __init__(self, failures: int, code: int = errno.ENOSPC) -> None:
        self.failures = failures
        self.code = code

    def check(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(self.code, os.strerror(self.code), "/results/run/out")


class Recorder(StatsWriter):
    def __init__(self, disk: Disk = None) -> None:
        self.disk = disk or Disk(0)
        self.summaries: List[int] = []
        self.values: List[float] = []
        self.flushes = 0

    def write_stats(self, category, values, step):
        self.disk.check()
        self.summaries.append(step)

    def on_add_stat(self, category, key, value, aggregation=StatsAggregationMethod.AVERAGE):
        self.disk.check()
        self.values.append(value)

    def flush(self):
        self.disk.check()
        self.flushes += 1


@pytest.fixture
def page(tmp_path):
    with StatePage(str(tmp_path / "p.state"), create=True) as page:
        yield page


def writers_for(page, clock, *writers, stop=lambda: False) -> Writers:
    return Writers(list(writers), page, DiskWait(page, stop, "test", sleep=clock.sleep, clock=clock))


def test_a_summary_that_hits_a_full_disk_is_retried_for_that_writer_only(page, caplog):
    clock = Clock()
    first, second = Recorder(), Recorder(Disk(3))
    seen = []
    clock.on_sleep = lambda: seen.append((page.disk_full_since > 0, page.busy_since))
    writers = writers_for(page, clock, first, second)
    with caplog.at_level(logging.WARNING):
        writers._deliver_summary(_summary(7))
    assert first.summaries == [7] and second.summaries == [7]  # nobody got it twice
    assert seen and all(full and busy == 0.0 for full, busy in seen)  # waiting shows, and is not "hung"
    assert page.disk_full_since == 0.0
    assert clock.sleeps and max(clock.sleeps) <= DISK_RETRY_MAX
    hit = [r for r in caplog.records if "hit a full disk" in r.getMessage()]
    assert len(hit) == 1 and "Recorder.write_stats" in hit[0].getMessage()
    assert any("space is back" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_values_of_a_batch_reach_the_writer_exactly_once_across_a_full_disk(page, code):
    clock = Clock()
    disk = Disk(0, code)
    writer = Recorder(disk)
    writers = writers_for(page, clock, writer)
    calls = {"n": 0}
    original = writer.on_add_stat

    def on_add_stat(*args):
        calls["n"] += 1
        if calls["n"] == 4:
            disk.failures = 2  # the 4th value hits the full disk
        original(*args)

    writer.on_add_stat = on_add_stat
    writers._add_stat = [on_add_stat]
    record = StatRecord("C", "k", StatsAggregationMethod.AVERAGE, StatOp.ADD, pack_values([float(i) for i in range(10)]))
    writers._deliver_batch([record])
    assert writer.values == [float(i) for i in range(10)]


def test_a_flush_that_hits_a_full_disk_is_retried(page):
    clock = Clock()
    writer = Recorder(Disk(0))
    writers = writers_for(page, clock, writer)
    writer.disk.failures = 4
    writers.flush()
    assert writer.flushes == 1 and len(clock.sleeps) > 0


def test_other_errors_still_crash_and_a_stop_ends_the_wait(page):
    clock = Clock()
    writer = Recorder(Disk(1, errno.EACCES))
    with pytest.raises(WriterCrash):
        writers_for(page, clock, writer)._deliver_summary(_summary(1))
    # the disk fills, then the retry meets another error: a crash, as any other
    writer = Recorder(Disk(1))
    writer_disk = writer.disk
    clock.on_sleep = lambda: setattr(writer_disk, "code", errno.EACCES) or setattr(writer_disk, "failures", 1)
    with pytest.raises(WriterCrash):
        writers_for(page, clock, writer)._deliver_summary(_summary(2))
    # a stop request while waiting
    stop = {"now": False}
    clock.on_sleep = lambda: stop.update(now=True)
    writer = Recorder(Disk(100))
    with pytest.raises(StoppedWaiting):
        writers_for(page, clock, writer, stop=lambda: stop["now"])._deliver_summary(_summary(3))
    assert writer.summaries == [] and page.disk_full_since == 0.0


def test_disk_full_is_found_behind_a_wrapping_error():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("tensorboard: could not write") from exc
    except RuntimeError as wrapped:
        assert disk_full_error(wrapped).errno == errno.ENOSPC
    assert disk_full_error(OSError(errno.EIO, "I/O error")) is None


def test_an_output_file_neither_loses_nor_repeats_a_byte_when_its_writes_fail(tmp_path, monkeypatch):
    path = str(tmp_path / "out")
    out = OutputFile(path, buffer_bytes=10)
    real_write = os.write
    budget = {"free": None}

    def write(fd, data):
        if budget["free"] is None or fd != out._fd:
            return real_write(fd, data)
        if budget["free"] == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(data)[: budget["free"]])
        budget["free"] -= n
        return n

    monkeypatch.setattr(os, "write", write)
    lines = [f"line {i}\n".encode() for i in range(20)]
    budget["free"] = 25
    for line in lines:
        out.write(line)  # never raises for the disk: it buffers
    with pytest.raises(OSError) as caught:
        out.flush()
    assert caught.value.errno == errno.ENOSPC
    with open(path, "rb") as handle:
        assert handle.read() == b"".join(lines)[:25]  # a torn line at the end, for now
    budget["free"] = None
    out.close()
    with open(path, "rb") as handle:
        assert handle.read() == b"".join(lines)


def _summary(step: int):
    from statbus.plugins.records import SummaryRecord

    return SummaryRecord("C", step, (("k", StatsAggregationMethod.AVERAGE, pack_values([1.0])),))
