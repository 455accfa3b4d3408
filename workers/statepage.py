"""The per-plugin state page: a 4 KiB mmap'd file shared by a worker host and its supervisor.

The worker host writes it, the supervisor reads it (from another process, at
any time, without locks).  Each field is one naturally aligned 8-byte slot,
copied in and out whole (an 8-byte slice assignment / slice read of the map,
which is one 8-byte move): a reader sees either the old or the new value of a
field, never a mix.  ``struct.pack_into`` on the map would not do: it zeroes
the field before writing it byte by byte, and a reader could see 0 in between.
Two fields read one after the other may come from different moments.

Layout (little-endian, offsets in bytes)::

     0  magic       8s   b"SBSTATE1"
     8  committed   u64  the plugin's cursor: position after the last entry whose
                         writers returned and were flushed (survives any crash)
    16  inflight    i64  position of the entry being delivered now, -1 when none
    24  heartbeat   f64  time.time() of the last heartbeat (every 0.25 s)
    32  busy_since  f64  time.time() at the start of the current writer call, 0 when idle
    40  pid         i64  pid of the worker host that last opened the page
    48  state       i64  :class:`HostState`
    56  delivered   u64  entries delivered since the host started
    64  summaries   u64  summaries (``write_stats`` entries) delivered since the host started
    72  disk_full_since f64  time.time() since which a writer's output waits for disk space, 0 when not

The rest of the 4 KiB is zero and reserved.

Typical use::

    page = StatePage(path, create=True, initial_committed=0)   # supervisor, before spawning
    page.committed, page.inflight, page.snapshot()              # supervisor, any time
    page.close()

Opening an existing page never changes ``committed``: it is the plugin's
durable cursor.
"""

from __future__ import annotations

import enum
import mmap
import os
import struct
import tempfile
from typing import NamedTuple, Optional

from ..plugins.errors import StatbusError

PAGE_SIZE = 4096
MAGIC = b"SBSTATE1"

_MAGIC_OFFSET = 0
_COMMITTED = 8
_INFLIGHT = 16
_HEARTBEAT = 24
_BUSY_SINCE = 32
_PID = 40
_STATE = 48
_DELIVERED = 56
_SUMMARIES = 64
_DISK_FULL_SINCE = 72

# Fields are read and written as whole 8-byte slices (one aligned memcpy), never with
# pack_into/unpack_from: those go byte by byte, and the other process then reads torn
# values (test_another_process_reads_whole_fields_while_they_change catches it).
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")

NO_INFLIGHT = -1


class HostState(enum.IntEnum):
    """What the worker host is doing, as written in the page's ``state`` field."""

    STARTING = 0
    READY = 1
    STOPPING = 2


class StatePageError(StatbusError):
    """A state page is missing, of the wrong size, or not a state page."""


class StateSnapshot(NamedTuple):
    """Every field of a page, read one after the other (not one atomic read)."""

    committed: int
    inflight: int
    heartbeat: float
    busy_since: float
    pid: int
    state: HostState
    delivered: int
    summaries: int
    disk_full_since: float = 0.0


def _initial_bytes(committed: int) -> bytes:
    page = bytearray(PAGE_SIZE)
    page[_MAGIC_OFFSET:_MAGIC_OFFSET + 8] = MAGIC
    _U64.pack_into(page, _COMMITTED, committed)
    _I64.pack_into(page, _INFLIGHT, NO_INFLIGHT)
    return bytes(page)


