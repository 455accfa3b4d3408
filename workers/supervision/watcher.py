"""One plugin under supervision: its worker host, watched, aborted, restarted, its poison set aside.

:class:`PluginWatcher` is what the supervisor keeps per plugin (the watcher of
circus' arbiter → watcher → process layering): it drives the plugin's state
machine (:mod:`.states`) through one host after another, reports exits to the
plugin's restart policy (:mod:`.policy`) and carries out its verdicts.  The
process itself is a :class:`.processes.HostProcess`.  Nothing here ever sleeps:
:meth:`PluginWatcher.tick` is called from the collector's loop, so a stop
escalates TERM → grace → KILL over several ticks.  The rules are listed in
:mod:`.supervisor`'s docstring.
"""

from __future__ import annotations

import logging
import signal
from typing import Any, FrozenSet, List, Mapping, Optional, Set

from ...plugins.discovery import PluginInfo
from ..statepage import NO_INFLIGHT, HostState, StatePage, StatePageError, read_state
from .config import PluginSettings
from .context import WatchContext
from .dead_letters import append_dead_letter, read_dead_letter_positions
from .policy import Action, RestartPolicy
from .processes import (
    EXTERNAL_EXITS,
    FATAL_EXITS,
    NOT_A_RECORD_FAULT,
    HostProcess,
    describe_exit,
    host_argv,
    spawn_host,
)
from .states import StateMachine, WorkerEvent, WorkerState

logger = logging.getLogger(__name__)

QUIET_SAMPLE_FACTOR = 10
"""A host with nothing delivered since its last resource sample is sampled this many times less often."""


