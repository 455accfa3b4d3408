"""The collector: one event loop that takes trainer frames in, journals, aggregates, acks and serves.

One thread, one :class:`zmq.Poller`, three ROUTER sockets:

* ``data`` — trainer frames, one bounded batch at a time (:meth:`Collector._drain`, the
  delivery rule in :mod:`.intake`): decoded, judged, appended to the journal with the
  summaries they close, committed, *then* acked;
* ``work`` — worker fetches (:mod:`.fetch_server`);
* ``ctl``  — control requests (:mod:`.control`, protocol in :mod:`..control`).

A tick every ~100 ms syncs the journal per its fsync policy, answers parked
fetches, lets the supervisor watch its workers, and applies retention.  The tick
and every ack first make sure the run's folders are still the ones the collector
opened (:mod:`.lifecycle.run_folder`): a collector whose run folder was deleted,
moved or replaced stops at once, acks nothing more, and leaves its socket directory
to the collector the run's next trainer starts.  Signal
handlers only set flags; the loop acts on them (SIGTERM: graceful stop;
a second SIGTERM or SIGINT: stop at once, journal committed).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, FrozenSet, List, Optional

import zmq

from ...plugins import ConfigError, StatbusError
from ...plugins.records import pack_summary
from ...workers.exits import ExitCode
from ..control import ControlServer
from ..journal.retention import Retention
from ..journal.writer import EntryType, Journal, JournalReader, JournalWriteError
from ..layout import RunLayout
from ..security.curve import TransportSecurity, secure_bind
from ..wire import MAX_MEDIA_FRAME_BYTES, Refusal, encode_ack, encode_refusal
from .aggregator import Aggregator
from .beacons import Beacons
from .beacons import Beacons
from .control import answer_control
from .entry_records import read_entry_record
from .fetch_server import FetchServer
from .lifecycle.identity import RunIdentity, establish
from .idle import IdleWatch
from .intake import Decision, Intake, Verdict
from .options import CollectorOptions, SupervisorFactory, SupervisorHooks, SupervisorLike
from .recovery import encode_snapshot, replay_newest_segment
from .lifecycle.pidfile import AlreadyRunning, PidFile
from .lifecycle.ready import ready_path, remove_ready, write_ready
from .lifecycle.run_folder import FolderWatch
from .lifecycle.socket_dirs import claim, release, sweep_dead
from .spool_intake import SpoolIntake
from .status import RateMeter
from .write_stall import StallControl, WriteStall

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.1
QUIET_TICK_SECONDS = 1.0
"""The tick's period once nothing has happened for :data:`QUIET_AFTER` seconds and nothing waits on
a tick (no worker starting or restarting, no fsync due, no full disk): an idle collector then wakes
about twice a second in all, for its tick and for the workers' parked fetches."""
QUIET_AFTER = 1.0
DATA_RCVHWM = 10_000
DATA_MAXMSGSIZE = MAX_MEDIA_FRAME_BYTES + 4096
"""libzmq drops the connection of a peer whose message is bigger, before buffering it: an
oversized frame costs neither memory nor a decode (the slack lets frames just past the wire
limit through, to be rejected and counted as ``too_large``).  A frame holding one media value
may be up to 72 MiB (``wire.MAX_MEDIA_FRAME_BYTES``), so this is that, not the 8 MiB of others."""
FAST_STOP_WORKER_TIMEOUT = 2.0
CONTROL_LINGER_MS = 1000
"""How long closing the ``ctl`` socket waits to deliver replies still queued: the reply to
``stop`` is queued just before the loop returns, and a socket closed with linger 0 drops it
unless libzmq's I/O thread happened to write it first."""
MAX_FRAMES_PER_ITERATION = 1024
MAX_BYTES_PER_ITERATION = 32 << 20
"""Intake drains at most this much before it commits and acks: acks stay prompt under load."""
MAX_DRAIN_SECONDS = 0.05
"""...and for at most this long: a burst of big frames (each ~100 ms to decode and aggregate)
would otherwise keep worker fetches and control requests unanswered for seconds, and the
workers would take the collector for lost."""


