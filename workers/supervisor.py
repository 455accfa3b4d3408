"""The supervisor: one worker host process per enabled plugin, watched and restarted.

It lives in the collector and is driven from the collector's single-threaded
loop: :meth:`Supervisor.tick` does everything (reap exits, read state pages,
detect hangs, sample RSS/CPU, start due restarts) without ever sleeping, so a
stop escalates TERM → grace → KILL over several ticks.  Only :meth:`stop`, at
shutdown, waits (bounded).

Decisions (design §5, issue 4):

* **Who decides what.**  Which state moves are legal: :mod:`.states`.  When to
  restart, when to give up, what is poison: :mod:`.policy` (pure).  How a host
  process is spawned, signalled (its whole process group), reaped, sampled and
  explained: :mod:`.processes`.  This module watches the hosts and reports
  facts to :mod:`.states` and :mod:`.policy`.
* **Hung**: not ready ``start_timeout`` s after spawn; once ready, no
  heartbeat for ``heartbeat_timeout`` s or one writer call busy for more than
  ``call_timeout`` s.
  Ages are measured on the supervisor's own monotonic clock, from the moment a
  page field was seen to change (a wall-clock jump cannot make hosts "hang").
  A hung host is aborted (TERM, grace, KILL); a writer call that hangs counts
  as a strike against the record in flight, like a crash does.
* **Memory cap**: RSS of the host and all its descendants; over the cap the
  host is aborted and restarted (not a poison strike: growth is rarely one
  record's fault).
* **Fatal exits** (BAD_CONFIG, IMPORT_FAILURE, REGISTRATION_FAILURE, or an
  interpreter that cannot be started): FAILED at once — restarting cannot help;
  an explicit :meth:`restart` tries again.
* **Initial cursor**: a plugin without a state page starts at the journal
  head, unless its ``backfill`` setting asks for the whole journal (position
  0).  At :meth:`start` of a fresh run the head is 0 anyway.
* **Retention**: :meth:`consumers` lists every *enabled* plugin, FAILED ones
  included, so a FAILED plugin keeps its backlog (within its journal quota)
  for when it is fixed and restarted.  A disabled plugin holds nothing.
* **Poison**: a record found poison is appended to
  ``dead-letter/<plugin>.jsonl`` and added to that plugin's skip set; skip
  sets are read back from those files when the supervisor is created, so they
  survive a collector restart.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import json
import logging
import os
import random
import signal
import subprocess
import time
from typing import Any, Callable, Deque, Dict, FrozenSet, List, Mapping, Optional, Sequence, Set, Tuple

from ..plugins.discovery import PluginInfo
from ..plugins.errors import StatbusError
from ..plugins.settings import RunOptions
from .config import Config, PluginSettings
from .policy import Action, PolicyConfig, RestartPolicy
from .states import StateMachine, WorkerEvent, WorkerState
from .statepage import NO_INFLIGHT, HostState, StatePage, StatePageError, read_state

# Process handling lives in .processes; these names stay importable from here
# (the supervisor's public API before the split).
from .processes import (
    DEFAULT_GRACE,
    EXTERNAL_EXITS,
    FATAL_EXITS,
    LAST_OUTPUT_CHARS,
    LOG_TAIL_BYTES,
    NOT_A_RECORD_FAULT,
    HostProcess,
    ResourceSampler,
    Spawn,
    describe_exit,
    host_argv,
    last_error_line,
    read_log_tail,
    spawn_host,
)

__all__ = [
    "DEFAULT_GRACE", "DISABLED", "EXTERNAL_EXITS", "FATAL_EXITS", "LAST_OUTPUT_CHARS", "LOG_TAIL_BYTES",
    "NOT_A_RECORD_FAULT", "ResourceSampler", "Supervisor", "SupervisorError", "WorkerPaths",
    "describe_exit", "last_error_line", "read_dead_letter_positions", "read_log_tail",
]

logger = logging.getLogger(__name__)

HEAD_SAMPLE_INTERVAL = 0.5
"""Seconds between two remembered journal heads (for lag in seconds)."""

DISABLED = "DISABLED"
"""What :meth:`Supervisor.status` shows as the state of a disabled plugin."""

DeadLetterSource = Callable[[str, int], Optional[Mapping[str, Any]]]


class SupervisorError(StatbusError):
    """A control request the supervisor cannot carry out (unknown or disabled plugin)."""


@dataclasses.dataclass(frozen=True)
class WorkerPaths:
    """Where the supervisor keeps a run's per-plugin files (docs/internals.md, run directory)."""

    statbus_dir: str

    def state_file(self, plugin: str) -> str:
        return os.path.join(self.statbus_dir, "consumers", f"{plugin}.state")

    def log_file(self, plugin: str) -> str:
        return os.path.join(self.statbus_dir, "logs", f"{plugin}.log")

    def dead_letter_file(self, plugin: str) -> str:
        return os.path.join(self.statbus_dir, "dead-letter", f"{plugin}.jsonl")


