"""The journal: round trips over real segment files, retention, recovery from damage, fsync policy."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statbus.pipeline.journal.retention import quota_position
from statbus.pipeline.journal.segments import encode_entry, pad_entries, segment_path
from statbus.pipeline.journal.writer import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    Entry,
    EntryType,
    FsyncPolicy,
    Journal,
    JournalError,
    JournalLockedError,
    JournalReader,
    iter_entries,
)
from waiting import wait_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def payload(rng: random.Random, largest: int = 150) -> bytes:
    return rng.randbytes(rng.randint(0, largest))


def fill(journal: Journal, rng: random.Random, count: int, commit_every: int = 3) -> List[Tuple[int, EntryType, bytes]]:
    """Append ``count`` FRAME/SUMMARY entries, rotating when due; return what was written."""
    written = []
    for i in range(count):
        if journal.needs_rotation():
            snap = b"snapshot-%d" % i
            written.append((journal.rotate(snap), EntryType.SNAPSHOT, snap))
        kind = EntryType.FRAME if rng.random() < 0.8 else EntryType.SUMMARY
        data = payload(rng)
        written.append((journal.append(kind, data), kind, data))
        if i % commit_every == 0:
            journal.commit()
    journal.commit()
    return written


def as_tuples(entries: List[Entry]) -> List[Tuple[int, EntryType, bytes]]:
    return [(e.position, e.type, e.payload) for e in entries]


def new_journal(directory: Path, **kwargs: object) -> Journal:
    journal = Journal(str(directory), **kwargs)  # type: ignore[arg-type]
    journal.open()
    if not journal.has_snapshot:
        journal.rotate(b"first")
    return journal


def test_round_trip_across_segments(tmp_path: Path) -> None:
    rng = random.Random(1)
    journal = new_journal(tmp_path / "j", segment_bytes=600)
    try:
        written = [(0, EntryType.SNAPSHOT, b"first")] + fill(journal, rng, 300)
        end = journal.end_position
        starts = journal.segment_starts()
    finally:
        journal.close()
    assert len(starts) >= 5
    entries = list(iter_entries(str(tmp_path / "j")))
    assert as_tuples(entries) == written
    # Contiguous positions; every segment begins with its SNAPSHOT.
    assert entries[0].position == 0 and entries[-1].end == end
    assert all(a.end == b.position for a, b in zip(entries, entries[1:]))
    by_position = {e.position: e for e in entries}
    assert all(by_position[base].type is EntryType.SNAPSHOT for base in starts)
    assert sorted(int(name[:20]) for name in os.listdir(tmp_path / "j") if name.endswith(".seg")) == starts

    # Small reads step over segment boundaries and respect the limits.
    with JournalReader(str(tmp_path / "j")) as reader:
        got: List[Entry] = []
        pos = 0
        while True:
            chunk, nxt = reader.read(pos, max_bytes=100, max_entries=3)
            assert len(chunk) <= 3
            assert sum(e.end - e.position for e in chunk) <= 100 + 150 + HEADER_SIZE
            if not chunk:
                assert nxt == pos == end
                break
            assert chunk[0].position == pos and nxt == chunk[-1].end
            got.extend(chunk)
            pos = nxt
        assert got == entries
        assert reader.skipped_bytes == 0 and reader.corrupt_regions == 0
        for entry in entries[::7]:
            assert reader.entry_at(entry.position) == entry
        assert reader.entry_at(entries[5].position + 1) is None
        assert reader.entry_at(end) is None


def test_positions_stable_across_reopen(tmp_path: Path) -> None:
    rng = random.Random(2)
    directory = tmp_path / "j"
    journal = new_journal(directory, segment_bytes=1000)
    try:
        first = fill(journal, rng, 50)
        end = journal.end_position
    finally:
        journal.close()
    journal = Journal(str(directory), segment_bytes=1000)
    try:
        report = journal.open()
        assert not report.damaged and report.end_position == end and report.has_snapshot
        assert journal.append(EntryType.FRAME, b"after reopen") == end
        second = fill(journal, rng, 50)
    finally:
        journal.close()
    entries = {e.position: e for e in iter_entries(str(directory))}
    for position, kind, data in first + second:
        assert (entries[position].type, entries[position].payload) == (kind, data)
    assert entries[end].payload == b"after reopen"


def test_reader_sees_only_committed_data(tmp_path: Path) -> None:
    journal = new_journal(tmp_path / "j")
    reader = JournalReader(str(tmp_path / "j"))
    try:
        head = journal.end_position
        position = journal.append(EntryType.FRAME, b"pending")
        assert position == head
        assert reader.read(head) == ([], head)
        assert journal.committed_position == head < journal.end_position
        journal.commit()
        entries, nxt = reader.read(head)
        assert as_tuples(entries) == [(head, EntryType.FRAME, b"pending")]
        assert nxt == journal.end_position == journal.committed_position
    finally:
        reader.close()
        journal.close()


def test_partial_entry_at_the_end_is_not_returned(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    journal = new_journal(directory)
    head = journal.end_position
    journal.close()
    raw = encode_entry(EntryType.FRAME, b"a whole frame, written in two steps")
    path = segment_path(str(directory), 0)
    with JournalReader(str(directory)) as reader:
        for cut in (1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 5):
            shutil.copyfile(path, str(tmp_path / "backup"))
            with open(path, "ab") as f:
                f.write(raw[:cut])
            entries, nxt = reader.read(0)
            assert entries[-1].end == head and nxt == head
            assert reader.read(head) == ([], head)
            with open(path, "ab") as f:
                f.write(raw[cut:])
            entries, nxt = reader.read(head)
            assert as_tuples(entries) == [(head, EntryType.FRAME, raw[HEADER_SIZE:])]
            shutil.copyfile(str(tmp_path / "backup"), path)
        assert reader.skipped_bytes == 0 and reader.corrupt_regions == 0


def test_large_entries_and_limits(tmp_path: Path) -> None:
    journal = new_journal(tmp_path / "j")
    try:
        big = bytes(range(256)) * 1200  # larger than the reader's read chunk
        first = journal.append(EntryType.FRAME, big)
        second = journal.append(EntryType.SUMMARY, b"small")
        journal.commit()
        with pytest.raises(JournalError):
            journal.append(EntryType.FRAME, bytes(MAX_PAYLOAD + 1))
        with pytest.raises(JournalError):
            journal.append(7, b"x")  # type: ignore[arg-type]
        with JournalReader(str(tmp_path / "j")) as reader:
            entries, nxt = reader.read(first, max_bytes=10)
            assert as_tuples(entries) == [(first, EntryType.FRAME, big)] and nxt == second
            entries, nxt = reader.read(0, max_bytes=20)
            assert [e.type for e in entries] == [EntryType.SNAPSHOT] and nxt == first
            entries, _ = reader.read(0, max_entries=2)
            assert [e.position for e in entries] == [0, first]
            entries, _ = reader.read(0)
            assert as_tuples(entries)[1:] == [(first, EntryType.FRAME, big), (second, EntryType.SUMMARY, b"small")]
    finally:
        journal.close()


def test_delete_before_frees_only_passed_segments(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    journal = new_journal(directory, segment_bytes=500)
    try:
        fill(journal, random.Random(3), 200)
        starts = journal.segment_starts()
        assert len(starts) >= 6
        sizes = {b: os.path.getsize(segment_path(str(directory), b)) for b in starts}
        total = journal.size_bytes()
        assert total == sum(sizes.values()) == journal.end_position

        # A cursor inside segment 2 frees segments 0 and 1 only.
        assert journal.delete_before(starts[2] + 1) == sizes[starts[0]] + sizes[starts[1]]
        assert journal.segment_starts() == starts[2:] and journal.start_position == starts[2]
        # A cursor exactly at a segment's end frees it.
        assert journal.delete_before(starts[3]) == sizes[starts[2]]
        assert journal.delete_before(starts[3]) == 0
        # Never the newest, even when every cursor is at the head.
        freed = journal.delete_before(journal.end_position + 10)
        assert freed == sum(sizes[b] for b in starts[3:-1])
        assert journal.segment_starts() == [starts[-1]]
        assert sorted(n for n in os.listdir(directory) if n.endswith(".seg")) == [
            os.path.basename(segment_path(str(directory), starts[-1]))
        ]
        assert journal.size_bytes() == journal.end_position - starts[-1]
        journal.append(EntryType.FRAME, b"still writing")
        journal.commit()
    finally:
        journal.close()
    reopened = Journal(str(directory))
    try:
        report = reopened.open()
        assert report.segments == 1 and reopened.start_position == starts[-1]
    finally:
        reopened.close()


def test_quota_position_moves_a_lagging_consumer_to_a_segment_start(tmp_path: Path) -> None:
    journal = new_journal(tmp_path / "j", segment_bytes=500)
    try:
        fill(journal, random.Random(11), 150)
        starts, head = journal.segment_starts(), journal.end_position
        assert len(starts) >= 5
        assert quota_position(starts[1] + 3, head, starts, head) == 0  # within quota: no limit
        quota = head - starts[2] + 1
        assert quota_position(0, head, starts, quota) == starts[2]
        assert quota_position(starts[2] + 1, head, starts, quota) == 0
        assert quota_position(0, head, starts, head - starts[3]) == starts[3]
        # A quota smaller than the newest segment: its start, never into its middle.
        assert quota_position(0, head, starts, 1) == starts[-1]
    finally:
        journal.close()

def test_reader_jumps_past_deleted_segments(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    journal = new_journal(directory, segment_bytes=400)
    try:
        fill(journal, random.Random(4), 100)
        starts = journal.segment_starts()
        with JournalReader(str(directory)) as reader:
            early, _ = reader.read(0, max_entries=5)  # holds segment 0 open
            assert early[0].position == 0
            journal.delete_before(starts[3])
            entries, nxt = reader.read(early[-1].end)
            assert entries[0].position == starts[3] and entries[0].type is EntryType.SNAPSHOT
            assert reader.jumps == 1 and reader.skipped_bytes == starts[3] - early[-1].end
            # Nothing left at all before the head: the continuation position says so.
            journal.delete_before(journal.end_position)
            entries, nxt = reader.read(0, max_entries=1)
            assert entries[0].position == starts[-1]
            assert reader.jumps == 2
        expected = [e for e in iter_entries(str(directory), starts[-1])]
        assert list(iter_entries(str(directory))) == expected
    finally:
        journal.close()


# -- recovery ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def damaged_source(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, List[Entry], int]:
    """A real journal of three segments whose newest holds ~60 entries."""
    directory = tmp_path_factory.mktemp("source") / "j"
    journal = new_journal(directory, segment_bytes=2000)
    try:
        fill(journal, random.Random(5), 45)
        while len(journal.segment_starts()) < 3:
            journal.append(EntryType.FRAME, b"to the third segment")
            if journal.needs_rotation():
                journal.rotate(b"third snapshot")
        rng = random.Random(6)
        for i in range(60):
            journal.append(EntryType.FRAME if i % 5 else EntryType.SUMMARY, payload(rng, 80))
            journal.commit()
        newest = journal.segment_starts()[-1]
    finally:
        journal.close()
    return directory, list(iter_entries(str(directory))), newest


def damaged_copy(source: Path, target: Path, newest: int) -> str:
    shutil.copytree(source, target)
    return segment_path(str(target), newest)


def reopen_and_collect(directory: Path) -> Tuple[object, List[Entry], List[Entry]]:
    journal = Journal(str(directory))
    try:
        report = journal.open()
        newest = list(journal.newest_segment_entries())
        # The repaired journal takes appends at its (new) end.
        tail = journal.append(EntryType.FRAME, b"appended after recovery")
        journal.commit()
        assert tail == report.end_position
    finally:
        journal.close()
    everything = list(iter_entries(str(directory)))
    assert everything[-1].payload == b"appended after recovery"
    return report, newest, everything[:-1]


def test_recovery_keeps_everything_before_a_random_cut(tmp_path: Path, damaged_source: Tuple[Path, List[Entry], int]) -> None:
    source, original, newest = damaged_source
    segment_end = original[-1].end
    rng = random.Random(7)
    cuts = sorted({newest, newest + 1, segment_end - 1} | {rng.randrange(newest, segment_end) for _ in range(60)})
    for trial, cut in enumerate(cuts):
        path = damaged_copy(source, tmp_path / str(trial), newest)
        os.truncate(path, cut - newest)
        report, kept, everything = reopen_and_collect(tmp_path / str(trial))
        whole = [e for e in original if e.end <= cut]
        assert everything == whole, f"cut at {cut}"
        assert kept == [e for e in whole if e.position >= newest]
        assert report.truncated_bytes == cut - whole[-1].end  # type: ignore[attr-defined]
        assert report.padded_regions == 0 and report.end_position == whole[-1].end  # type: ignore[attr-defined]
        snapshot = next(e for e in original if e.position == newest)
        assert report.has_snapshot == (cut >= snapshot.end)  # type: ignore[attr-defined]


def check_damage(report: object, original: List[Entry], everything: List[Entry], newest: int, first: int, last: int) -> None:
    """Bytes ``[first, last)`` of the newest segment changed: exactly the entries they touch are lost."""
    damaged = [e for e in original if e.position < last and e.end > first]
    intact = [e for e in original if e not in damaged]
    assert damaged and all(e.position >= newest for e in damaged)
    survivors = [e for e in everything if e.type is not EntryType.PAD]
    assert survivors == intact
    span = damaged[-1].end - damaged[0].position
    if damaged[-1] is original[-1]:
        assert report.truncated_bytes == span and report.padded_regions == 0  # type: ignore[attr-defined]
    else:
        assert report.padded_regions == 1 and report.padded_bytes == span  # type: ignore[attr-defined]
        assert report.truncated_bytes == 0  # type: ignore[attr-defined]
        pads = [e for e in everything if e.type is EntryType.PAD]
        assert pads and pads[0].position == damaged[0].position and pads[-1].end == damaged[-1].end
    assert report.has_snapshot == (damaged[0].position != newest)  # type: ignore[attr-defined]


def test_recovery_from_single_byte_corruption(tmp_path: Path, damaged_source: Tuple[Path, List[Entry], int]) -> None:
    source, original, newest = damaged_source
    segment_end = original[-1].end
    rng = random.Random(8)
    spots = {newest, newest + 3, newest + 8, segment_end - 1} | {rng.randrange(newest, segment_end) for _ in range(70)}
    for trial, spot in enumerate(sorted(spots)):
        path = damaged_copy(source, tmp_path / str(trial), newest)
        with open(path, "r+b") as f:
            f.seek(spot - newest)
            byte = f.read(1)[0]
            f.seek(spot - newest)
            f.write(bytes([byte ^ rng.randint(1, 255)]))
        report, _, everything = reopen_and_collect(tmp_path / str(trial))
        check_damage(report, original, everything, newest, spot, spot + 1)


def test_recovery_from_overwritten_ranges(tmp_path: Path, damaged_source: Tuple[Path, List[Entry], int]) -> None:
    source, original, newest = damaged_source
    segment_end = original[-1].end
    rng = random.Random(9)
    for trial in range(60):
        start = rng.randrange(newest, segment_end - 1)
        length = rng.randint(1, min(300, segment_end - start))
        path = damaged_copy(source, tmp_path / str(trial), newest)
        with open(path, "r+b") as f:
            f.seek(start - newest)
            before = f.read(length)
            garbage = rng.randbytes(length) if trial % 3 else bytes(length)
            f.seek(start - newest)
            f.write(garbage)
        changed = [i for i in range(length) if before[i] != garbage[i]]
        report, _, everything = reopen_and_collect(tmp_path / str(trial))
        if not changed:
            assert not report.damaged and everything == original  # type: ignore[attr-defined]
            continue
        check_damage(report, original, everything, newest, start + changed[0], start + changed[-1] + 1)


def test_recovery_cuts_garbage_appended_to_the_tail(tmp_path: Path, damaged_source: Tuple[Path, List[Entry], int]) -> None:
    source, original, newest = damaged_source
    for trial, junk in enumerate((bytes(4096), b"\xff" * 3, random.Random(10).randbytes(5000))):
        path = damaged_copy(source, tmp_path / str(trial), newest)
        with open(path, "ab") as f:
            f.write(junk)
        report, _, everything = reopen_and_collect(tmp_path / str(trial))
        assert everything == original
        assert report.truncated_bytes == len(junk) and report.padded_regions == 0  # type: ignore[attr-defined]


def test_lost_snapshot_replays_from_an_older_segment(tmp_path: Path, damaged_source: Tuple[Path, List[Entry], int]) -> None:
    source, original, newest = damaged_source
    older = [e.position for e in original if e.type is EntryType.SNAPSHOT and e.position < newest][-1]
    # Snapshot of the newest segment torn off; and a crash right after creating a segment file.
    for trial, size in enumerate((5, None)):
        directory = tmp_path / str(trial)
        path = damaged_copy(source, directory, newest)
        if size is None:
            open(segment_path(str(directory), original[-1].end), "wb").close()
        else:
            os.truncate(path, size)
        journal = Journal(str(directory))
        try:
            report = journal.open()
            assert not report.has_snapshot and report.entries == 0
            replay = list(journal.recovery_entries())
            expected_start = older if size is not None else newest
            assert replay[0].position == expected_start and replay[0].type is EntryType.SNAPSHOT
            assert replay[-1].end == journal.end_position
            base_before = journal.segment_starts()[-1]
            position = journal.rotate(b"fresh snapshot")
            assert position == base_before == journal.end_position - HEADER_SIZE - len(b"fresh snapshot")
            assert journal.segment_starts()[-1] == base_before and journal.has_snapshot
            assert list(journal.recovery_entries())[0].position == position
        finally:
            journal.close()


def test_new_journal_has_no_snapshot_until_rotate(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "new" / "j"))
    try:
        report = journal.open()
        assert (report.segments, report.entries, report.end_position, report.has_snapshot) == (1, 0, 0, False)
        assert journal.rotate(b"s0") == 0
        assert journal.segment_starts() == [0]
        assert [e.type for e in journal.newest_segment_entries()] == [EntryType.SNAPSHOT]
    finally:
        journal.close()


# -- readers and damage -------------------------------------------------------------------


def test_reader_resyncs_past_damage_in_an_older_segment(tmp_path: Path, damaged_source: Tuple[Path, List[Entry], int]) -> None:
    source, original, newest = damaged_source
    directory = tmp_path / "j"
    shutil.copytree(source, directory)
    old = [e for e in original if e.position < newest]
    middle, last = old[len(old) // 2], old[-1]
    # Damage one entry mid-segment and the last entry of the segment before the newest.
    bases = sorted(int(n[:20]) for n in os.listdir(directory) if n.endswith(".seg"))
    for victim in (middle, last):
        base = max(b for b in bases if b <= victim.position)
        with open(segment_path(str(directory), base), "r+b") as f:
            f.seek(victim.position - base + HEADER_SIZE - 1)  # the type byte
            f.write(b"\x07")
    with JournalReader(str(directory)) as reader:
        got = []
        pos = 0
        while True:
            entries, nxt = reader.read(pos, max_entries=4)
            if not entries and nxt == pos:
                break
            got.extend(entries)
            pos = nxt
        assert got == [e for e in original if e not in (middle, last)]
        assert reader.corrupt_regions == 2
        assert reader.skipped_bytes == (middle.end - middle.position) + (last.end - last.position)


def test_reader_waits_at_damaged_head_then_resyncs(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    journal = new_journal(directory)
    try:
        before = journal.append(EntryType.FRAME, b"before")
        victim = journal.append(EntryType.FRAME, b"this one gets damaged")
        journal.commit()
        base = journal.segment_starts()[-1]
        with open(segment_path(str(directory), base), "r+b") as f:
            f.seek(victim - base + HEADER_SIZE + 3)
            f.write(b"#")
        with JournalReader(str(directory)) as reader:
            entries, nxt = reader.read(before)
            assert [e.position for e in entries] == [before] and nxt == victim
            assert reader.read(victim) == ([], victim)
            after = journal.append(EntryType.FRAME, b"after")
            journal.commit()
            entries, nxt = reader.read(victim)
            assert as_tuples(entries) == [(after, EntryType.FRAME, b"after")]
            assert reader.corrupt_regions == 1 and reader.skipped_bytes == after - victim
    finally:
        journal.close()


def test_reader_notices_a_newer_segment_behind_a_torn_tail(tmp_path: Path) -> None:
    """A torn tail only means "being written" in the newest segment; once a newer one exists it is skipped."""
    directory = tmp_path / "j"
    directory.mkdir()
    first = encode_entry(EntryType.SNAPSHOT, b"a") + encode_entry(EntryType.FRAME, b"one")
    torn = encode_entry(EntryType.FRAME, b"lost in a power cut")[:12]
    with open(segment_path(str(directory), 0), "wb") as f:
        f.write(first + torn)
    with JournalReader(str(directory)) as reader:
        entries, nxt = reader.read(0)
        assert [e.payload for e in entries] == [b"a", b"one"] and nxt == len(first)
        assert reader.read(nxt) == ([], nxt)
        base = len(first) + len(torn)
        with open(segment_path(str(directory), base), "wb") as f:
            f.write(encode_entry(EntryType.SNAPSHOT, b"b") + encode_entry(EntryType.FRAME, b"two"))
        entries, _ = reader.read(nxt)
        assert [(e.position, e.payload) for e in entries] == [(base, b"b"), (base + HEADER_SIZE + 1, b"two")]
        assert reader.skipped_bytes == len(torn) and reader.corrupt_regions == 1


# -- fsync policy, locking ---------------------------------------------------------------------


def test_fsync_always_syncs_every_commit(tmp_path: Path) -> None:
    journal = new_journal(tmp_path / "j", fsync=FsyncPolicy.ALWAYS)
    try:
        base = journal.fsync_count
        for i in range(5):
            journal.append(EntryType.FRAME, b"%d" % i)
            journal.commit()
            assert journal.fsync_count == base + i + 1
        journal.commit()  # nothing new written: nothing to sync
        assert journal.fsync_count == base + 5
    finally:
        journal.close()


def test_fsync_never_leaves_it_to_the_os(tmp_path: Path) -> None:
    journal = new_journal(tmp_path / "j", fsync=FsyncPolicy.NEVER, segment_bytes=100)
    try:
        for i in range(20):
            journal.append(EntryType.FRAME, bytes(30))
            journal.commit()
            journal.tick()
            if journal.needs_rotation():
                journal.rotate(b"s")
        assert len(journal.segment_starts()) > 3
    finally:
        journal.close()
    assert journal.fsync_count == 0


def test_fsync_interval_on_an_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    journal = Journal(str(tmp_path / "j"), fsync=FsyncPolicy.INTERVAL, fsync_interval=1.0, clock=clock)
    try:
        journal.open()
        journal.rotate(b"s")  # a rotation syncs the new segment at once
        synced = journal.fsync_count
        journal.append(EntryType.FRAME, b"a")
        journal.commit()
        clock.now = 0.5
        journal.tick()
        assert journal.fsync_count == synced
        clock.now = 1.0
        journal.tick()
        assert journal.fsync_count == synced + 1
        clock.now = 5.0
        journal.tick()  # nothing written since: nothing to do
        assert journal.fsync_count == synced + 1
        journal.append(EntryType.FRAME, b"b")
        journal.commit()  # due: the commit syncs
        assert journal.fsync_count == synced + 2
        clock.now = 5.5
        journal.append(EntryType.FRAME, b"c")
        journal.commit()
        journal.tick()
        assert journal.fsync_count == synced + 2
        clock.now = 6.0
        journal.tick()
        assert journal.fsync_count == synced + 3
    finally:
        journal.close()


def test_single_writer_lock(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    first = new_journal(directory)
    try:
        with pytest.raises(JournalLockedError):
            Journal(str(directory)).open()
    finally:
        first.close()
    # A writer killed with SIGKILL leaves no stale lock behind.
    code = (
        "import sys, time\n"
        "from statbus.pipeline.journal.writer import Journal\n"
        "j = Journal(sys.argv[1]); j.open(); print('ready', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with pytest.raises(JournalLockedError):
            Journal(str(directory)).open()
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    second = Journal(str(directory))
    try:
        assert second.open().has_snapshot
    finally:
        second.close()


WRITER = """
import sys
from statbus.pipeline.journal.writer import EntryType, FsyncPolicy, Journal
directory, count, segment_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
journal = Journal(directory, segment_bytes=segment_bytes, fsync=FsyncPolicy.NEVER)
journal.open()
journal.rotate(b"snapshot 0")
for i in range(count):
    journal.append(EntryType.FRAME, b"frame %d " % i + bytes(i % 97))
    if i % 10 == 9:
        journal.commit()
        print(i + 1, flush=True)
    if journal.needs_rotation():
        journal.rotate(b"snapshot %d" % (i + 1))
