"""The journal when the disk refuses writes (ENOSPC, EDQUOT, EIO), by fault injection at its system calls."""

from __future__ import annotations

import errno
import os
from typing import List

import pytest

import statbus.pipeline.journal.writer as journal_module
from disk_fault import Disk
from statbus.pipeline.journal.writer import EntryType, FsyncPolicy, Journal, JournalWriteError, iter_entries


def payloads(n: int, size: int = 100) -> List[bytes]:
    return [bytes([i % 251]) * size for i in range(n)]


def frames_in(directory: str) -> List[bytes]:
    return [e.payload for e in iter_entries(directory) if e.type is EntryType.FRAME]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_a_write_that_fails_midway_keeps_whole_entries_cuts_the_torn_one_and_writes_the_rest_later(tmp_path, monkeypatch, code):
    directory = str(tmp_path / "j")
    disk = Disk(directory, monkeypatch)
    with Journal(directory, fsync=FsyncPolicy.NEVER) as journal:
        journal.rotate(b"snap")
        positions = [journal.append(EntryType.FRAME, p) for p in payloads(10)]
        journal.commit()
        before = journal.committed_position
        disk.free, disk.error = 250, code  # two whole 109-byte entries and a torn third fit
        more = payloads(10, 101)
        positions += [journal.append(EntryType.FRAME, p) for p in more]
        with pytest.raises(JournalWriteError) as caught:
            journal.commit()
        assert caught.value.retryable and caught.value.errno == code
        assert journal.write_error is caught.value
        # Only whole entries reached the file (the torn one was cut back); readers see them and stop there.
        assert journal.committed_position == before + 2 * 110
        assert os.path.getsize(os.path.join(directory, f"{journal.segment_starts()[-1]:020d}.seg")) == (
            journal.committed_position - journal.segment_starts()[-1]
        )
        assert frames_in(directory) == payloads(10) + more[:2]
        assert journal.pending_bytes == 8 * 110
        assert journal.end_position == positions[-1] + 110  # positions already handed out stay true
        with pytest.raises(JournalWriteError):
            journal.commit()  # still full: still nothing lost
        disk.free = None  # space is back
        journal.commit()
        assert journal.write_error is None and journal.pending_bytes == 0
        assert [e.position for e in iter_entries(directory) if e.type is EntryType.FRAME] == positions
    assert frames_in(directory) == payloads(10) + more
    with Journal(directory) as reopened:
        assert not reopened.recovery.damaged


def test_appends_are_kept_in_memory_while_a_write_error_is_outstanding(tmp_path, monkeypatch):
    directory = str(tmp_path / "j")
    disk = Disk(directory, monkeypatch)
    monkeypatch.setattr(journal_module, "WRITE_THROUGH_BYTES", 1000)
    with Journal(directory, fsync=FsyncPolicy.NEVER) as journal:
        journal.rotate(b"snap")
        disk.free = 0
        for p in payloads(30):  # write-through fails once, quietly; then appends only buffer
            journal.append(EntryType.FRAME, p)
        assert journal.write_error is not None and journal.pending_bytes == 30 * 109
        with pytest.raises(JournalWriteError):
            journal.commit()
        disk.free = None
        journal.commit()
    assert frames_in(directory) == payloads(30)


def test_a_failed_fsync_is_reported_and_retried(tmp_path, monkeypatch):
    directory = str(tmp_path / "j")
    disk = Disk(directory, monkeypatch)
    with Journal(directory, fsync=FsyncPolicy.ALWAYS) as journal:
        journal.rotate(b"snap")
        journal.append(EntryType.FRAME, b"x")
        disk.fsync_error = errno.EIO
        with pytest.raises(JournalWriteError) as caught:
            journal.commit()
        assert caught.value.errno == errno.EIO and caught.value.retryable
        disk.fsync_error = None
        syncs = journal.fsync_count
        journal.commit()
        assert journal.fsync_count == syncs + 1 and journal.write_error is None


def test_a_rotation_that_cannot_create_its_segment_changes_nothing(tmp_path, monkeypatch):
    directory = str(tmp_path / "j")
    disk = Disk(directory, monkeypatch)
    with Journal(directory, segment_bytes=1000, fsync=FsyncPolicy.INTERVAL) as journal:
        journal.rotate(b"snap")
        for p in payloads(10):
            journal.append(EntryType.FRAME, p)
        starts = journal.segment_starts()
        disk.open_error = errno.EDQUOT
        with pytest.raises(JournalWriteError) as caught:
            journal.rotate(b"snap2")
        assert caught.value.errno == errno.EDQUOT
        assert journal.segment_starts() == starts and journal.needs_rotation()
        disk.open_error = None
        journal.commit()
        position = journal.rotate(b"snap2")
        assert journal.segment_starts() == starts + [position]


def test_a_rotation_whose_snapshot_cannot_be_written_writes_it_first_when_space_is_back(tmp_path, monkeypatch):
    directory = str(tmp_path / "j")
    disk = Disk(directory, monkeypatch)
    with Journal(directory, segment_bytes=1000, fsync=FsyncPolicy.NEVER) as journal:
        journal.rotate(b"snap")
        for p in payloads(10):
            journal.append(EntryType.FRAME, p)
        journal.commit()
        disk.free = 0
        position = journal.rotate(b"snap2")  # the new segment exists; its snapshot waits
        assert journal.write_error is not None and journal.has_snapshot
        after = journal.append(EntryType.FRAME, b"after")
        with pytest.raises(JournalWriteError):
            journal.commit()
        disk.free = None
        journal.commit()
        assert journal.segment_starts()[-1] == position
    entries = list(iter_entries(directory, position))
    assert [(e.position, e.type) for e in entries] == [(position, EntryType.SNAPSHOT), (after, EntryType.FRAME)]
    assert entries[0].payload == b"snap2"


def test_the_segment_before_one_whose_snapshot_waits_is_not_deleted(tmp_path, monkeypatch):
    directory = str(tmp_path / "j")
    disk = Disk(directory, monkeypatch)
    with Journal(directory, segment_bytes=1000, fsync=FsyncPolicy.INTERVAL) as journal:
        journal.rotate(b"snap")
        for p in payloads(10):
            journal.append(EntryType.FRAME, p)
        journal.commit()
        disk.free = 0
        position = journal.rotate(b"snap2")
        assert journal.delete_before(position) == 0  # recovery would find no snapshot without it
        assert len(journal.segment_starts()) == 2
        disk.free = None
        journal.commit()
        assert journal.delete_before(position) > 0 and journal.segment_starts() == [position]


def test_an_error_the_journal_does_not_wait_out_is_not_retryable(tmp_path, monkeypatch):
    directory = str(tmp_path / "j")
    disk = Disk(directory, monkeypatch)
    with Journal(directory, fsync=FsyncPolicy.NEVER) as journal:
        journal.rotate(b"snap")
        journal.append(EntryType.FRAME, b"x")
        disk.free, disk.error = 0, errno.EBADF
        with pytest.raises(JournalWriteError) as caught:
            journal.commit()
        assert not caught.value.retryable
        disk.free = None