class _Worker:
    """Everything the supervisor knows about one plugin (mutable, private)."""

    def __init__(self, info: PluginInfo, settings: PluginSettings, policy: RestartPolicy) -> None:
        self.info = info
        self.settings = settings
        self.enabled = settings.enabled
        self.machine = StateMachine(info.name)
        self.policy = policy
        self.page: Optional[StatePage] = None
        self.host: Optional[HostProcess] = None
        self.spawned_at = 0.0
        self.spawns = 0
        self.kill_at: Optional[float] = None
        self.killed = False
        # Liveness is judged on our own monotonic clock: when did the page's
        # heartbeat / busy_since last change (robust to wall-clock jumps, and
        # testable on an injected clock).
        self.heartbeat_seen = (0.0, 0.0)
        self.busy_seen = (0.0, 0.0)
        self.abort_reason = ""
        self.abort_inflight: Optional[int] = None
        self.restart_at: Optional[float] = None
        self.restart_after_stop = False
        self.last_error: Optional[str] = None
        self.last_exit: Optional[int] = None
        self.skip: Set[int] = set()
        self.skip_frozen: FrozenSet[int] = frozenset()

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def state(self) -> WorkerState:
        return self.machine.state


def read_dead_letter_positions(path: str) -> Set[int]:
    positions: Set[int] = set()
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    positions.add(int(json.loads(line)["position"]))
                except (ValueError, KeyError, TypeError):
                    logger.warning("ignoring a malformed line in %s", path)
    except FileNotFoundError:
        pass
    return positions