journal.close()
print("done", flush=True)
"""


def frame_numbers(entries: List[Entry]) -> List[int]:
    numbers = []
    for entry in entries:
        if entry.type is EntryType.FRAME:
            head, _, rest = entry.payload.partition(b" ")[2].partition(b" ")
            index = int(head)
            assert head == b"%d" % index and rest == bytes(index % 97), entry
            numbers.append(index)
    return numbers


def test_reader_follows_a_writer_in_another_process(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    count = 20_000
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), str(count), str(64 << 10)],
        stdout=subprocess.DEVNULL,
    )
    try:
        numbers: List[int] = []
        with JournalReader(str(directory)) as reader:
            pos = 0

            def read_all() -> bool:
                nonlocal pos
                entries, pos = reader.read(pos, max_bytes=32 << 10)
                numbers.extend(frame_numbers(entries))
                return len(numbers) >= count

            wait_for(read_all, 60, lambda: f"the writer's {count} frames; read {len(numbers)}", interval=0.005)
            assert reader.skipped_bytes == 0 and reader.corrupt_regions == 0
        assert numbers == list(range(count))
        assert proc.wait(timeout=60) == 0
        assert len([n for n in os.listdir(directory) if n.endswith(".seg")]) > 3
    finally:
        proc.kill()
        proc.wait()


def test_writer_killed_mid_stream_reopens_with_every_committed_entry(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), str(10_000_000), str(256 << 10)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        committed = 0
        while committed < 30_000:
            line = proc.stdout.readline()
            assert line, "writer exited early"
            committed = int(line)
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    journal = Journal(str(directory))
    try:
        report = journal.open()
        assert report.padded_regions == 0
        assert list(journal.recovery_entries())[0].type is EntryType.SNAPSHOT
    finally:
        journal.close()
    numbers = frame_numbers(list(iter_entries(str(directory))))
    assert numbers == list(range(len(numbers))) and len(numbers) >= committed


def test_pad_entries_cover_exactly() -> None:
    for total in range(HEADER_SIZE, 80):
        pads = pad_entries(total)
        raw = b"".join(pads)
        assert len(raw) == total
    with pytest.raises(JournalError):
        pad_entries(HEADER_SIZE - 1)


# -- property: what is committed is what is read -------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from([EntryType.FRAME, EntryType.SUMMARY]), st.binary(max_size=300)),
        st.tuples(st.just("commit")),
        st.tuples(st.just("rotate"), st.binary(max_size=40)),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, segment_bytes=st.integers(min_value=64, max_value=2000), read_bytes=st.integers(1, 800))
def test_property_committed_entries_read_back(tmp_path_factory: pytest.TempPathFactory, ops: list, segment_bytes: int, read_bytes: int) -> None:
    directory = tmp_path_factory.mktemp("prop") / "j"
    journal = Journal(str(directory), segment_bytes=segment_bytes, fsync=FsyncPolicy.NEVER)
    journal.open()
    committed: List[Tuple[int, EntryType, bytes]] = []
    pending: List[Tuple[int, EntryType, bytes]] = []
    try:
        with JournalReader(str(directory)) as reader:
            for op in ops:
                if op[0] == "append":
                    pending.append((journal.append(op[1], op[2]), op[1], op[2]))
                elif op[0] == "commit":
                    journal.commit()
                    committed += pending
                    pending = []
                else:
                    pending.append((journal.rotate(op[1]), EntryType.SNAPSHOT, op[1]))
                    committed += pending
                    pending = []
                got: List[Entry] = []
                pos = 0
                while True:
                    entries, nxt = reader.read(pos, max_bytes=read_bytes)
                    if not entries:
                        break
                    got.extend(entries)
                    pos = nxt
                assert as_tuples(got) == committed
    finally:
        journal.close()
    assert as_tuples(list(iter_entries(str(directory)))) == committed + pending
