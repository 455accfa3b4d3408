"""The worker host: one plugin's writers in a process of their own, fed from the journal.

Started by the supervisor as ``python -m statbus.workers ...`` (see
``__main__.py`` for the arguments).  The host

1. opens its state page and starts a heartbeat thread (before importing the
   plugin: imports such as tensorboard take seconds, and a silent host would
   look hung),
2. loads exactly its one entry point and calls the registration function,
3. marks the page READY and loops: FETCH after ``committed`` → deliver the
   entries → ``flush()`` the writers → write ``committed`` → fetch again.

A writer that raises ends the host with :attr:`ExitCode.WRITER_CRASH`, leaving
``inflight`` at the entry being delivered so that the supervisor can tell which
record killed it.  Every abnormal end writes one ``statbus-worker-error:`` line
to stderr last, for the supervisor to show as the plugin's last error.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, List, Mapping, NoReturn, Optional, Sequence, Tuple

import msgpack
import zmq

from ..plugins.discovery import PluginInfo
from ..plugins.errors import RecordError, StatbusError
from ..plugins.records import PropertyRecord, StatRecord, SummaryRecord, decode_batch, decode_record, unpack_values
from .fetch_client import DEFAULT_MAX_BYTES, EntryKind, FetchClient, FetchedEntry, FetchProtocolError, LostCollector
from .statepage import NO_INFLIGHT, HostState, StatePage

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 0.25
"""Seconds between two heartbeats (and parent / call-timeout checks)."""

COMMIT_INTERVAL = 0.1
"""Within one long fetch reply, flush and commit at least this often (seconds)."""

COMMIT_ENTRIES = 32
"""... and at least every this many delivered entries.  A restart replays what
was not committed: with a time-only cadence, a fast plugin that crashes now and
then re-delivers a whole catch-up backlog (hundreds of summaries in 100 ms) on
every restart, crashes again before its first commit, and never gets past it."""

CALL_TIMEOUT_GRACE = 1.0
"""The host gives up on a stuck writer call this long after ``call_timeout``:
the supervisor, which watches ``busy_since``, normally acts first."""

ERROR_PREFIX = "statbus-worker-error: "
"""Prefix of the one line an abnormally ending host writes last to stderr."""

_DEFAULT_WRITER_CLASSES = {("statbus.plugins.stats", "StatsWriter"), ("mlagents.trainers.stats", "StatsWriter")}


class ExitCode(enum.IntEnum):
    """Exit status of a worker host; the supervisor decides on restarts by these."""

    OK = 0
    BAD_CONFIG = 64
    IMPORT_FAILURE = 65
    REGISTRATION_FAILURE = 66
    LOST_PARENT = 67
    LOST_COLLECTOR = 68
    WRITER_CRASH = 70


class HostExit(StatbusError):
    """Ends the host with ``code``; ``message`` becomes the error line."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_line(code: ExitCode, message: str) -> str:
    """The parseable last line of an abnormal exit (one line, bounded length)."""
    flat = " | ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return f"{ERROR_PREFIX}{code.name}: {flat[:1000]}"


def parse_error_line(line: str) -> Optional[str]:
    """``CODE: message`` from a line written by :func:`report_error`, else ``None``."""
    line = line.rstrip("\n")
    return line[len(ERROR_PREFIX):] if line.startswith(ERROR_PREFIX) else None