class _Phase(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    DONE = "done"


class Collector:
    """One per run.  ``run()`` blocks until stopped and returns an :class:`ExitCode`."""

    def __init__(
        self,
        layout: RunLayout,
        options: CollectorOptions = CollectorOptions(),
        *,
        supervisor_factory: Optional[SupervisorFactory] = None,
        ready_callback: Optional[Callable[["Collector"], None]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.layout = layout
        self.options = options
        self._supervisor_factory = supervisor_factory
        self._ready_callback = ready_callback
        self.clock = clock
        self.data_address = options.bind or layout.data_address
        self.also_address = options.also_bind
        self.worker_address = layout.worker_address
        self.control_address = layout.control_address
        self.intake = Intake(clock)
        self.beacons = Beacons()
        self.beacons = Beacons()
        self.aggregator = Aggregator()
        self.journal = Journal(
            layout.journal_dir,
            segment_bytes=options.segment_bytes,
            fsync=options.fsync,
            fsync_interval=options.fsync_interval,
            clock=clock,
        )
        self.supervisor: Optional[SupervisorLike] = None
        self.fetch: Optional[FetchServer] = None
        """Serves worker fetches once the sockets are bound (in :meth:`run`)."""
        self.retention = Retention(self.journal, options.quota_bytes)
        self.rate = RateMeter(clock)
        self.spool = SpoolIntake(layout.spool_dir, clock)
        self.recovery: Dict[str, Any] = {}
        self.identity: Optional[RunIdentity] = None
        self._socket_dir: Optional[str] = None
        self.pidfile = PidFile(layout.pid_file)
        self._folders: Optional[FolderWatch] = None
        self.folder_lost: Optional[str] = None
        """Why this collector's run folder is no longer the one at its path (then it stops), or None."""
        self.started = clock()
        self.phase = _Phase.RUNNING
        self._drain_deadline = 0.0
        self._stop_graceful: Optional[bool] = None
        self._stop_timeout = options.stop_timeout
        self._sigterms = 0
        self.summaries = 0
        self._authenticators: List[Any] = []
        self._data_auth: Dict[zmq.Socket, Any] = {}
        """The CURVE authenticator of each data socket that has one."""
        self._idle = IdleWatch(options.idle_exit, options.owner_pid) if options.idle_exit is not None else None
        self._datas: List[zmq.Socket] = []
        """The trainer sockets: ``bind`` and, with ``also_bind``, a second one."""
        self._ctl: Optional[zmq.Socket] = None
        self.stalls = StallControl(
            self.journal, layout.journal_dir, clock,
            readable=lambda: self.fetch.on_committed(),
            rotate=self._rotate,
            send_acks=self._send_held_acks,
        )

    # --- public --------------------------------------------------------------------------

    def request_stop(self, graceful: bool = True, timeout: Optional[float] = None) -> None:
        """Ask the loop to stop (safe from a signal handler: it only sets flags)."""
        if timeout is not None:
            self._stop_timeout = timeout
        if not graceful or self._stop_graceful is None:
            self._stop_graceful = graceful

    def run(self) -> int:
        pidfile = self.pidfile
        try:
            pidfile.acquire()
        except AlreadyRunning as exc:
            logger.error("%s", exc)
            return ExitCode.ALREADY_RUNNING
        previous = self._install_signals()
        context = zmq.Context()
        sockets: List[zmq.Socket] = []
        try:
            return self._run(context, sockets)
        except ConfigError as exc:
            logger.error("statbus collector cannot start: %s", exc)
            return ExitCode.BAD_CONFIG
        except (StatbusError, zmq.ZMQError, OSError) as exc:
            logger.error("statbus collector failed: %s", exc)
            return ExitCode.ERROR
        except Exception:  # noqa: BLE001 — a bug: say where, and still close the journal cleanly
            logger.exception("statbus collector crashed")
            return ExitCode.ERROR
        finally:
            self._shutdown(context, sockets)
            self._restore_signals(previous)
            # Nothing is removed from a lost folder: a `shutil.rmtree` deleting it as we leave
            # would fail on a file gone under it (and a new folder's files are not ours).
            pidfile.release(unlink=self.folder_lost is None)

    # --- setup and teardown ----------------------------------------------------------------

    def _run(self, context: zmq.Context, sockets: List[zmq.Socket]) -> int:
        # Under the pidfile lock and before the journal opens: a forced start clears the journal too.
        self.identity = establish(self.layout, self.options.force, self.options.force_before)
        if self.data_address.startswith("tcp://"):
            self.intake.bindings.load(self.layout.peers_file)
        report = self.journal.open()
        self._folders = FolderWatch(self.layout)
        self.recovery["journal"] = dataclasses.asdict(report) if dataclasses.is_dataclass(report) else repr(report)
        replay = replay_newest_segment(self.journal, self.intake, self.aggregator)
        self.recovery["replay"] = replay.as_dict()
        self.journal.commit()
        self.retention.note_recovered(report.newest_base, replay.entries_per_segment + replay.summaries_reemitted)
        reader = JournalReader(self.layout.journal_dir)
        self._reader = reader
        # Under the pidfile lock: the directories of dead collectors go, this run's is claimed.
        sweep_dead(keep=self.layout.socket_dir)
        self._socket_dir = claim(self.layout)
        data = self._bind(
            context, sockets, self.data_address, self.options.security, rcvhwm=DATA_RCVHWM, maxmsgsize=DATA_MAXMSGSIZE
        )
        if self.data_address.startswith("tcp://"):
            # With port 0 or '*' only the bound endpoint tells trainers where to go.
            self.data_address = data.getsockopt_string(zmq.LAST_ENDPOINT) or self.data_address
        self._datas = [data]
        if self.also_address:
            also = self._bind(
                context, sockets, self.also_address, self.options.security, rcvhwm=DATA_RCVHWM, maxmsgsize=DATA_MAXMSGSIZE
            )
            self._datas.append(also)
            if self.also_address.startswith("tcp://"):
                self.also_address = also.getsockopt_string(zmq.LAST_ENDPOINT) or self.also_address
        work = self._bind(context, sockets, self.worker_address)
        ctl = self._bind(context, sockets, self.control_address)
        self._ctl = ctl
        self.fetch = FetchServer(
            work,
            reader,
            head=lambda: self.journal.committed_position,
            quota_position=self.retention.quota_position,
            skip=self._skip_positions,
            count_between=self.retention.count_between,
            clock=self.clock,
        )
        control = ControlServer(ctl, lambda request: answer_control(self, request))
        if self._supervisor_factory is not None:
            self.supervisor = self._supervisor_factory(
                SupervisorHooks(
                    self.worker_address,
                    self._dead_letter_record,
                    self.retention.count_between,
                    self.identity.run_options(self.layout),
                )
            )
            self.retention.cursors = self.supervisor
            self.supervisor.start(self.journal.end_position)
        self._announce_ready()
        self._loop(self._datas, work, ctl, control)
        return ExitCode.OK if self.folder_lost is None else ExitCode.RUN_FOLDER_GONE

    def _bind(
        self,
        context: zmq.Context,
        sockets: List[zmq.Socket],
        address: str,
        security: Optional[TransportSecurity] = None,
        rcvhwm: Optional[int] = None,
        maxmsgsize: Optional[int] = None,
    ) -> zmq.Socket:
        socket = context.socket(zmq.ROUTER)
        sockets.append(socket)
        socket.setsockopt(zmq.LINGER, 0)
        if rcvhwm is not None:
            socket.setsockopt(zmq.RCVHWM, rcvhwm)
        if maxmsgsize is not None:
            socket.setsockopt(zmq.MAXMSGSIZE, maxmsgsize)
        try:
            authenticator = secure_bind(socket, address, security)
        except zmq.ZMQError as exc:
            raise StatbusError(f"cannot bind {address}: {exc}") from None
        if authenticator is not None:
            self._authenticators.append(authenticator)
            self._data_auth[socket] = authenticator
        return socket

    def _announce_ready(self) -> None:
        info = {
            "pid": os.getpid(),
            "run_id": self.layout.run_id,
            "data": self.data_address,
            "also": self.also_address,
            "work": self.worker_address,
            "ctl": self.control_address,
            "head": self.journal.end_position,
        }
        write_ready(self.ready_file, info)
        logger.info(
            "statbus collector ready run=%s pid=%s data=%s head=%s",
            self.layout.run_id,
            info["pid"],
            self.data_address,
            info["head"],
        )
        if self._ready_callback is not None:
            self._ready_callback(self)

    @property
    def stall(self) -> Optional[WriteStall]:
        """The episode in which the journal cannot be written, if one is going on (see :mod:`.write_stall`)."""
        return self.stalls.current

    @property
    def ready_file(self) -> str:
        return ready_path(self.layout.statbus_dir)

    def _shutdown(self, context: zmq.Context, sockets: List[zmq.Socket]) -> None:
        if self.folder_lost is None:
            remove_ready(self.ready_file)
        if self._folders is not None:
            self._folders.close()
        if self.supervisor is not None:
            timeout = self._stop_timeout if self._stop_graceful is not False else FAST_STOP_WORKER_TIMEOUT
            try:
                self.supervisor.stop(min(timeout, 10.0))
            except Exception:  # noqa: BLE001 — the journal must still be closed
                logger.exception("stopping the workers failed")
        try:
            self.journal.close()  # commits and syncs what is buffered; a no-op if it never opened
        except JournalWriteError as exc:
            logger.error("journal: %s; %s bytes accepted but never written are dropped: they were not "
                         "acknowledged, their trainers still hold them", exc, exc.pending_bytes)
        except Exception:  # noqa: BLE001
            logger.exception("closing the journal failed")
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()
        for socket in sockets:
            # Acks and fetch replies may go (trainers resend, workers refetch); control replies
            # may not: `statbus collector stop` waits for its answer.  A reader that has gone is
            # no wait: the ROUTER drops what it cannot route.
            socket.close(linger=CONTROL_LINGER_MS if socket is self._ctl else 0)
        for authenticator in self._authenticators:
            authenticator.stop()
        context.term()
        if self._socket_dir is not None:
            release(self._socket_dir)  # before the pidfile goes: the next collector of the run may claim it then
        logger.info("statbus collector stopped (head %s)", self.journal.end_position)

    # --- the loop --------------------------------------------------------------------------

    def _loop(self, datas: List[zmq.Socket], work: zmq.Socket, ctl: zmq.Socket, control: ControlServer) -> None:
        poller = zmq.Poller()
        for data in datas:
            poller.register(data, zmq.POLLIN)
        poller.register(work, zmq.POLLIN)
        poller.register(ctl, zmq.POLLIN)
        intake_open = True
        next_tick = last_activity = self.clock()
        while True:
            timeout_ms = max(0, int((next_tick - self.clock()) * 1000))
            events = dict(poller.poll(timeout_ms))
            active = False
            if intake_open:
                for data in datas:
                    if data in events:
                        self._drain(data)
                        active = True
            if work in events and not self.folders_lost(quick=True):
                self.fetch.on_readable()
            if ctl in events:
                control.on_readable()
                active = True
            now = self.clock()
            if active:
                last_activity = now
                next_tick = min(next_tick, now + TICK_SECONDS)
            if now >= next_tick:
                quiet = now - last_activity >= QUIET_AFTER and self._nothing_due()
                next_tick = now + (QUIET_TICK_SECONDS if quiet else TICK_SECONDS)
                self._tick()
            if self._stop_graceful is False:
                logger.info("stopping at once")
                return
            if self._stop_graceful and self.phase is _Phase.RUNNING:
                # Stop intake first: trainers keep their unacked frames and hand
                # them to the next collector; then let live plugins catch up.
                logger.info("graceful stop: intake closed, plugins get %.1f s to catch up", self._stop_timeout)
                for data in datas:
                    poller.unregister(data)
                intake_open = False
                self.phase = _Phase.DRAINING
                self._drain_deadline = now + self._stop_timeout
            if self.phase is _Phase.DRAINING:
                head = self.journal.committed_position  # what waits for a full disk is no plugin's to catch up on
                caught_up = self.supervisor is None or self.supervisor.all_caught_up(head)
                if caught_up or now >= self._drain_deadline:
                    if not caught_up:
                        logger.warning("graceful stop: plugins did not catch up within %.1f s", self._stop_timeout)
                    self.fetch.flush_parked()
                    self.phase = _Phase.DONE
                    return

    # --- trainer intake: one bounded batch at a time -----------------------------------------

    def _drain(self, data: zmq.Socket) -> None:
        """Take up to a bounded batch of frames, journal them, commit, then ack."""
        if self.stalls.current is not None:
            self.stalls.drop_frames(data, MAX_FRAMES_PER_ITERATION)
            return
        acks: Dict[bytes, int] = {}
        appended = False
        budget = MAX_BYTES_PER_ITERATION
        journal, intake = self.journal, self.intake
        auth = self._data_auth.get(data)
        clock = self.clock
        deadline = clock() + MAX_DRAIN_SECONDS
        refusals: Dict[bytes, Refusal] = {}
        peer: Optional[str] = None
        backlog = True  # unless the socket runs dry: frames still wait when the budget ends the drain
        for _ in range(MAX_FRAMES_PER_ITERATION):
            try:
                if auth is None:
                    message = data.recv_multipart(zmq.NOBLOCK)
                else:
                    frames = data.recv_multipart(zmq.NOBLOCK, copy=False)
                    peer = self._admitted(frames, auth)
                    if peer is None:
                        if len(frames) == 2:
                            refusals[frames[0].bytes] = Refusal.REVOKED
                        continue
                    message = [frame.bytes for frame in frames]
            except zmq.Again:
                backlog = False
                break
            if len(message) != 2:
                if message:
                    intake.rejects["bad_message"] += 1
                continue
            routing_id, payload = message
            decision = intake.receive(payload, routing_id.hex(), peer)
            if decision.refusal is not None:
                refusals[routing_id] = decision.refusal
                continue
            try:
                appended = self._journal(decision, payload) or appended
            except JournalWriteError as exc:
                if decision.ack is not None:
                    acks[routing_id] = decision.ack
                self.stalls.failed(exc, self._tagged(data, acks))
                return
            if decision.ack is not None:
                acks[routing_id] = decision.ack
            budget -= len(payload)
            if budget <= 0 or clock() >= deadline or journal.write_error is not None:
                break
        if self.folders_lost(quick=True):
            return  # journaled into a deleted or replaced folder: unacknowledged, the trainers keep it
        if appended:
            try:
                journal.commit()
            except JournalWriteError as exc:
                self.stalls.failed(exc, self._tagged(data, acks))
                return
            self.fetch.on_committed()
        # Acks first: what a connection got journaled before its refusal is acknowledged still.
        replies = [(routing_id, encode_ack(seq)) for routing_id, seq in acks.items()]
        replies += [(routing_id, encode_refusal(reason)) for routing_id, reason in refusals.items()]
        for routing_id, reply in replies:
            try:
                data.send_multipart([routing_id, reply], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the trainer is gone or not reading: it re-sends and hears again
        self.beacons.after_drain(self._datas, data, acks, backlog, clock())

    def _journal(self, decision: Decision, payload: bytes) -> bool:
        """Journal what the intake accepted (with the summaries it closes) or consumed; True if anything
        was appended.  A rotation's write error is raised (what was appended waits for the disk)."""
        journal = self.journal
        if decision.verdict is Verdict.ACCEPT:
            self.retention.note_appended(journal.append(EntryType.FRAME, payload))
            for summary in self.aggregator.apply(decision.frame.records, decision.frame.sender):
                self.retention.note_appended(journal.append(EntryType.SUMMARY, pack_summary(summary)))
                self.summaries += 1
            if journal.needs_rotation():
                # Mid-drain is fine: rotate() commits first, and the snapshot it
                # writes is the state after every entry appended so far.
                self._rotate()
            return True
        if decision.substitute is not None:
            self.retention.note_appended(journal.append(EntryType.FRAME, decision.substitute))
            return True
        return False

    def _take_spool(self) -> None:
        """Frames exited trainers left in the spool, through the same intake (see :mod:`.spool_intake`)."""
        def take(payload: bytes) -> Verdict:
            decision = self.intake.receive(payload, "spool")
            self._journal(decision, payload)
            return decision.verdict

        def commit() -> None:
            self.journal.commit()
            self.journal.sync()
            self.fetch.on_committed()

        try:
            self.spool.take(take, commit)
        except JournalWriteError as exc:
            self.stalls.failed(exc, {})  # the spool file stays; taken again once the disk works

    def _admitted(self, frames: List[zmq.Frame], auth: Any) -> Optional[str]:
        """The message's CURVE peer if it is still on the allow-list, else None.

        ZAP checks a key once per connection; a key revoked since stays connected,
        so every frame's ``User-Id`` (the key's allow-list name) is checked again
        here (the allow-list is re-read at most once a second).  A revoked peer is
        told so (:data:`Refusal.REVOKED`), which stops its re-sending.
        """
        user = frames[-1].get("User-Id") if frames else ""
        if not auth.is_allowed(user):
            self.intake.count_refusal(Refusal.REVOKED, repr(user), "its key is no longer on the allow-list")
            return None
        return user

    def _tagged(self, data: zmq.Socket, acks: Dict[bytes, int]) -> Dict[bytes, int]:
        """``acks`` with each routing id prefixed by its socket's index: a stall holds acks of
        every data socket, and routing ids are only unique within one socket."""
        index = bytes([self._datas.index(data)])
        return {index + routing_id: seq for routing_id, seq in acks.items()}

    def _send_held_acks(self, acks: Dict[bytes, int]) -> None:
        """The acks a stall held back (keys from :meth:`_tagged`), once what they acknowledge is written."""
        for key, seq in acks.items():
            try:
                self._datas[key[0]].send_multipart([key[1:], encode_ack(seq)], zmq.NOBLOCK)
            except (zmq.ZMQError, IndexError):
                pass  # the trainer is gone or not reading (or no socket yet): it re-sends and hears again

    def folders_lost(self, quick: bool = False) -> bool:
        """True once the run's folders are found deleted, moved or replaced; the first time, stop at once.

        Asked (``quick``) before every ack and every answer to a worker's fetch, and at every
        tick: what is journaled into a folder that is no longer the run's must not be
        acknowledged (its trainers keep it for the next collector), and the workers must
        stop before they write into the new folder.
        """
        if self.folder_lost is not None:
            return True
        if self._folders is None:
            return False
        reason = self._folders.lost(quick)
        if reason is None:
            return False
        self.folder_lost = reason
        logger.error(
            "statbus collector of run %s: %s. Stopping at once: no frame is taken or acknowledged any "
            "more (trainers keep what this collector did not acknowledge), the workers stop, and the "
            "socket directory is released, so that the run's next trainer starts a new collector on the "
            "folder now at %s", self.layout.run_id, reason, self.layout.run_dir,
        )
        self.request_stop(graceful=False)
        return True

    def _rotate(self) -> None:
        if self.folders_lost():
            return  # a new segment would be made in the folder now at the path: another run's
        self.retention.note_appended(self.journal.rotate(encode_snapshot(self.intake, self.aggregator)), anchor=True)

    def _nothing_due(self) -> bool:
        """True when no tick soon would find anything to do: the loop may then tick slower."""
        return (
            self.phase is _Phase.RUNNING
            and self._stop_graceful is None
            and self.stall is None
            and not self.journal.sync_due
            and (self.supervisor is None or self.supervisor.settled())
        )

    def _tick(self) -> None:
        if self.folders_lost():
            return  # before retention: it deletes segments by their names, now another run's
        if self.pidfile.restore():
            logger.warning("the pidfile %s was removed under this collector; written again", self.layout.pid_file)
        try:
            self.journal.tick()
        except JournalWriteError as exc:
            self.stalls.failed(exc, {})
        self.stalls.tick()
        self.fetch.tick()
        head = self.journal.end_position
        if self.supervisor is not None:
            try:
                self.supervisor.tick(head)
            except Exception:  # noqa: BLE001 — a supervisor bug must not stop intake
                logger.exception("supervisor tick failed")
        try:
            self.retention.tick(self.clock())
        except (StatbusError, KeyError, OSError):
            logger.exception("retention pass failed; trying again at the next")
        running = self.phase is _Phase.RUNNING and self._stop_graceful is None
        if running and self.stall is None and self.spool.due(self.clock()):
            self._take_spool()
        self.rate.sample(self.intake.accepted_values, self.intake.accepted_frames)
        if self._idle is not None and running and self.stall is None and not self.spool.waiting:
            caught_up = self.supervisor is None or self.supervisor.all_caught_up(head)
            if self._idle.expired(self.clock(), self.intake.senders, self.intake.accepted_frames, caught_up):
                logger.info(
                    "on-demand collector: every trainer is gone and every plugin caught up; "
                    "idle for %.0f s, stopping", self._idle.idle_seconds,
                )
                self.request_stop(graceful=True)

    # --- stop signals: the handlers only set flags; the loop acts on them ---------------------

    def _install_signals(self) -> Dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum, handler in ((signal.SIGTERM, self._on_sigterm), (signal.SIGINT, self._on_sigint)):
            previous[signum] = signal.signal(signum, handler)
        return previous

    @staticmethod
    def _restore_signals(previous: Dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._sigterms += 1
        self.request_stop(graceful=self._sigterms == 1)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.request_stop(graceful=False)

    # --- hooks for the fetch server and the supervisor -----------------------------------------

    def _skip_positions(self, plugin: str) -> FrozenSet[int]:
        if self.supervisor is None:
            return frozenset()
        try:
            return self.supervisor.skip_positions(plugin)
        except (StatbusError, KeyError):
            return frozenset()  # a fetch from a plugin the supervisor does not run (a tool, a test)

    def _dead_letter_record(self, plugin: str, position: int) -> Optional[Dict[str, Any]]:
        entry = self._reader.entry_at(position)
        if entry is None:
            return None
        return read_entry_record(entry.payload, entry.type)