class PluginWatcher:
    """Everything the supervisor knows and does about one plugin."""

    def __init__(self, info: PluginInfo, settings: PluginSettings, policy: RestartPolicy, context: WatchContext) -> None:
        self.info = info
        self.settings = settings
        self.context = context
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
        self.sampled_committed = -1  # the page's cursor at the last resource sample
        self.abort_reason = ""
        self.abort_inflight: Optional[int] = None
        self.restart_at: Optional[float] = None
        self.restart_after_stop = False
        self.last_error: Optional[str] = None
        self.last_exit: Optional[int] = None
        # Skip sets survive a collector restart: they are read back from the dead-letter file.
        self.skip: Set[int] = read_dead_letter_positions(context.paths.dead_letter_file(info.name))
        self.skip_frozen: FrozenSet[int] = frozenset(self.skip)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def state(self) -> WorkerState:
        return self.machine.state

    def committed(self) -> int:
        """The plugin's durable cursor (0 when it has no state page yet)."""
        if self.page is not None and not self.page.closed:
            return self.page.committed
        snapshot = read_state(self.context.paths.state_file(self.name))
        return snapshot.committed if snapshot is not None else 0

    # --- commands ----------------------------------------------------------------

    def restart(self) -> None:
        """Restart now with a clean slate (budget, backoff, strikes); also leaves FAILED."""
        self.policy.reset()
        self.restart_at = None
        state = self.state
        if state in (WorkerState.STARTING, WorkerState.READY):
            self.restart_after_stop = True
            self.stop()
        elif state in (WorkerState.STOPPING, WorkerState.ABORTING):
            self.restart_after_stop = True
            if state is WorkerState.ABORTING:
                self.machine.fire(WorkerEvent.STOP)
        elif state is WorkerState.EXITED:
            self.machine.fire(WorkerEvent.STOP)
            self.spawn()
        else:  # STOPPED, BACKOFF, FAILED
            self.spawn()

    def enable(self) -> None:
        self.enabled = True
        if self.state is WorkerState.STOPPING:
            self.restart_after_stop = True  # disabled a moment ago and still stopping
        elif self.state is WorkerState.STOPPED and not self.context.stopping():
            self.policy.reset()
            self.spawn()

    def disable(self) -> None:
        self.enabled = False
        self.restart_after_stop = False
        self.restart_at = None
        state = self.state
        if state in (WorkerState.STARTING, WorkerState.READY, WorkerState.ABORTING):
            self.stop()
        elif state in (WorkerState.EXITED, WorkerState.BACKOFF, WorkerState.FAILED):
            self.machine.fire(WorkerEvent.STOP)

    def shut_down(self) -> None:
        """The supervisor is stopping: TERM a running host, leave EXITED/BACKOFF for STOPPED."""
        self.restart_after_stop = False
        if self.state in (WorkerState.STARTING, WorkerState.READY, WorkerState.ABORTING):
            self.stop()
        elif self.state in (WorkerState.EXITED, WorkerState.BACKOFF):
            self.machine.fire(WorkerEvent.STOP)

    def stop(self) -> None:
        already_signalled = self.state is WorkerState.ABORTING
        self.machine.fire(WorkerEvent.STOP)
        if not already_signalled:
            self._terminate(self.context.clock())

    def close_page(self) -> None:
        """Unmap the state page once no host runs."""
        if self.host is None and self.page is not None:
            self.page.close()
            self.page = None

    # --- watching ----------------------------------------------------------------

    def tick(self, now: float) -> None:
        state = self.state
        if state.has_process:
            if self.reap():
                return
            if state in (WorkerState.STARTING, WorkerState.READY):
                self._watch(now)
            elif self.kill_at is not None and not self.killed and now >= self.kill_at:
                logger.warning("plugin %s still running %.1f s after TERM; killing its group",
                               self.name, self.context.grace)
                self.signal_group(signal.SIGKILL)
                self.killed = True
        elif state is WorkerState.BACKOFF and not self.context.stopping():
            if self.restart_at is not None and now >= self.restart_at:
                self.spawn()

    def signal_group(self, sig: signal.Signals) -> None:
        if self.host is not None:
            self.host.signal_group(sig)

    def reap(self) -> bool:
        """Handle the host's exit if it ended; True when it did."""
        host = self.host
        if host is None:
            return False
        returncode = host.reap()
        if returncode is None:
            return False
        self._exited(returncode)
        return True

    def _watch(self, now: float) -> None:
        page, host = self.page, self.host
        assert page is not None and host is not None
        settings = self.settings
        # The page's pid was zeroed before the spawn: non-zero means the new host
        # has taken the page over (it may be a child of a wrapper interpreter,
        # so do not insist on proc.pid).
        if self.state is WorkerState.STARTING:
            if page.pid != 0 and page.state == HostState.READY:
                self.machine.fire(WorkerEvent.READY)
                logger.info("plugin %s ready (pid %d)", self.name, host.pid)
            elif now - self.spawned_at > settings.start_timeout:
                self._abort(f"hung: not ready {settings.start_timeout:g} s after start", None, now)
                return
        if self.state is WorkerState.READY:
            # Heartbeats are judged from READY on only: while a plugin imports,
            # a C extension may hold the GIL for seconds; start_timeout covers that.
            silence = self._unchanged_for("heartbeat_seen", page.heartbeat, now)
            if silence > settings.heartbeat_timeout:
                self._abort(f"hung: no heartbeat for {silence:.1f} s", page.inflight, now)
                return
            busy_since = page.busy_since
            busy_for = self._unchanged_for("busy_seen", busy_since, now)
            if busy_since > 0 and busy_for > settings.call_timeout:
                inflight = page.inflight
                self._abort(
                    f"hung: a writer call took over {settings.call_timeout:g} s (entry at position {inflight})",
                    inflight,
                    now,
                )
                return
            self.policy.progressed(page.committed)
        sampler = host.resources
        if sampler.due(now, self.context.sample_interval):
            # A host that delivered nothing since the last sample is sampled less often: it
            # grows (if at all) by itself, slowly; one at work is watched every interval.
            committed = page.committed
            quiet = committed == self.sampled_committed and not page.busy_since
            self.sampled_committed = committed
            sampler.sample(now, self.context.sample_interval * (QUIET_SAMPLE_FACTOR if quiet else 1))
            if sampler.rss_mb > settings.memory_cap_mb:
                reason = f"memory cap: RSS {sampler.rss_mb:.0f} MB over {settings.memory_cap_mb:g} MB"
                self._abort(reason, None, now)

    def _unchanged_for(self, attribute: str, value: float, now: float) -> float:
        """Seconds (our clock) since the page field behind ``attribute`` last changed."""
        seen_value, seen_at = getattr(self, attribute)
        if value != seen_value:
            setattr(self, attribute, (value, now))
            return 0.0
        return now - seen_at

    def _abort(self, reason: str, inflight: Optional[int], now: float) -> None:
        logger.warning("plugin %s: %s; stopping it", self.name, reason)
        self.machine.fire(WorkerEvent.ABORT)
        self.abort_reason = self.last_error = reason
        self.abort_inflight = inflight if inflight is not None and inflight >= 0 else None
        self._terminate(now)

    def _terminate(self, now: float) -> None:
        self.signal_group(signal.SIGTERM)
        self.kill_at = now + self.context.grace
        self.killed = False

    # --- starting ----------------------------------------------------------------

    def _open_page(self) -> StatePage:
        if self.page is None or self.page.closed:
            initial = 0 if self.settings.backfill else self.context.head()
            self.page = StatePage(self.context.paths.state_file(self.name), create=True, initial_committed=initial)
        return self.page

    def spawn(self) -> None:
        context = self.context
        try:
            page = self._open_page()
        except (StatePageError, OSError) as exc:
            self._fail_unstarted(f"state page unusable: {exc}")
            return
        # Fields of the previous host must not be mistaken for the new one's.
        page.inflight = NO_INFLIGHT
        page.busy_since = 0.0
        page.disk_full_since = 0.0
        page.pid = 0
        page.state = HostState.STARTING
        argv = self._argv()
        try:
            host = spawn_host(
                argv, context.paths.log_file(self.name),
                plugin=self.name, spawn=context.spawn, env=context.env, wall_clock=context.wall_clock,
                nice=self.settings.nice,
            )
        except OSError as exc:
            self._fail_unstarted(f"cannot start {argv[0]}: {exc}")
            return
        self.machine.fire(WorkerEvent.START)
        self.host = host
        self.spawns += 1
        self.spawned_at = context.clock()
        self.kill_at, self.killed, self.restart_at = None, False, None
        self.heartbeat_seen = self.busy_seen = (float("nan"), self.spawned_at)
        self.policy.started(page.committed)
        logger.info("plugin %s: started worker host pid %d from position %d", self.name, host.pid, page.committed)

    def _argv(self) -> List[str]:
        info, settings, context = self.info, self.settings, self.context
        return host_argv(
            settings.python,
            plugin=info.name,
            group=info.group,
            target=info.target,
            address=context.worker_address,
            state_file=context.paths.state_file(info.name),
            run_options=context.run_options.with_plugin_options(settings.options).as_dict(),
            call_timeout=settings.call_timeout,
            heartbeat_timeout=settings.heartbeat_timeout,
            log_level=context.log_level,
        )

    def _fail_unstarted(self, reason: str) -> None:
        """Could not even spawn: a configuration problem, so FAILED at once."""
        logger.error("plugin %s: %s", self.name, reason)
        self.last_error = reason
        if self.state is WorkerState.EXITED:
            self.machine.fire(WorkerEvent.GIVE_UP)
        elif self.state is not WorkerState.FAILED:
            # STOPPED/BACKOFF: go through START and EXIT so the table stays the only path.
            self.machine.fire(WorkerEvent.START)
            self.machine.fire(WorkerEvent.EXIT)
            self.machine.fire(WorkerEvent.GIVE_UP)

    # --- ending ------------------------------------------------------------------

    def _exited(self, returncode: int) -> None:
        page = self.page
        inflight = page.inflight if page is not None else NO_INFLIGHT
        committed = page.committed if page is not None else 0
        host = self.host
        pid = host.pid if host is not None else 0
        self.host, self.kill_at = None, None
        self.last_exit = returncode
        described = host.describe_exit(returncode) if host is not None else describe_exit(returncode, None)
        state = self.state
        stopping = self.context.stopping()
        if state is WorkerState.STOPPING:
            self.machine.fire(WorkerEvent.EXIT)
            logger.info("plugin %s stopped (pid %d, %s)", self.name, pid, described)
            if self.restart_after_stop and self.enabled and not stopping:
                self.restart_after_stop = False
                self.spawn()
            return
        external = False
        if state is WorkerState.ABORTING:
            reason, strike, fatal = self.abort_reason, self.abort_inflight, False
        else:
            fatal = returncode in FATAL_EXITS
            external = returncode in EXTERNAL_EXITS
            reason = described
            strike = None if returncode in NOT_A_RECORD_FAULT else inflight
        self.machine.fire(WorkerEvent.EXIT)
        self.last_error = reason
        verdict = self.policy.failed(reason=reason, committed=committed, inflight=strike, fatal=fatal, external=external)
        if verdict.poison is not None:
            self._dead_letter(verdict.poison, reason)
        if stopping:
            self.machine.fire(WorkerEvent.STOP)
        elif verdict.action is Action.FAIL:
            self.machine.fire(WorkerEvent.GIVE_UP)
            self.last_error = verdict.reason
            logger.error("plugin %s FAILED: %s", self.name, verdict.reason)
        else:
            self.machine.fire(WorkerEvent.RETRY)
            self.restart_at = self.context.clock() + verdict.delay
            logger.warning("plugin %s exited (pid %d): %s; restart in %.2f s", self.name, pid, reason, verdict.delay)

    def _dead_letter(self, position: int, reason: str) -> None:
        context = self.context
        record: Optional[Mapping[str, Any]] = None
        if context.on_dead_letter is not None:
            try:
                record = context.on_dead_letter(self.name, position)
            except Exception:  # the collector's lookup failing must not stop the set-aside
                logger.exception("plugin %s: could not read poison record at %d", self.name, position)
        path = context.paths.dead_letter_file(self.name)
        append_dead_letter(path, {"plugin": self.name, "position": position, "record": record, "error": reason,
                                  "time": context.wall_clock()})
        self.skip.add(position)
        self.skip_frozen = frozenset(self.skip)
        logger.error("plugin %s: record at %d killed it %d times; set aside in %s",
                     self.name, position, self.policy.config.poison_strikes, path)
