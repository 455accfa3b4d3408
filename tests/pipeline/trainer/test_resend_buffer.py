"""The trainer's resend buffer (trainer/resend_buffer.py): bounded by bytes, stripping the oldest
stats first, keeping every WRITE marker, raising ``lowest_sendable`` past what it dropped."""

from __future__ import annotations

from statbus.pipeline.trainer.resend_buffer import FRAME_OVERHEAD, FrameBuffer
from statbus.pipeline.wire import decode_frame, stat_record, write_record
from statbus.plugins.records import pack_values


def _stats(n: int) -> list:
    return [stat_record("Cat", "k", 0, 0, pack_values(range(n)))]


def test_frame_buffer_strips_oldest_stats_keeps_markers_and_raises_lowest_sendable() -> None:
    buffer = FrameBuffer("me", limit=1 << 20)
    buffer.add(_stats(100), 100)                                    # 1: stats only
    buffer.add(_stats(100) + [write_record("Cat", 1)], 100)          # 2: stats + write
    buffer.add(_stats(100), 100)                                    # 3: stats only
    # Room for one whole frame and two stripped ones: frames 1 and 2 must go.
    buffer.limit = buffer.frames[2].nbytes + 2 * (FRAME_OVERHEAD + 100)
    dropped, lost = buffer.enforce()
    assert (dropped, lost) == (200, 0)
    assert [f.seq for f in buffer.frames] == [2, 3]  # 1 was left empty at the bottom: dropped
    assert buffer.lowest_sendable == 2 and buffer.nbytes <= buffer.limit
    frame2, frame3 = (decode_frame(buffer.payload(f)) for f in buffer.frames)
    assert frame2.lowest_sendable == 2 and [type(r).__name__ for r in frame2.records] == ["WriteMarker"]
    assert frame3.lowest_sendable == 2 and len(frame3.records[0].values) == 100
    assert buffer.ack(2) == 1 and buffer.acked == 2
    assert buffer.ack(1) == 0 and buffer.ack(99) == 1 and not buffer.frames


def test_a_full_frame_buffer_leaves_nothing_for_the_garbage_collector_to_walk() -> None:
    # Buffered records as Python lists made every collection in the training process walk
    # them (millions in a full buffer): the buffer keeps encoded bytes only.
    import gc

    buffer = FrameBuffer("me", limit=1 << 30)
    records = [[0, "Cat", f"k{i}", 0, 0, pack_values([float(i)])] for i in range(1000)]
    gc.collect()
    tracked_before = len(gc.get_objects())
    for _ in range(200):
        buffer.add([list(r) for r in records] + [write_record("Cat", 1)], 1000)
    del records
    gc.collect()
    assert len(buffer.frames) == 200
    assert len(gc.get_objects()) - tracked_before < 200 + 50  # the 200 Outgoing slots objects, not 200,000 records
    first = buffer.frames[0]
    assert len(first.records) == 1001 and first.nrecords == 1001  # decoded again on demand


def test_frame_buffer_merges_unsent_marker_frames_under_pressure() -> None:
    buffer = FrameBuffer("me", limit=1 << 20)
    for step in range(50):
        buffer.add(_stats(10) + [write_record("Cat", step)], 10)
    buffer.limit = 50 * 200
    dropped, lost = buffer.enforce()
    assert dropped == 500 and lost == 0 and buffer.nbytes <= buffer.limit
    # Every write survives, in order, in fewer frames; lowest_sendable moved past the merged ones.
    frames = [decode_frame(buffer.payload(f)) for f in buffer.frames]
    assert [r.step for f in frames for r in f.records] == list(range(50))
    assert len(frames) < 50 and buffer.lowest_sendable == frames[0].seq


