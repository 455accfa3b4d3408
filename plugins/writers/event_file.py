"""Append TFRecord-framed events to one TensorBoard event file.

One job: frame already serialized ``Event`` protos as TFRecords and append
them to a file TensorBoard recognises, cheaply and without a thread.

A record is ``uint64 length`` (little-endian), ``uint32`` masked CRC32C of
those 8 bytes, the data, ``uint32`` masked CRC32C of the data.  The CRC comes
from ``google_crc32c`` (C): tensorboard's own writer computes it with a
Python loop per byte, which was most of a summary's cost.

The file is named like tensorboard's ``EventFileWriter`` names its files
(``events.out.tfevents.<time>.<host>.<pid>.<counter>``) and starts with an
``Event`` carrying ``file_version`` ``brain.Event:2``.  Writes go to an
:class:`~statbus.plugins.writers.output_file.OutputFile`; data reach the OS on ``flush()``,
on ``close()``, and at a write once more than ``flush_secs`` passed since the last
flush.  Only ``flush()`` and ``close()`` raise for a full disk, and calling them again
once there is space completes the file without a torn or repeated record.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import struct
import time
from typing import Callable, Optional, Tuple

import google_crc32c

from .output_file import OutputFile

logger = logging.getLogger(__name__)

EVENT_FILE_PREFIX = "events.out.tfevents"
FILE_VERSION = "brain.Event:2"
SOURCE_WRITER = "statbus.plugins.event_file"
# Large enough that a flush_secs period of summaries normally stays in memory:
# TensorBoard then sees whole flushes instead of records torn at 8 KiB steps.
BUFFER_SIZE = 256 * 1024

_MASK_DELTA = 0xA282EAD8
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_LENGTH_AND_CRC = struct.Struct("<QI")

# Per-process file counter, as EventFileWriter's uid: two files opened by one
# process in the same second get different names.
_file_counter = itertools.count()


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: CRC32C rotated right by 15 bits plus a constant."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """``data`` framed as one TFRecord."""
    length = _LENGTH.pack(len(data))
    return _LENGTH_AND_CRC.pack(len(data), masked_crc32c(length)) + data + _CRC.pack(masked_crc32c(data))


def _file_version_event(wall_time: float) -> bytes:
    # Imported here, once per file: importing this module must not pull in
    # tensorboard (trainers import statbus.plugins).
    from tensorboard.compat.proto import event_pb2

    event = event_pb2.Event(
        wall_time=wall_time,
        file_version=FILE_VERSION,
        source_metadata=event_pb2.SourceMetadata(writer=SOURCE_WRITER),
    )
    return event.SerializeToString()


class EventFile:
    """A new event file in ``directory``; ``write`` appends one serialized ``Event``."""

    def __init__(self, directory: str, flush_secs: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.flush_secs = flush_secs
        self._clock = clock
        self._last_flush = clock()
        header = frame_record(_file_version_event(time.time()))  # before the file: a failure leaves none
        self.path, file = self._create(directory)
        self._file: Optional[OutputFile] = file
        # The header goes out at once, as EventFileWriter does: the file is
        # a valid (empty) event file from the moment it exists (on a full
        # disk, from the first flush() that gets through).
        file.write(header)
        file.flush_soon()

    @staticmethod
    def _create(directory: str) -> Tuple[str, OutputFile]:
        host, pid = socket.gethostname(), os.getpid()
        while True:
            name = "%s.%010d.%s.%s.%s" % (EVENT_FILE_PREFIX, time.time(), host, pid, next(_file_counter))
            path = os.path.join(directory, name)
            try:
                # Exclusive create: a restarted worker that got the same pid
                # (containers) in the same second must not truncate its
                # predecessor's file; it takes the next counter instead.
                return path, OutputFile(path, exclusive=True, buffer_bytes=BUFFER_SIZE)
            except FileExistsError:
                logger.debug("event file %s exists already; trying the next name", path)

    def write(self, event: bytes) -> None:
        """Append one serialized ``Event``; flushes if ``flush_secs`` passed since the last flush."""
        if self._file is None:
            raise ValueError(f"event file {self.path} is closed")
        self._file.write(frame_record(event))
        if self._clock() - self._last_flush > self.flush_secs:
            self._file.flush_soon()  # a full disk is reported by flush(), which the host retries
            self._last_flush = self._clock()

    def flush(self) -> None:
        """Hand everything written so far to the OS (no fsync, as tensorboard's writer)."""
        if self._file is not None:
            self._file.flush()
        self._last_flush = self._clock()

    def close(self) -> None:
        if self._file is None:
            return
        try:
            self._file.close()
        finally:
            self._file = None
