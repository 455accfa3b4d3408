"""On-demand collector: a trainer whose run has no collector starts one, every time it finds none.

Called by the trainer client's sender thread (never by a training call) when
frames wait and nothing has acknowledged them for :data:`RESTART_AFTER`.  The
collector it starts is the daemon of ``statbus collector start``, flagged as on
demand so that it exits by itself once every trainer has said goodbye and every
plugin has caught up.  ``STATBUS_AUTOSTART=0`` turns it off.

Dead or busy: a collector holds its run's pidfile lock (``flock``) for its whole
life, and the kernel drops that lock the moment the process ends, however it
ends.  So a client that hears no ack looks at the lock first: held means a
collector is alive (slow, stalled on a full disk, or started by hand) and is left
alone — the client only waits; free means none is alive, and the client starts
one through :func:`..collector.lifecycle.daemon.ensure_running`, which serializes
the starters of a run on ``autostart.lock`` so that any number of clients racing
after a kill make one collector between them.

``STATBUS_FORCE=1`` makes that start start the run over (``--force``), once per
training: the start passes ``--force-before`` the training's start time, and a run
that began at or after it is continued (an on-demand start after a crash or an idle
exit of that same run's collector).  The training's start is this process's creation
time; ``STATBUS_FORCE`` is set to it in this process's environment when its
configuration is read (:func:`.config.force_before`), so that processes it
starts later share it.  A fleet of processes started separately sets
``STATBUS_FORCE`` to one Unix time (e.g. ``$(date +%s)`` at launch) instead of 1.
``STATBUS_CONFIG`` names the per-plugin settings file of the collector started so.
"""

from __future__ import annotations

import enum
import logging
import os
from typing import List, MutableMapping, NamedTuple, Optional

from ...plugins import StatbusError
from ..layout import RunLayout
from .config import ENV_CONFIG, TrainerConfig, force_before

logger = logging.getLogger(__name__)

RESTART_AFTER = 1.0
"""Seconds without an ack, while frames wait, before a client looks for its run's collector;
also how often it looks again while a live collector (its pidfile lock held) stays silent."""
RESTART_BACKOFF_MAX = 60.0
"""Starts that did not bring acks back are spaced 1, 2, 4, ... seconds apart, at most this."""


def on_demand_arguments(environ: MutableMapping[str, str] = os.environ) -> List[str]:
    """The collector's arguments for a start on demand: ``STATBUS_FORCE`` and ``STATBUS_CONFIG`` as flags."""
    extra = ["--on-demand"]
    moment = force_before(environ)
    if moment is not None:
        extra += ["--force-before", repr(moment)]
    config = environ.get(ENV_CONFIG)
    if config:
        # Absolute: the collector is a daemon and may not share our working directory for long.
        extra += ["--config", os.path.abspath(config)]
    return extra


class Outcome(enum.Enum):
    NOT_OURS = "not ours"
    """Autostart off, a Ray run, or an address no local start would serve: never look again."""
    ALIVE = "alive"
    """A collector holds the run's pidfile lock (perhaps just started by another client)."""
    STARTING = "starting"
    """Another process is starting the run's collector (it holds ``autostart.lock`` until the collector answers)."""
    STARTED = "started"
    FAILED = "failed"


class Ensured(NamedTuple):
    outcome: Outcome
    pid: Optional[int] = None
    error: str = ""


def ensure_collector(config: TrainerConfig) -> Ensured:
    """Start the run's collector if no live process holds its pidfile lock."""
    if not config.autostart or config.ray:
        return Ensured(Outcome.NOT_OURS)  # a Ray run's collector is its actor's to start
    layout = RunLayout(config.results_dir, config.run_id)
    if config.address != layout.data_address:
        # A collector somewhere else (tcp, or a socket of the user's choosing)
        # is the operator's to run; starting a local one would not reach it.
        return Ensured(Outcome.NOT_OURS)
    # Imported here: the pidfile and starting a daemon are no cost of `import statbus.pipeline`.
    from ..collector.lifecycle.daemon import ensure_running
    from ..collector.lifecycle.pidfile import is_locked

    if is_locked(layout.pid_file):
        return Ensured(Outcome.ALIVE)

    try:
        # Not queued behind another starter: a sender thread waiting there reads no acks meanwhile.
        started = ensure_running(layout, extra=[*on_demand_arguments(), *config.collector_args], wait_behind=False)
    except (StatbusError, OSError) as exc:
        return Ensured(Outcome.FAILED, error=str(exc))
    if started.under_way:
        return Ensured(Outcome.STARTING)
    if started.already_running:
        return Ensured(Outcome.ALIVE, started.pid)
    return Ensured(Outcome.STARTED, started.pid)


