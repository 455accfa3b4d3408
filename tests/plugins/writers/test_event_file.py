"""statbus.plugins.event_file, checked against tensorboard's own framing and loader."""

from __future__ import annotations

import itertools
import os
import random
import re
import socket
import struct
import time

import pytest

from statbus.plugins.writers import event_file
from statbus.plugins.writers.event_file import EventFile, frame_record, masked_crc32c


def load(path):
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    return list(LegacyEventFileLoader(str(path)).Load())


def scalar_event(step: float, value: float) -> bytes:
    from tensorboard.compat.proto import event_pb2

    event = event_pb2.Event(wall_time=time.time(), step=step)
    event.summary.value.add(tag="k", simple_value=value)
    return event.SerializeToString()


def test_masked_crc_matches_tensorboards_pure_python_one():
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    rng = random.Random(7)
    for size in (0, 1, 8, 31, 232, 4096):
        data = bytes(rng.getrandbits(8) for _ in range(size))
        assert masked_crc32c(data) == reference(data)


def test_frame_record_layout():
    data = b"some event bytes"
    record = frame_record(data)
    assert record[:8] == struct.pack("<Q", len(data))
    assert struct.unpack("<I", record[8:12])[0] == masked_crc32c(record[:8])
    assert record[12:-4] == data
    assert struct.unpack("<I", record[-4:])[0] == masked_crc32c(data)


def test_name_and_first_record(tmp_path):
    file = EventFile(str(tmp_path), flush_secs=3600)
    try:
        name = os.path.basename(file.path)
        # The form tensorboard's EventFileWriter uses.
        pattern = r"events\.out\.tfevents\.\d{10}\.%s\.%d\.\d+" % (re.escape(socket.gethostname()), os.getpid())
        assert re.fullmatch(pattern, name)
        [header] = load(file.path)  # written and flushed at once
        assert header.file_version == "brain.Event:2" and header.wall_time > 0
    finally:
        file.close()


def test_flush_close_and_write_after_close(tmp_path):
    file = EventFile(str(tmp_path), flush_secs=3600)
    file.write(scalar_event(1, 1.0))
    assert len(load(file.path)) == 1  # buffered
    file.flush()
    assert [e.step for e in load(file.path)] == [0, 1]
    file.write(scalar_event(2, 2.0))
    file.close()
    file.close()  # idempotent
    assert [e.step for e in load(file.path)] == [0, 1, 2]
    with pytest.raises(ValueError):
        file.write(scalar_event(3, 3.0))


def test_same_second_files_differ_and_an_existing_file_is_not_truncated(tmp_path, monkeypatch):
    monkeypatch.setattr(event_file, "_file_counter", itertools.count())
    # What a restarted worker with the same pid (a container) could collide
    # with: counter 0 in this second and the next.
    now = int(time.time())
    taken = [
        tmp_path / ("events.out.tfevents.%010d.%s.%s.0" % (t, socket.gethostname(), os.getpid())) for t in (now, now + 1)
    ]
    for path in taken:
        path.write_bytes(b"predecessor")
    first, second = EventFile(str(tmp_path), 3600), EventFile(str(tmp_path), 3600)
    first.close()
    second.close()
    assert first.path != second.path
    assert {first.path, second.path}.isdisjoint(str(p) for p in taken)
    assert all(p.read_bytes() == b"predecessor" for p in taken)
