"""Fault injection at the journal's system calls: a disk that refuses writes on demand."""

from __future__ import annotations

import errno
import os
from typing import Optional

import pytest

import statbus.pipeline.journal.writer as journal_module


class Disk:
    """Fault injection for the journal's files: at most ``free`` more bytes, then ``error``; None: unlimited."""

    def __init__(self, directory: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.directory = os.path.realpath(directory)
        self.free: Optional[int] = None
        self.error = errno.ENOSPC
        self.fsync_error: Optional[int] = None
        self.open_error: Optional[int] = None
        self.capacity: Optional[int] = None
        """When set: the journal's segment files together may hold this many bytes (deleting one frees space)."""
        real_pwrite, real_open, real_sync = os.pwrite, os.open, journal_module._fdatasync

        def mine(fd: int) -> bool:
            try:
                return os.readlink(f"/proc/self/fd/{fd}").startswith(self.directory)
            except OSError:
                return False

        def pwrite(fd: int, data, offset: int) -> int:
            if self.capacity is not None and mine(fd):
                self.free = max(0, self.capacity - self.used())
            if self.free is None or not mine(fd):
                return real_pwrite(fd, data, offset)
            if self.free <= 0:
                raise OSError(self.error, os.strerror(self.error))
            n = real_pwrite(fd, bytes(data)[: self.free], offset)
            self.free -= n
            return n

        def fdatasync(fd: int) -> None:
            if self.fsync_error is not None:
                raise OSError(self.fsync_error, os.strerror(self.fsync_error))
            real_sync(fd)

        def open_(path, flags, mode=0o777, **kw):
            if self.open_error is not None and flags & os.O_CREAT and str(path).startswith(self.directory):
                raise OSError(self.open_error, os.strerror(self.open_error))
            return real_open(path, flags, mode, **kw)

        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(os, "open", open_)
        monkeypatch.setattr(journal_module, "_fdatasync", fdatasync)

    def used(self) -> int:
        return sum(
            os.path.getsize(os.path.join(self.directory, name))
            for name in os.listdir(self.directory) if name.endswith(".seg")
        )