def local_collector_working(config: TrainerConfig, timeout: float = 2.0) -> bool:
    """True when the run's local collector is being started, or answers and takes frames in.

    An exiting client asks this while its collector has said nothing to it: a
    collector busy with a backlog takes every connection's frames in turn and may not
    have come to this one's yet; one whose journal cannot be written (a full disk),
    or that does not answer at all, is not waited for.  False for a collector
    elsewhere (tcp, Ray): only its acks and repeated acks tell.
    """
    if config.ray:
        return False
    layout = RunLayout(config.results_dir, config.run_id)
    if config.address != layout.data_address:
        return False
    from ..collector.lifecycle.pidfile import is_locked

    if is_locked(layout.autostart_lock):
        return True
    if not is_locked(layout.pid_file):
        return False  # no collector process: nobody to ask
    from ..control import ControlError, control_request

    try:
        reply = control_request(layout.control_address, {"op": "ping"}, timeout=timeout)
    except ControlError:
        return False
    return bool(reply.get("ok")) and not reply.get("stalled") and reply.get("phase") == "running"


class CollectorKeeper:
    """When the sender thread looks for its collector again, and what it tells the user.

    Pure bookkeeping on the times it is given (tested on a fake clock); the sender
    calls :meth:`due`, runs :func:`ensure_collector` when it is, hands the result to
    :meth:`record`, and calls :meth:`acked` whenever an ack releases frames.  An
    *episode* is a stretch without acks: a failure to start is said once per episode,
    and the spacing between starts doubles within it.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.starts = 0
        self.failures = 0
        self._next_at = 0.0
        self._delay = RESTART_AFTER
        self._given_up = False
        self._ever_acked = False
        self._failed_in_episode = False

    def due(self, now: float) -> bool:
        return not self._given_up and now >= self._next_at

    def record(self, ensured: Ensured, now: float) -> None:
        outcome = ensured.outcome
        if outcome is Outcome.NOT_OURS:
            self._given_up = True
            return
        if outcome is Outcome.ALIVE or outcome is Outcome.STARTING:
            self._next_at = now + RESTART_AFTER
            return
        self._next_at = now + self._delay
        self._delay = min(self._delay * 2, RESTART_BACKOFF_MAX)
        if outcome is Outcome.STARTED:
            self.starts += 1
            if self._ever_acked:
                logger.warning("statbus: no collector served run %s any more; started a new one (pid %s), "
                               "which gets what the last one journaled and what this process holds",
                               self.run_id, ensured.pid)
            else:
                logger.info("statbus: started a collector for run %s (pid %s)", self.run_id, ensured.pid)
            return
        self.failures += 1
        if not self._failed_in_episode:
            self._failed_in_episode = True
            logger.warning("statbus: could not start a collector for run %s: %s\n"
                           "Trying again in %.0f s, then ever more slowly (at most every %.0f s); stats wait "
                           "in this process meanwhile (up to its buffer).",
                           self.run_id, ensured.error, self._next_at - now, RESTART_BACKOFF_MAX)
        else:
            logger.debug("statbus: collector start for run %s failed again: %s", self.run_id, ensured.error)

    def acked(self) -> None:
        """A collector answers: the next silence starts a new episode."""
        if self._failed_in_episode:
            logger.warning("statbus: run %s's collector answers again", self.run_id)
        self._ever_acked = True
        self._failed_in_episode = False
        self._delay = RESTART_AFTER
        self._next_at = 0.0
