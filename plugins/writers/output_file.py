"""An append-only output file that neither loses nor repeats a byte when its disk fills up.

Python's buffered files are not safe to retry on ``ENOSPC``: a text file drops
the chunk it was writing when the write fails (CPython's ``TextIOWrapper``
clears its pending text before it knows what was written), and a retried
``write`` may repeat what had already gone out.  Here ``write()`` only
appends to a buffer of our own (it never raises for the disk), and ``flush()``
hands the buffer to the OS with ``os.write`` on an ``O_APPEND`` descriptor,
keeping exactly the bytes that did not get out: after a failure, calling
``flush()`` again continues where it stopped, so a torn record at the end of
the file is completed, not repeated.  The worker host retries a ``flush()``
that failed on a full disk until space is back (:mod:`statbus.workers.host.disk_wait`).
"""

from __future__ import annotations

import os
from typing import Optional

from ..errors import disk_full_error

BUFFER_BYTES = 256 * 1024
"""Bytes buffered before ``write()`` hands them to the OS by itself."""


class OutputFile:
    """``path`` opened for appending (``exclusive``: created, must not exist yet)."""

    def __init__(self, path: str, *, exclusive: bool = False, buffer_bytes: int = BUFFER_BYTES) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else 0)
        self.path = path
        self._fd: Optional[int] = os.open(path, flags, 0o644)
        self._pending = bytearray()
        self._limit = buffer_bytes

    @property
    def closed(self) -> bool:
        return self._fd is None

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def write(self, data: bytes) -> None:
        """Buffer ``data``; past the buffer's size, try to hand it to the OS (a full disk is left to ``flush()``)."""
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        self._pending += data
        if len(self._pending) >= self._limit:
            self.flush_soon()

    def flush_soon(self) -> None:
        """``flush()``, except that a full disk is not raised here: the next ``flush()`` reports it."""
        try:
            self.flush()
        except OSError as exc:
            if disk_full_error(exc) is None:
                raise

    def flush(self) -> None:
        """Hand everything buffered to the OS (no fsync); on an error, what did not get out stays buffered."""
        if self._fd is None or not self._pending:
            return
        data = bytes(self._pending)  # a copy: no view of the buffer may outlive a failed write
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:] if done else data)
        finally:
            del self._pending[:done]

    def close(self) -> None:
        """Flush and close; the descriptor is closed even when the flush fails (its error is raised)."""
        if self._fd is None:
            return
        try:
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = None