def report_error(code: ExitCode, message: str) -> None:
    try:
        sys.stderr.flush()
        sys.stderr.write(error_line(code, message) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr gone: the exit code alone must do


def die(code: ExitCode, message: str) -> NoReturn:
    """End the process now, from any thread, with the error line last in the log.

    Logging is switched off and every root handler's lock held first, so that
    the main thread cannot write after (or into the middle of) the error line.
    """
    logging.disable(logging.CRITICAL)
    for handler in logging.getLogger().handlers:
        handler.acquire()
    report_error(code, message)
    os._exit(code)


@dataclasses.dataclass(frozen=True)
class HostConfig:
    plugin: str
    group: str
    target: str
    address: str
    state_file: str
    run_options: Mapping[str, Any]
    call_timeout: Optional[float] = None
    parent_pid: Optional[int] = None
    """The collector's pid: exit with LOST_PARENT once it is gone.  It may be a
    grandparent (an interpreter wrapper that does not exec); losing our direct
    parent (``os.getppid()`` changing) counts as lost too."""
    max_bytes: int = DEFAULT_MAX_BYTES

    @property
    def plugin_info(self) -> PluginInfo:
        """The one entry point to load: built from the arguments, never by scanning."""
        return PluginInfo(self.group, self.plugin, self.target, None, None)


# --- writers -----------------------------------------------------------------

def overrides(writer: Any, method: str) -> bool:
    """True when ``writer`` has its own ``method``, not StatsWriter's no-op (or none at all).

    Works for writers built on statbus's and on real mlagents' ``StatsWriter``.
    """
    if method in getattr(writer, "__dict__", {}):
        return True
    for klass in type(writer).__mro__:
        if method in vars(klass):
            return (klass.__module__, klass.__qualname__) not in _DEFAULT_WRITER_CLASSES
    return False


_SUMMARY = EntryKind.SUMMARY  # an enum attribute look-up per entry costs ~0.1 µs


def _describe(writer: Any) -> str:
    return type(writer).__qualname__


class WriterCrash(StatbusError):
    pass


class Writers:
    """The plugin's writers, with what each needs precomputed so delivery stays lean."""

    def __init__(self, writers: Sequence[Any], page: StatePage) -> None:
        self.writers = list(writers)
        self._page = page
        self._call: Tuple[Any, ...] = ("",)
        """What the main thread is in now: a message, or (writer, category, step) of a
        write_stats — formatted only when asked, not once per summary and writer."""
        # Most writers only care about summaries; skipping the per-value
        # on_add_stat calls (and the batch decoding when nobody needs it) is
        # where a worker's throughput comes from.
        self._add_stat = [w.on_add_stat for w in self.writers if overrides(w, "on_add_stat")]
        self._add_property = [w.add_property for w in self.writers if overrides(w, "add_property")]
        self._flush = [(w, w.flush) for w in self.writers if callable(getattr(w, "flush", None))]
        self._close = [(w, w.close) for w in self.writers if callable(getattr(w, "close", None))]
        self.needs_batches = bool(self._add_stat or self._add_property)

    @property
    def current_call(self) -> str:
        """What the main thread is in now, for the call-timeout and crash messages."""
        call = self._call
        if len(call) == 1:
            return call[0]
        writer, category, step = call
        return f"{_describe(writer)}.write_stats({category!r}, step={step})"

    def deliver(self, entry: FetchedEntry) -> bool:
        """Deliver one entry to every writer; True if it was a summary."""
        if entry.kind == _SUMMARY:
            record = decode_record(_unpack_summary(entry.data))
            if not isinstance(record, SummaryRecord):
                raise RecordError(f"entry at {entry.position} is not a summary")
            self._deliver_summary(record)
            return True
        if self.needs_batches:
            # Writers without on_add_stat only need the batch's properties: its stat
            # records (nearly all of it) are then neither validated nor unpacked.
            self._deliver_batch(decode_batch(entry.data, stats=bool(self._add_stat)))
        return False

    def _deliver_summary(self, record: SummaryRecord) -> None:
        values = record.summaries()
        page = self._page
        category, step = record.category, record.step
        for writer in self.writers:
            self._call = (writer, category, step)
            page.busy_since = time.time()
            try:
                writer.write_stats(category, values, step)
            except (Exception, SystemExit) as exc:
                raise WriterCrash(f"{self.current_call} raised {exc!r}") from exc
        page.busy_since = 0.0

    def _deliver_batch(self, records: List[StatRecord | PropertyRecord]) -> None:
        # One busy_since for the whole batch: per-value bookkeeping would cost
        # more than the on_add_stat calls themselves.
        self._call = ("on_add_stat/add_property of a batch",)
        self._page.busy_since = time.time()
        add_stat = self._add_stat
        method: Optional[Callable[..., Any]] = None
        try:
            for record in records:
                if type(record) is StatRecord:
                    if not add_stat:
                        continue
                    category, key, aggregation = record.category, record.key, record.aggregation
                    values = unpack_values(record.packed)
                    if len(add_stat) == 1:
                        method = add_stat[0]
                        for value in values:
                            method(category, key, value, aggregation)
                    else:
                        for value in values:
                            for method in add_stat:
                                method(category, key, value, aggregation)
                else:
                    for method in self._add_property:
                        method(record.category, record.property_type, record.value)
        except (Exception, SystemExit) as exc:
            owner = getattr(method, "__self__", None)
            name = getattr(method, "__name__", "?")
            raise WriterCrash(f"{_describe(owner)}.{name} raised {exc!r}") from exc
        self._page.busy_since = 0.0

    def flush(self) -> None:
        for writer, flush in self._flush:
            self._call = (f"{_describe(writer)}.flush()",)
            self._page.busy_since = time.time()
            try:
                flush()
            except (Exception, SystemExit) as exc:
                raise WriterCrash(f"{self.current_call} raised {exc!r}") from exc
        self._page.busy_since = 0.0

    def close(self) -> None:
        """Close every writer; a failing close is logged (everything was flushed and committed)."""
        for writer, close in self._close:
            try:
                close()
            except Exception:  # noqa: BLE001 — one writer's close must not skip the others'
                logger.exception("%s.close() raised", _describe(writer))


def _unpack_summary(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001
        raise RecordError(f"summary is not msgpack: {exc!r}") from None


# --- heartbeat ---------------------------------------------------------------

def _alive(pid: Optional[int]) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class Heartbeat(threading.Thread):
    """Beats every 0.25 s; ends the process when the parent is gone or a call is stuck."""

    def __init__(
        self,
        page: StatePage,
        parent_pid: Optional[int],
        call_timeout: Optional[float],
        current_call: Callable[[], str],
    ) -> None:
        super().__init__(name="statbus-heartbeat", daemon=True)
        self._page = page
        self._parent_pid = parent_pid
        self._ppid_at_start = os.getppid()
        self._call_timeout = call_timeout
        self._current_call = current_call
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def run(self) -> None:
        while True:
            now = time.time()
            self._page.heartbeat = now
            if os.getppid() != self._ppid_at_start or not _alive(self._parent_pid):
                # The collector died without stopping us: nobody reads what we
                # would write, and lingering would hold the plugin's files.
                die(ExitCode.LOST_PARENT, f"parent process {self._parent_pid or self._ppid_at_start} is gone")
            busy_since = self._page.busy_since
            if self._call_timeout is not None and busy_since and now - busy_since > self._call_timeout + CALL_TIMEOUT_GRACE:
                die(ExitCode.WRITER_CRASH, f"{self._current_call()} did not return within {self._call_timeout:g} s")
            if self._stop_event.wait(HEARTBEAT_INTERVAL):
                return


# --- the host ------------------------------------------------------------------

class StopFlag:
    """Set by SIGTERM/SIGINT; the handler only records (the loop acts on it)."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def install(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            self.requested = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


class WorkerHost:
    """The fetch → deliver → flush → commit loop over a loaded set of writers."""

    def __init__(self, config: HostConfig, writers: Writers, page: StatePage, client: FetchClient, stop: StopFlag) -> None:
        self.config = config
        self.writers = writers
        self.page = page
        self.client = client
        self.stop = stop


    def run(self) -> ExitCode:
        """Serve until stopped; raises :class:`HostExit` on a crash or a lost collector."""
        page = self.page
        while not self.stop.requested:
            committed = page.committed
            try:
                reply = self.client.fetch(committed, should_stop=self.stop)
            except LostCollector as exc:
                raise HostExit(ExitCode.LOST_COLLECTOR, str(exc)) from exc
            except FetchProtocolError as exc:
                raise HostExit(ExitCode.LOST_COLLECTOR, f"bad reply from the collector: {exc}") from exc
            if reply is None:
                break
            if reply.skipped:
                logger.warning("collector skipped %d entries after %d (quota or poison)", reply.skipped, committed)
            self._deliver_reply(reply.entries, reply.next_after, committed)
        page.state = HostState.STOPPING
        self.writers.close()
        return ExitCode.OK

    def _deliver_reply(self, entries: List[FetchedEntry], next_after: int, committed: int) -> None:
        page = self.page
        deliver = self.writers.deliver
        dirty = False
        last_commit = time.monotonic()
        uncommitted = 0
        summaries = 0  # the page's counters move at commits: two fewer page writes per entry
        for index, entry in enumerate(entries):
            if entry.position < committed:
                continue  # already delivered and committed: never deliver twice on purpose
            page.inflight = entry.position
            try:
                summaries += deliver(entry)
            except WriterCrash as exc:
                raise HostExit(ExitCode.WRITER_CRASH, f"{exc} (entry at position {entry.position})") from exc
            except RecordError as exc:
                # Not the writer's fault, and it would fail the same way forever.
                logger.error("skipping malformed entry at %d: %s", entry.position, exc)
            page.inflight = NO_INFLIGHT
            dirty = True
            uncommitted += 1
            if (
                self.stop.requested
                or uncommitted >= COMMIT_ENTRIES
                or time.monotonic() - last_commit >= COMMIT_INTERVAL
            ):
                # The next entry's start is a valid cursor: whatever lies between
                # (padding, entries set aside) is never delivered anyway.
                upto = entries[index + 1].position if index + 1 < len(entries) else next_after
                self._count(uncommitted, summaries)
                self._commit_or_crash(upto, dirty)
                dirty = False
                uncommitted = summaries = 0
                last_commit = time.monotonic()
                if self.stop.requested:
                    return
        self._count(uncommitted, summaries)
        self._commit_or_crash(next_after, dirty)

    def _count(self, delivered: int, summaries: int) -> None:
        if delivered:
            self.page.delivered += delivered
            self.page.summaries += summaries

    def _commit_or_crash(self, position: int, flush: bool) -> None:
        """Flush the writers (if they got anything), then move the cursor; never backwards."""
        if flush:
            try:
                self.writers.flush()
            except WriterCrash as exc:
                raise HostExit(ExitCode.WRITER_CRASH, str(exc)) from exc
        if position > self.page.committed:
            self.page.committed = position


def load_plugin(config: HostConfig, page: StatePage) -> Writers:
    """Import the one entry point and register its writers (raises :class:`HostExit`)."""
    from ..plugins.errors import PluginImportError, PluginRegistrationError
    from ..plugins.loader import load_writers
    from ..plugins.settings import RunOptions
    from .compat import install_mlagents_aliases

    try:
        run_options = RunOptions.from_dict(config.run_options)
    except (StatbusError, TypeError) as exc:
        raise HostExit(ExitCode.BAD_CONFIG, f"bad run options: {exc}") from exc
    install_mlagents_aliases()
    try:
        writers = load_writers(config.plugin_info, run_options)
    except PluginImportError as exc:
        raise HostExit(ExitCode.IMPORT_FAILURE, str(exc)) from exc
    except PluginRegistrationError as exc:
        raise HostExit(ExitCode.REGISTRATION_FAILURE, str(exc)) from exc
    except SystemExit as exc:
        # A plugin module calling sys.exit() at import or registration.
        raise HostExit(ExitCode.IMPORT_FAILURE, f"plugin {config.plugin!r} called sys.exit({exc.code!r})") from exc
    return Writers(writers, page)


def run_host(config: HostConfig) -> ExitCode:
    """Everything the process does; returns the exit code (errors already reported)."""
    stop = StopFlag()
    stop.install()
    try:
        page = StatePage(config.state_file, create=True)
    except (StatbusError, OSError) as exc:
        report_error(ExitCode.BAD_CONFIG, f"cannot open state page: {exc}")
        return ExitCode.BAD_CONFIG
    page.reset_for_host(os.getpid(), time.time())
    writers: Optional[Writers] = None
    heartbeat = Heartbeat(page, config.parent_pid, config.call_timeout, lambda: writers.current_call if writers else "")
    heartbeat.start()
    context = zmq.Context()
    try:
        writers = load_plugin(config, page)
        logger.info("plugin %s: %d writer(s), committed=%d", config.plugin, len(writers.writers), page.committed)
        with FetchClient(context, config.address, config.plugin, max_bytes=config.max_bytes) as client:
            page.state = HostState.READY
            code = WorkerHost(config, writers, page, client, stop).run()
        logger.info("plugin %s stopped at committed=%d", config.plugin, page.committed)
        return code
    except HostExit as exc:
        if exc.code == ExitCode.WRITER_CRASH:
            logger.error("writer crash", exc_info=exc.__cause__ or exc)
        report_error(exc.code, exc.message)
        return exc.code
    finally:
        heartbeat.stop()
        context.term()
        page.close()
