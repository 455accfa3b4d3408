"""The supervisor: one worker host process per enabled plugin, watched and restarted.

It lives in the collector and is driven from the collector's single-threaded
loop: :meth:`Supervisor.tick` does everything (reap exits, read state pages,
detect hangs, sample RSS/CPU, start due restarts) without ever sleeping, so a
stop escalates TERM → grace → KILL over several ticks.  Only :meth:`stop`, at
shutdown, waits (bounded).

Decisions (docs/design.md §6, "The workers"):

* **Who does what.**  Which state moves are legal: :mod:`.states`.  When to
  restart, when to give up, what is poison: :mod:`.policy` (pure).  How a host
  process is spawned, signalled (its whole process group), reaped, sampled and
  explained: :mod:`.processes`.  One plugin's hosts, watched and restarted by
  those rules, its poison set aside: :class:`.watcher.PluginWatcher`.  This
  module holds the plugins together: the collector's API, shutdown, status.
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
import logging
import random
import signal
import subprocess
import time
from typing import Any, Callable, Deque, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from ...plugins.discovery import PluginInfo
from ...plugins.errors import StatbusError
from ...plugins.settings import RunOptions
from .config import Config
from .policy import PolicyConfig, RestartPolicy
from .processes import (
    DEFAULT_GRACE,
    EXTERNAL_EXITS,
    FATAL_EXITS,
    LAST_OUTPUT_CHARS,
    LOG_TAIL_BYTES,
    NOT_A_RECORD_FAULT,
    ResourceSampler,
    Spawn,
    describe_exit,
    last_error_line,
    read_log_tail,
)
from .context import DeadLetterSource, WatchContext, WorkerPaths
from .dead_letters import read_dead_letter_positions
from .states import WorkerState
from .watcher import PluginWatcher

# Names that lived here before the process handling (.processes) and the
# per-plugin watching (.watcher) moved out; still importable from here.
__all__ = [
    "DEFAULT_GRACE", "DISABLED", "EXTERNAL_EXITS", "FATAL_EXITS", "LAST_OUTPUT_CHARS", "LOG_TAIL_BYTES",
    "NOT_A_RECORD_FAULT", "ResourceSampler", "Supervisor", "SupervisorError", "WorkerPaths",
    "describe_exit", "last_error_line", "read_dead_letter_positions", "read_log_tail",
]

logger = logging.getLogger(__name__)

HEAD_SAMPLE_INTERVAL = 0.5
"""Seconds between two remembered journal heads (for lag in seconds)."""
_SETTLED = frozenset((WorkerState.READY, WorkerState.STOPPED, WorkerState.FAILED))
"""States in which a plugin waits on no deadline of the supervisor's (see :meth:`Supervisor.settled`)."""

DISABLED = "DISABLED"
"""What :meth:`Supervisor.status` shows as the state of a disabled plugin."""


class SupervisorError(StatbusError):
    """A control request the supervisor cannot carry out (unknown or disabled plugin)."""


