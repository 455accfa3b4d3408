"""The worker host: one plugin's writers in a process of their own, fed from the journal.

Started by the supervisor as ``python -m statbus.workers ...`` (see
``__main__.py`` for the arguments).  The host

1. opens its state page and starts a heartbeat thread (before importing the
   plugin: imports such as tensorboard take seconds, and a silent host would
   look hung),
2. loads exactly its one entry point and calls the registration function,
3. marks the page READY and loops: FETCH after ``committed`` → deliver the
   entries → ``flush()`` the writers → write ``committed`` → fetch again.

A writer call that fails on a full disk is retried in place until space is back
(:mod:`.disk_wait` says why here).  Any other raise ends the host with
:attr:`ExitCode.WRITER_CRASH`, leaving
``inflight`` at the entry being delivered so that the supervisor can tell which
record killed it.  Every abnormal end writes one ``statbus-worker-error:`` line
to stderr last, for the supervisor to show as the plugin's last error.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, Callable, List, Optional

import zmq

from ...plugins.errors import RecordError, StatbusError
from ..exits import ExitCode, HostExit, report_error
from ..fetch_protocol import EntryKind, FetchedEntry, FetchProtocolError
from ..statepage import NO_INFLIGHT, HostState, StatePage
from .disk_wait import DiskWait, StoppedWaiting
from .dispatch import WriterCrash, Writers
from .fetch_client import FetchClient, LostCollector
from .heartbeat import Heartbeat
from .config import HostConfig
from .loading import load_plugin
from .plugin_lock import acquire, lock_path

logger = logging.getLogger(__name__)

COMMIT_INTERVAL = 0.1
"""Within one long fetch reply, flush and commit at least this often (seconds)."""

COMMIT_ENTRIES = 32
"""... and at least every this many delivered entries.  A restart replays what
was not committed: with a time-only cadence, a fast plugin that crashes now and
then re-delivers a whole catch-up backlog (hundreds of summaries in 100 ms) on
every restart, crashes again before its first commit, and never gets past it."""


# --- the host ------------------------------------------------------------------

class StopFlag:
    """Set by SIGTERM/SIGINT; the handler only records (the loop acts on it).

    ``wake_fd`` becomes readable when a signal arrives (Python's wakeup fd), so a
    wait that polls it as well ends at once instead of waking now and then to look.
    """

    def __init__(self) -> None:
        self.requested = False
        self.wake_fd: Optional[int] = None

    def __call__(self) -> bool:
        return self.requested

    def install(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            self.requested = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self.wake_fd = read_end  # both ends live as long as the process


class WorkerHost:
    """The fetch → deliver → flush → commit loop over a loaded set of writers."""

    def __init__(self, config: HostConfig, writers: Writers, page: StatePage, client: FetchClient, stop: StopFlag,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.writers = writers
        self.page = page
        self.client = client
        self.stop = stop
        # Until the first entries are delivered, commit after every summary: a restarted host's
        # first reply is what its predecessor may have died on.  A plugin that dies at its n-th
        # summary of a life never gets past n summaries committed as one; one by one, it moves on.
        self._replaying = True


    def run(self) -> ExitCode:
        """Serve until stopped; raises :class:`HostExit` on a crash or a lost collector."""
        try:
            self._serve()
        except StoppedWaiting as exc:
            # Closing would only fail on the same full disk; what was not written
            # is past the committed cursor, so the next host delivers it again.
            logger.warning("%s; the next worker delivers again from committed=%d", exc, self.page.committed)
            self.page.state = HostState.STOPPING
            return ExitCode.OK
        self.page.state = HostState.STOPPING
        self.writers.close()
        return ExitCode.OK

    def _serve(self) -> None:
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
            if reply.entries:
                self._replaying = False

    def _deliver_reply(self, entries: List[FetchedEntry], next_after: int, committed: int) -> None:
        page = self.page
        deliver = self.writers.deliver
        dirty = False
        clock = self.clock
        last_commit = clock()
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
                or (self._replaying and entry.kind is EntryKind.SUMMARY)
                or uncommitted >= COMMIT_ENTRIES
                or clock() - last_commit >= COMMIT_INTERVAL
            ):
                # The next entry's start is a valid cursor: whatever lies between
                # (padding, entries set aside) is never delivered anyway.
                upto = entries[index + 1].position if index + 1 < len(entries) else next_after
                self._count(uncommitted, summaries)
                self._commit_or_crash(upto, dirty)
                dirty = False
                uncommitted = summaries = 0
                last_commit = clock()
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
    heartbeat = Heartbeat(page, config.parent_pid, config.call_timeout,
                          lambda: writers.current_call if writers else "", config.heartbeat_interval)
    heartbeat.start()
    context = zmq.Context()
    lock: Optional[int] = None
    try:
        # Before the plugin's writers exist: they read back what an earlier host wrote,
        # which is only right once that host can write no more (see .plugin_lock).
        try:
            lock = acquire(lock_path(config.state_file), config.plugin, stop, stop.wake_fd)
        except OSError as exc:
            raise HostExit(ExitCode.BAD_CONFIG, f"cannot take the plugin's lock: {exc}") from exc
        if lock is None:
            logger.info("plugin %s: stopped while waiting for an earlier worker host", config.plugin)
            return ExitCode.OK
        writers = load_plugin(config, page)
        logger.info("plugin %s: %d writer(s), committed=%d", config.plugin, len(writers.writers), page.committed)
        with FetchClient(context, config.address, config.plugin, max_bytes=config.max_bytes,
                         wake_fd=stop.wake_fd) as client:
            page.state = HostState.READY
            writers.disk_wait = DiskWait(page, stop, config.plugin)
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
        if lock is not None:
            os.close(lock)  # last: the writers are closed, the next host may read back