def _create_exclusively(path: str, committed: int) -> None:
    """Create a fresh page at ``path`` unless one exists, never exposing a half-written file.

    The page is written under a temporary name and hard-linked into place:
    ``link`` fails when ``path`` exists, so a page created concurrently by
    someone else is kept, and a reader never sees a short file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".statepage-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(_initial_bytes(committed))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)


class StatePage:
    """One plugin's state page, mapped into this process.

    ``create=True`` creates the file (with ``committed = initial_committed``)
    when it does not exist yet and opens it otherwise; ``create=False``
    requires it to exist.  ``readonly=True`` maps it read-only (setting a
    field then raises ``TypeError``).
    """

    def __init__(self, path: str, create: bool = False, *, initial_committed: int = 0, readonly: bool = False) -> None:
        self.path = path
        if create and not os.path.exists(path):
            _create_exclusively(path, initial_committed)
        try:
            fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        except FileNotFoundError:
            raise StatePageError(f"state page {path} does not exist") from None
        except OSError as exc:
            raise StatePageError(f"cannot open state page {path}: {exc}") from None
        try:
            size = os.fstat(fd).st_size
            if size != PAGE_SIZE:
                raise StatePageError(f"state page {path} has {size} bytes, expected {PAGE_SIZE}")
            access = mmap.ACCESS_READ if readonly else mmap.ACCESS_WRITE
            self._map = mmap.mmap(fd, PAGE_SIZE, access=access)
        finally:
            os.close(fd)
        if self._map[_MAGIC_OFFSET:_MAGIC_OFFSET + 8] != MAGIC:
            self._map.close()
            raise StatePageError(f"{path} is not a statbus state page (bad magic)")

    # --- lifetime ------------------------------------------------------------

    def close(self) -> None:
        if not self._map.closed:
            self._map.close()

    @property
    def closed(self) -> bool:
        return self._map.closed

    def __enter__(self) -> "StatePage":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def flush(self) -> None:
        """Ask the OS to write the page to disk (the mapping itself is always current)."""
        self._map.flush()

    # --- fields --------------------------------------------------------------

    @property
    def committed(self) -> int:
        return _U64.unpack(self._map[_COMMITTED:_COMMITTED + 8])[0]

    @committed.setter
    def committed(self, value: int) -> None:
        self._map[_COMMITTED:_COMMITTED + 8] = _U64.pack(value)

    @property
    def inflight(self) -> int:
        return _I64.unpack(self._map[_INFLIGHT:_INFLIGHT + 8])[0]

    @inflight.setter
    def inflight(self, value: int) -> None:
        self._map[_INFLIGHT:_INFLIGHT + 8] = _I64.pack(value)

    @property
    def heartbeat(self) -> float:
        return _F64.unpack(self._map[_HEARTBEAT:_HEARTBEAT + 8])[0]

    @heartbeat.setter
    def heartbeat(self, value: float) -> None:
        self._map[_HEARTBEAT:_HEARTBEAT + 8] = _F64.pack(value)

    @property
    def busy_since(self) -> float:
        return _F64.unpack(self._map[_BUSY_SINCE:_BUSY_SINCE + 8])[0]

    @busy_since.setter
    def busy_since(self, value: float) -> None:
        self._map[_BUSY_SINCE:_BUSY_SINCE + 8] = _F64.pack(value)

    @property
    def pid(self) -> int:
        return _I64.unpack(self._map[_PID:_PID + 8])[0]

    @pid.setter
    def pid(self, value: int) -> None:
        self._map[_PID:_PID + 8] = _I64.pack(value)

    @property
    def state(self) -> HostState:
        raw = _I64.unpack(self._map[_STATE:_STATE + 8])[0]
        try:
            return HostState(raw)
        except ValueError:
            # A page written by a newer host; report it as starting rather than fail.
            return HostState.STARTING

    @state.setter
    def state(self, value: HostState) -> None:
        self._map[_STATE:_STATE + 8] = _I64.pack(int(value))

    @property
    def delivered(self) -> int:
        return _U64.unpack(self._map[_DELIVERED:_DELIVERED + 8])[0]

    @delivered.setter
    def delivered(self, value: int) -> None:
        self._map[_DELIVERED:_DELIVERED + 8] = _U64.pack(value)

    @property
    def summaries(self) -> int:
        return _U64.unpack(self._map[_SUMMARIES:_SUMMARIES + 8])[0]

    @summaries.setter
    def summaries(self, value: int) -> None:
        self._map[_SUMMARIES:_SUMMARIES + 8] = _U64.pack(value)

    @property
    def disk_full_since(self) -> float:
        return _F64.unpack(self._map[_DISK_FULL_SINCE:_DISK_FULL_SINCE + 8])[0]

    @disk_full_since.setter
    def disk_full_since(self, value: float) -> None:
        self._map[_DISK_FULL_SINCE:_DISK_FULL_SINCE + 8] = _F64.pack(value)

    def snapshot(self) -> StateSnapshot:
        return StateSnapshot(
            self.committed,
            self.inflight,
            self.heartbeat,
            self.busy_since,
            self.pid,
            self.state,
            self.delivered,
            self.summaries,
            self.disk_full_since,
        )

    # --- the worker host's start -----------------------------------------------

    def reset_for_host(self, pid: int, now: float) -> None:
        """A new host takes the page over: everything but ``committed`` starts afresh.

        The supervisor reads ``inflight`` of the previous host when it exits,
        before starting the next one, so clearing it here loses nothing.
        """
        self.inflight = NO_INFLIGHT
        self.busy_since = 0.0
        self.delivered = 0
        self.summaries = 0
        self.disk_full_since = 0.0
        self.state = HostState.STARTING
        self.heartbeat = now
        self.pid = pid


def read_state(path: str) -> Optional[StateSnapshot]:
    """Every field of the page at ``path``, or ``None`` when there is no usable page."""
    try:
        with StatePage(path, readonly=True) as page:
            return page.snapshot()
    except StatePageError:
        return None