class Supervisor:
    """Runs one worker host per enabled plugin; see the module docstring for the rules."""

    def __init__(
        self,
        paths: WorkerPaths,
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
        self.paths = paths
        self.config = settings
        self.run_options = run_options
        self.worker_address = worker_address
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._grace = grace
        self._count_entries = count_entries
        self._head = 0
        self._head_samples: Deque[Tuple[float, int]] = collections.deque(maxlen=4096)
        self._stopping = False
        context = WatchContext(
            self.paths, run_options, worker_address,
            head=lambda: self._head, stopping=lambda: self._stopping,
            clock=clock, wall_clock=wall_clock, spawn=spawn, on_dead_letter=on_dead_letter,
            grace=grace, sample_interval=sample_interval, env=env, log_level=log_level,
        )
        self._workers: Dict[str, PluginWatcher] = {}
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
            restart_policy = RestartPolicy(plugin_policy, clock=clock, rng=self._rng)
            self._workers[info.name] = PluginWatcher(info, plugin_settings, restart_policy, context)

    # --- the collector's API ---------------------------------------------------

    def start(self, head_position: int = 0) -> None:
        """Spawn every enabled plugin's host; ``head_position`` is the journal head now."""
        self._head = head_position
        for worker in self._workers.values():
            if worker.enabled and worker.state is WorkerState.STOPPED:
                worker.spawn()

    def tick(self, head_position: int) -> None:
        """One round of watching; never blocks.  Call every ~50–250 ms."""
        now = self._clock()
        self._note_head(now, head_position)
        for worker in self._workers.values():
            try:
                worker.tick(now)
            except Exception:  # a bug around one plugin must not leave the others unwatched
                logger.exception("supervising plugin %s failed", worker.name)

    def names(self) -> List[str]:
        return list(self._workers)

    def committed(self, plugin: str) -> int:
        """The plugin's durable cursor (0 when it has no state page yet)."""
        return self._get(plugin).committed()

    def skip_positions(self, plugin: str) -> FrozenSet[int]:
        """Journal positions set aside as poison for this plugin (never delivered to it)."""
        return self._get(plugin).skip_frozen

    def consumers(self) -> List[str]:
        """Plugins whose cursors hold journal retention: every enabled one, FAILED included."""
        return [worker.name for worker in self._workers.values() if worker.enabled]

    def all_caught_up(self, head_position: int) -> bool:
        """Every enabled plugin that is not FAILED has committed up to ``head_position``."""
        return all(
            worker.committed() >= head_position
            for worker in self._workers.values()
            if worker.enabled and worker.state is not WorkerState.FAILED
        )

    def settled(self) -> bool:
        """No plugin is starting, stopping or waiting for a restart: a tick now and then is enough.

        A READY host's death is still seen at the next tick; what must not wait for a
        slow tick is a start's READY, a restart's backoff and a kill's deadline.
        """
        return all(worker.state in _SETTLED for worker in self._workers.values())

    def status(self) -> List[Dict[str, Any]]:
        return [self._status_of(worker) for worker in self._workers.values()]

    def restart(self, name: str) -> None:
        """Restart now with a clean slate (budget, backoff, strikes); also leaves FAILED."""
        worker = self._get(name)
        if self._stopping:
            raise SupervisorError("the supervisor is shutting down")
        if not worker.enabled:
            raise SupervisorError(f"plugin {name!r} is disabled; enable it instead")
        worker.restart()

    def enable(self, name: str) -> None:
        self._get(name).enable()

    def disable(self, name: str) -> None:
        self._get(name).disable()

    def stop(self, timeout: float = 5.0) -> None:
        """TERM every host, wait up to a grace, KILL the rest (whole groups), reap.  Bounded."""
        self._stopping = True
        deadline = time.monotonic() + timeout
        grace_end = time.monotonic() + min(self._grace, timeout / 2)
        for worker in self._workers.values():
            worker.shut_down()
        killed = False
        while True:
            running = [w for w in self._workers.values() if w.host is not None]
            for worker in running:
                worker.reap()
            running = [w for w in running if w.host is not None]
            if not running:
                break
            now = time.monotonic()
            if not killed and now >= grace_end:
                for worker in running:
                    logger.warning("plugin %s did not stop within the grace period; killing it", worker.name)
                    worker.signal_group(signal.SIGKILL)
                killed = True
            if now >= deadline:
                logger.error("plugins %s could not be reaped in time", [w.name for w in running])
                break
            time.sleep(0.01)
        for worker in self._workers.values():
            worker.close_page()

    def _get(self, name: str) -> PluginWatcher:
        try:
            return self._workers[name]
        except KeyError:
            raise SupervisorError(f"no plugin named {name!r}; known: {', '.join(self._workers) or 'none'}") from None

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

    def _status_of(self, worker: PluginWatcher) -> Dict[str, Any]:
        now = self._clock()
        page = worker.page if worker.page is not None and not worker.page.closed else None
        committed = page.committed if page is not None else worker.committed()
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
            "disk_full_since": (page.disk_full_since or None) if page is not None and worker.host is not None else None,
            "summaries": page.summaries if page is not None else 0,
            "rss_mb": sampler.rss_mb if sampler is not None else None,
            "cpu_percent": sampler.cpu_percent if sampler is not None else None,
            "skipped": len(worker.skip),
            "restart_in": max(0.0, worker.restart_at - now) if worker.restart_at is not None else None,
        }