class Supervisor:
    """Runs one worker host per enabled plugin; see the module docstring for the rules."""

    def __init__(
        self,
        statbus_dir: str,
        plugins: Sequence[PluginInfo],
        settings: Config,
        run_options: RunOptions,
        worker_address: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: Optional[random.Random] = None,
        spawn: Spawn = subprocess.Popen,
        on_dead_letter: Optional[DeadLetterSource] = None,
        policy: PolicyConfig = PolicyConfig(),
        grace: float = DEFAULT_GRACE,
        sample_interval: float = 1.0,
        env: Optional[Mapping[str, str]] = None,
        log_level: Optional[str] = None,
        count_entries: Optional[Callable[[int, int], Optional[int]]] = None,
    ) -> None:
        self.paths = WorkerPaths(statbus_dir)
        self.config = settings
        self.run_options = run_options
        self.worker_address = worker_address
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng if rng is not None else random.Random()
        self._spawn = spawn
        self._on_dead_letter = on_dead_letter
        self._grace = grace
        self._sample_interval = sample_interval
        self._env = env
        self._log_level = log_level
        self._count_entries = count_entries
        self._head = 0
        self._head_samples: Deque[Tuple[float, int]] = collections.deque(maxlen=4096)
        self._stopping = False
        self._workers: Dict[str, _Worker] = {}
        for info in plugins:
            if info.name in self._workers:
                # State pages and logs are named by plugin: two plugins of one name
                # cannot both run.  Discovery lists statbus's own group first.
                logger.warning(
                    "plugin %s of group %s ignored: %s of group %s has the same name",
                    info.name, info.group, info.name, self._workers[info.name].info.group,
                )
                continue
            plugin_settings = settings.for_plugin(info.name)
            plugin_policy = dataclasses.replace(
                policy, max_restarts=plugin_settings.max_restarts, window=plugin_settings.restart_window
            )
            worker = _Worker(info, plugin_settings, RestartPolicy(plugin_policy, clock=clock, rng=self._rng))
            worker.skip = read_dead_letter_positions(self.paths.dead_letter_file(info.name))
            worker.skip_frozen = frozenset(worker.skip)
            self._workers[info.name] = worker

    # --- the collector's API ---------------------------------------------------

    def start(self, head_position: int = 0) -> None:
        """Spawn every enabled plugin's host; ``head_position`` is the journal head now."""
        self._head = head_position
        for worker in self._workers.values():
            if worker.enabled and worker.state is WorkerState.STOPPED:
                self._spawn_worker(worker)

    def tick(self, head_position: int) -> None:
        """One round of watching; never blocks.  Call every ~50–250 ms."""
        now = self._clock()
        self._note_head(now, head_position)
        for worker in self._workers.values():
            try:
                self._tick_worker(worker, now)
            except Exception:  # a bug around one plugin must not leave the others unwatched
                logger.exception("supervising plugin %s failed", worker.name)

    def names(self) -> List[str]:
        return list(self._workers)

    def committed(self, plugin: str) -> int:
        """The plugin's durable cursor (0 when it has no state page yet)."""
        worker = self._get(plugin)
        if worker.page is not None and not worker.page.closed:
            return worker.page.committed
        snapshot = read_state(self.paths.state_file(plugin))
        return snapshot.committed if snapshot is not None else 0

    def skip_positions(self, plugin: str) -> FrozenSet[int]:
        """Journal positions set aside as poison for this plugin (never delivered to it)."""
        return self._get(plugin).skip_frozen

    def consumers(self) -> List[str]:
        """Plugins whose cursors hold journal retention: every enabled one, FAILED included."""
        return [worker.name for worker in self._workers.values() if worker.enabled]

    def all_caught_up(self, head_position: int) -> bool:
        """Every enabled plugin that is not FAILED has committed up to ``head_position``."""
        return all(
            self.committed(worker.name) >= head_position
            for worker in self._workers.values()
            if worker.enabled and worker.state is not WorkerState.FAILED
        )

    def status(self) -> List[Dict[str, Any]]:
        return [self._status_of(worker) for worker in self._workers.values()]

    def restart(self, name: str) -> None:
        """Restart now with a clean slate (budget, backoff, strikes); also leaves FAILED."""
        worker = self._get(name)
        if self._stopping:
            raise SupervisorError("the supervisor is shutting down")
        if not worker.enabled:
            raise SupervisorError(f"plugin {name!r} is disabled; enable it instead")
        worker.policy.reset()
        worker.restart_at = None
        state = worker.state
        if state in (WorkerState.STARTING, WorkerState.READY):
            worker.restart_after_stop = True
            self._stop_worker(worker)
        elif state in (WorkerState.STOPPING, WorkerState.ABORTING):
            worker.restart_after_stop = True
            if state is WorkerState.ABORTING:
                worker.machine.fire(WorkerEvent.STOP)
        elif state is WorkerState.EXITED:
            worker.machine.fire(WorkerEvent.STOP)
            self._spawn_worker(worker)
        else:  # STOPPED, BACKOFF, FAILED
            self._spawn_worker(worker)

    def enable(self, name: str) -> None:
        worker = self._get(name)
        worker.enabled = True
        if worker.state is WorkerState.STOPPING:
            worker.restart_after_stop = True  # disabled a moment ago and still stopping
        elif worker.state is WorkerState.STOPPED and not self._stopping:
            worker.policy.reset()
            self._spawn_worker(worker)

    def disable(self, name: str) -> None:
        worker = self._get(name)
        worker.enabled = False
        worker.restart_after_stop = False
        worker.restart_at = None
        state = worker.state
        if state in (WorkerState.STARTING, WorkerState.READY, WorkerState.ABORTING):
            self._stop_worker(worker)
        elif state in (WorkerState.EXITED, WorkerState.BACKOFF, WorkerState.FAILED):
            worker.machine.fire(WorkerEvent.STOP)

    def stop(self, timeout: float = 5.0) -> None:
        """TERM every host, wait up to a grace, KILL the rest (whole groups), reap.  Bounded."""
        self._stopping = True
        deadline = time.monotonic() + timeout
        grace_end = time.monotonic() + min(self._grace, timeout / 2)
        for worker in self._workers.values():
            worker.restart_after_stop = False
            if worker.state in (WorkerState.STARTING, WorkerState.READY, WorkerState.ABORTING):
                self._stop_worker(worker)
            elif worker.state in (WorkerState.EXITED, WorkerState.BACKOFF):
                worker.machine.fire(WorkerEvent.STOP)
        killed = False
        while True:
            running = [w for w in self._workers.values() if w.host is not None]
            for worker in running:
                self._reap(worker)
            running = [w for w in running if w.host is not None]
            if not running:
                break
            now = time.monotonic()
            if not killed and now >= grace_end:
                for worker in running:
                    logger.warning("plugin %s did not stop within the grace period; killing it", worker.name)
                    self._signal_group(worker, signal.SIGKILL)
                killed = True
            if now >= deadline:
                logger.error("plugins %s could not be reaped in time", [w.name for w in running])
                break
            time.sleep(0.01)
        for worker in self._workers.values():
            if worker.host is None and worker.page is not None:
                worker.page.close()
                worker.page = None

    # --- one plugin --------------------------------------------------------------

    def _get(self, name: str) -> _Worker:
        try:
            return self._workers[name]
        except KeyError:
            raise SupervisorError(f"no plugin named {name!r}; known: {', '.join(self._workers) or 'none'}") from None

    def _tick_worker(self, worker: _Worker, now: float) -> None:
        state = worker.state
        if state.has_process:
            if self._reap(worker):
                return
            if state in (WorkerState.STARTING, WorkerState.READY):
                self._watch(worker, now)
            elif worker.kill_at is not None and not worker.killed and now >= worker.kill_at:
                logger.warning("plugin %s still running %.1f s after TERM; killing its group", worker.name, self._grace)
                self._signal_group(worker, signal.SIGKILL)
                worker.killed = True
        elif state is WorkerState.BACKOFF and not self._stopping:
            if worker.restart_at is not None and now >= worker.restart_at:
                self._spawn_worker(worker)

    def _open_page(self, worker: _Worker) -> StatePage:
        if worker.page is None or worker.page.closed:
            initial = 0 if worker.settings.backfill else self._head
            worker.page = StatePage(self.paths.state_file(worker.name), create=True, initial_committed=initial)
        return worker.page

    def _spawn_worker(self, worker: _Worker) -> None:
        try:
            page = self._open_page(worker)
        except (StatePageError, OSError) as exc:
            self._fail_unstarted(worker, f"state page unusable: {exc}")
            return
        # Fields of the previous host must not be mistaken for the new one's.
        page.inflight = NO_INFLIGHT
        page.busy_since = 0.0
        page.pid = 0
        page.state = HostState.STARTING
        argv = self._argv(worker)
        try:
            host = spawn_host(
                argv, self.paths.log_file(worker.name),
                plugin=worker.name, spawn=self._spawn, env=self._env, wall_clock=self._wall_clock,
            )
        except OSError as exc:
            self._fail_unstarted(worker, f"cannot start {argv[0]}: {exc}")
            return
        worker.machine.fire(WorkerEvent.START)
        worker.host = host
        worker.spawns += 1
        worker.spawned_at = self._clock()
        worker.kill_at, worker.killed, worker.restart_at = None, False, None
        worker.heartbeat_seen = worker.busy_seen = (float("nan"), worker.spawned_at)
        worker.policy.started(page.committed)
        logger.info("plugin %s: started worker host pid %d from position %d", worker.name, host.pid, page.committed)

    def _argv(self, worker: _Worker) -> List[str]:
        info, settings = worker.info, worker.settings
        return host_argv(
            settings.python,
            plugin=info.name,
            group=info.group,
            target=info.target,
            address=self.worker_address,
            state_file=self.paths.state_file(info.name),
            run_options=self.run_options.with_plugin_options(settings.options).as_dict(),
            call_timeout=settings.call_timeout,
            log_level=self._log_level,
        )

    def _fail_unstarted(self, worker: _Worker, reason: str) -> None:
        """Could not even spawn: a configuration problem, so FAILED at once."""
        logger.error("plugin %s: %s", worker.name, reason)
        worker.last_error = reason
        if worker.state is WorkerState.EXITED:
            worker.machine.fire(WorkerEvent.GIVE_UP)
        elif worker.state is not WorkerState.FAILED:
            # STOPPED/BACKOFF: go through START and EXIT so the table stays the only path.
            worker.machine.fire(WorkerEvent.START)
            worker.machine.fire(WorkerEvent.EXIT)
            worker.machine.fire(WorkerEvent.GIVE_UP)

    def _signal_group(self, worker: _Worker, sig: signal.Signals) -> None:
        if worker.host is not None:
            worker.host.signal_group(sig)

    def _reap(self, worker: _Worker) -> bool:
        """Handle the host's exit if it ended; True when it did."""
        host = worker.host
        if host is None:
            return False
        returncode = host.reap()
        if returncode is None:
            return False
        self._exited(worker, returncode)
        return True

    def _watch(self, worker: _Worker, now: float) -> None:
        page, host = worker.page, worker.host
        assert page is not None and host is not None
        settings = worker.settings
        # The page's pid was zeroed before the spawn: non-zero means the new host
        # has taken the page over (it may be a child of a wrapper interpreter,
        # so do not insist on proc.pid).
        if worker.state is WorkerState.STARTING:
            if page.pid != 0 and page.state == HostState.READY:
                worker.machine.fire(WorkerEvent.READY)
                logger.info("plugin %s ready (pid %d)", worker.name, host.pid)
            elif now - worker.spawned_at > settings.start_timeout:
                self._abort(worker, f"hung: not ready {settings.start_timeout:g} s after start", None, now)
                return
        if worker.state is WorkerState.READY:
            # Heartbeats are judged from READY on only: while a plugin imports,
            # a C extension may hold the GIL for seconds; start_timeout covers that.
            silence = self._unchanged_for(worker, "heartbeat_seen", page.heartbeat, now)
            if silence > settings.heartbeat_timeout:
                self._abort(worker, f"hung: no heartbeat for {silence:.1f} s", page.inflight, now)
                return
            busy_since = page.busy_since
            busy_for = self._unchanged_for(worker, "busy_seen", busy_since, now)
            if busy_since > 0 and busy_for > settings.call_timeout:
                inflight = page.inflight
                self._abort(
                    worker,
                    f"hung: a writer call took over {settings.call_timeout:g} s (entry at position {inflight})",
                    inflight,
                    now,
                )
                return
            worker.policy.progressed(page.committed)
        sampler = host.resources
        if sampler.due(now, self._sample_interval):
            sampler.sample(now, self._sample_interval)
            if sampler.rss_mb > settings.memory_cap_mb:
                reason = f"memory cap: RSS {sampler.rss_mb:.0f} MB over {settings.memory_cap_mb:g} MB"
                self._abort(worker, reason, None, now)

    @staticmethod
    def _unchanged_for(worker: _Worker, attribute: str, value: float, now: float) -> float:
        """Seconds (our clock) since the page field behind ``attribute`` last changed."""
        seen_value, seen_at = getattr(worker, attribute)
        if value != seen_value:
            setattr(worker, attribute, (value, now))
            return 0.0
        return now - seen_at

    def _abort(self, worker: _Worker, reason: str, inflight: Optional[int], now: float) -> None:
        logger.warning("plugin %s: %s; stopping it", worker.name, reason)
        worker.machine.fire(WorkerEvent.ABORT)
        worker.abort_reason = worker.last_error = reason
        worker.abort_inflight = inflight if inflight is not None and inflight >= 0 else None
        self._terminate(worker, now)

    def _stop_worker(self, worker: _Worker) -> None:
        already_signalled = worker.state is WorkerState.ABORTING
        worker.machine.fire(WorkerEvent.STOP)
        if not already_signalled:
            self._terminate(worker, self._clock())

    def _terminate(self, worker: _Worker, now: float) -> None:
        self._signal_group(worker, signal.SIGTERM)
        worker.kill_at = now + self._grace
        worker.killed = False

    def _exited(self, worker: _Worker, returncode: int) -> None:
        page = worker.page
        inflight = page.inflight if page is not None else NO_INFLIGHT
        committed = page.committed if page is not None else 0
        host = worker.host
        pid = host.pid if host is not None else 0
        worker.host, worker.kill_at = None, None
        worker.last_exit = returncode
        described = host.describe_exit(returncode) if host is not None else describe_exit(returncode, None)
        state = worker.state
        if state is WorkerState.STOPPING:
            worker.machine.fire(WorkerEvent.EXIT)
            logger.info("plugin %s stopped (pid %d, %s)", worker.name, pid, described)
            if worker.restart_after_stop and worker.enabled and not self._stopping:
                worker.restart_after_stop = False
                self._spawn_worker(worker)
            return
        external = False
        if state is WorkerState.ABORTING:
            reason, strike, fatal = worker.abort_reason, worker.abort_inflight, False
        else:
            fatal = returncode in FATAL_EXITS
            external = returncode in EXTERNAL_EXITS
            reason = described
            strike = None if returncode in NOT_A_RECORD_FAULT else inflight
        worker.machine.fire(WorkerEvent.EXIT)
        worker.last_error = reason
        verdict = worker.policy.failed(
            reason=reason, committed=committed, inflight=strike, fatal=fatal, external=external
        )
        if verdict.poison is not None:
            self._dead_letter(worker, verdict.poison, reason)
        if self._stopping:
            worker.machine.fire(WorkerEvent.STOP)
        elif verdict.action is Action.FAIL:
            worker.machine.fire(WorkerEvent.GIVE_UP)
            worker.last_error = verdict.reason
            logger.error("plugin %s FAILED: %s", worker.name, verdict.reason)
        else:
            worker.machine.fire(WorkerEvent.RETRY)
            worker.restart_at = self._clock() + verdict.delay
            logger.warning("plugin %s exited (pid %d): %s; restart in %.2f s", worker.name, pid, reason, verdict.delay)

    def _dead_letter(self, worker: _Worker, position: int, reason: str) -> None:
        record: Optional[Mapping[str, Any]] = None
        if self._on_dead_letter is not None:
            try:
                record = self._on_dead_letter(worker.name, position)
            except Exception:  # the collector's lookup failing must not stop the set-aside
                logger.exception("plugin %s: could not read poison record at %d", worker.name, position)
        line = {"plugin": worker.name, "position": position, "record": record, "error": reason, "time": self._wall_clock()}
        path = self.paths.dead_letter_file(worker.name)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line, default=repr) + "\n")
        except OSError:
            logger.exception("plugin %s: cannot write dead-letter file %s", worker.name, path)
        worker.skip.add(position)
        worker.skip_frozen = frozenset(worker.skip)
        logger.error("plugin %s: record at %d killed it %d times; set aside in %s",
                     worker.name, position, worker.policy.config.poison_strikes, path)

    # --- reporting -----------------------------------------------------------------

    def _note_head(self, now: float, head: int) -> None:
        self._head = head
        # One sample per HEAD_SAMPLE_INTERVAL at most: the bounded history then
        # spans half an hour of lag, whatever the tick rate.
        last = self._head_samples[-1] if self._head_samples else None
        if last is None or (last[1] != head and now - last[0] >= HEAD_SAMPLE_INTERVAL):
            self._head_samples.append((now, head))

    def _lag_seconds(self, committed: int, now: float) -> float:
        """How long ago the oldest entry the plugin has not committed was appended (approx.)."""
        if committed >= self._head or not self._head_samples:
            return 0.0
        heads = [head for _, head in self._head_samples]
        index = bisect.bisect_right(heads, committed)
        index = min(index, len(heads) - 1)
        return max(0.0, now - self._head_samples[index][0])

    def _lag_records(self, committed: int) -> Optional[int]:
        """Entries behind the head: exact 0 when caught up, else counted by the collector if it can."""
        if committed >= self._head:
            return 0
        if self._count_entries is None:
            return None
        try:
            return self._count_entries(committed, self._head)
        except Exception:  # status must not fail because a count could not be made
            logger.debug("counting entries from %d to %d failed", committed, self._head, exc_info=True)
            return None

    def _status_of(self, worker: _Worker) -> Dict[str, Any]:
        now = self._clock()
        page = worker.page if worker.page is not None and not worker.page.closed else None
        committed = page.committed if page is not None else self.committed(worker.name)
        sampler = worker.host.resources if worker.host is not None else None
        return {
            "name": worker.name,
            "group": worker.info.group,
            "target": worker.info.target,
            "enabled": worker.enabled,
            # A disabled plugin is shown as such (the state machine only knows STOPPED).
            "state": DISABLED if not worker.enabled and worker.state is WorkerState.STOPPED else worker.state.value,
            "pid": worker.host.pid if worker.host is not None else None,
            "restarts": max(0, worker.spawns - 1),
            "last_error": worker.last_error,
            "last_exit": worker.last_exit,
            "committed": committed,
            "inflight": page.inflight if page is not None and worker.host is not None else None,
            "lag_bytes": max(0, self._head - committed),
            "lag_records": self._lag_records(committed),
            "lag_seconds": self._lag_seconds(committed, now),
            "delivered": page.delivered if page is not None else 0,
            "summaries": page.summaries if page is not None else 0,
            "rss_mb": sampler.rss_mb if sampler is not None else None,
            "cpu_percent": sampler.cpu_percent if sampler is not None else None,
            "skipped": len(worker.skip),
            "restart_in": max(0.0, worker.restart_at - now) if worker.restart_at is not None else None,
        }