def test_frame_buffer_last_resort_drops_whole_frames_to_stay_bounded() -> None:
    buffer = FrameBuffer("me", limit=1 << 20)
    for step in range(50):
        buffer.add([write_record("Cat", step)], 0).first_sent = 1.0  # sent once: never merged
    buffer.limit = 10 * (FRAME_OVERHEAD + 60)
    _, lost = buffer.enforce()
    assert lost > 0 and buffer.nbytes <= buffer.limit and buffer.frames_lost == lost
    assert buffer.lowest_sendable == buffer.frames[0].seq



def test_frame_buffer_spills_the_oldest_frames_whole_and_keeps_lowest_sendable_below_them() -> None:
    spilled: list = []
    refuse = False

    def spill(frames: list) -> int:
        if refuse:
            return 0
        spilled.extend(frames)
        return len(frames)

    buffer = FrameBuffer("me", limit=1 << 20, spill=spill)
    for step in range(10):
        buffer.add(_stats(100) + [write_record("Cat", step)], 100)
    frame_bytes = buffer.frames[0].nbytes
    buffer.limit = 6 * frame_bytes  # over by 4 frames: down to half the limit, 7 go
    assert buffer.enforce() == (0, 0)
    assert [f.seq for f in spilled] == list(range(1, 8)) and [f.seq for f in buffer.frames] == [8, 9, 10]
    assert all(decode_frame(f.payload).records[0].packed == pack_values(range(100)) for f in spilled)  # whole
    assert buffer.values_dropped == 0 and buffer.nbytes <= buffer.limit // 2
    # What follows names seq 1 as the lowest it can send: the collector takes 8.. only after 1..7.
    assert buffer.lowest_sendable == 1 and decode_frame(buffer.payload(buffer.frames[0])).lowest_sendable == 1
    refuse = True  # the spool is full: stripping as before, but no frame leaves the bottom yet
    for step in range(10, 20):
        buffer.add(_stats(100), 100)
    dropped, lost = buffer.enforce()
    assert dropped > 0 and lost == 0 and buffer.frames[0].seq == 8 and buffer.lowest_sendable == 1
    assert buffer.ack(7) == 0 and buffer.lowest_sendable == 8  # the collector took the spilled ones
    buffer.add(_stats(100), 100)
    buffer.enforce()  # now empty frames at the bottom may go again
    assert buffer.lowest_sendable == buffer.frames[0].seq > 8


def test_media_frames_count_against_the_media_bound_only_and_are_never_stripped_nor_merged() -> None:
    from statbus.plugins.media import Media, MediaKind
    from statbus.plugins.records import MediaRecord

    record = MediaRecord("Cat", "img", 0, Media(MediaKind.IMAGE, (1 << 20,), "uint8", bytes(1 << 20), {})).to_msgpack()
    buffer = FrameBuffer("me", limit=64 << 10)
    buffer.add([write_record("Cat", 1)], 0)      # 1: a marker (unsent neighbours like it are merged)
    buffer.add([record], 0, media=1 << 20)       # 2: 1 MiB of media, far past the buffer's 64 KiB
    buffer.add([write_record("Cat", 2)], 0)      # 3
    buffer.add(_stats(10_000), 10_000)           # 4: stats past the limit: stripped
    assert buffer.media_bytes == 1 << 20 and buffer.nbytes < (1 << 20)
    buffer.enforce()
    assert [f.seq for f in buffer.frames] == [1, 2, 3, 4]   # 1 is not merged into the media frame
    assert decode_frame(buffer.payload(buffer.frames[1])).records[0].media.data == bytes(1 << 20)
    assert buffer.values_dropped == 10_000 and buffer.nbytes <= buffer.limit
    # At exit the spool keeps media up to a bound: past it they are stripped from their frames, seqs kept.
    assert buffer.strip_media(keep=(1 << 20) - 1) == (1, 1 << 20)
    assert [f.seq for f in buffer.frames] == [1, 2, 3, 4] and buffer.media_bytes == 0
    assert decode_frame(buffer.payload(buffer.frames[1])).records == ()
    assert buffer.ack(4) == 4 and buffer.media_bytes == 0
