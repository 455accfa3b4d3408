"""The run's collector for one ``statbus learn``: started after ML-Agents' checks, stopped at the end.

ML-Agents refuses a fresh run whose folder exists, so nothing here touches
the run folder before ML-Agents' own ``validate_existing_directories`` has
passed: the collector is started from the stats-writer registration, which
``run_training`` calls right after that check.  Like every collector, it
runs statbus's built-in writers instead of ML-Agents' ``default`` entry point,
and every other ``mlagents.stats_writer`` plugin in a worker of its own.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Dict, List, Optional

from ...plugins import StatbusError
from ..collector.lifecycle.daemon import ensure_running, wait_for_exit
from ..collector.lifecycle.pidfile import running_pid
from ..layout import RunLayout
from ..trainer.autostart import on_demand_arguments
from ..trainer.config import ENV_FORCE

logger = logging.getLogger(__name__)

RUN_OPTIONS_FILE = "learn-run-options.json"
STOP_TIMEOUT = 60.0
WORKERS_READY_TIMEOUT = 15.0
"""How long the launcher waits, before training starts, for the plugins' workers to be up.
``mlagents-learn`` builds every writer before its first step; waiting as it does keeps the
workers' start (an interpreter, imports, a plugin's own set-up: about 0.25 s of CPU each)
from competing with the first steps for the cores.  A plugin that takes longer, or crashes,
is left to come up on its own while training goes on (it catches up from the journal)."""
READY_POLL_SECONDS = 0.05
COLLECTOR_NICE = 5
"""The collector of one training yields the CPU to it (its workers 10 more): acks may come a
little later, which costs the training nothing (its client never waits for them)."""


def plugin_run_options(options: Any, start_time: float) -> Dict[str, Any]:
    """statbus's ``RunOptions.as_dict()`` for ML-Agents' ``options``, with ML-Agents' own as_dict inside."""
    mlagents_dict = json.loads(json.dumps(options.as_dict(), default=str))
    checkpoint = options.checkpoint_settings
    return {
        "checkpoint_settings": {
            "run_id": checkpoint.run_id,
            "results_dir": checkpoint.results_dir,
            "resume": bool(checkpoint.resume),
            "force": bool(checkpoint.force),
            "initialize_from": checkpoint.initialize_from,
        },
        "behaviors": mlagents_dict.get("behaviors") or {},
        "env_settings": mlagents_dict.get("env_settings") or {},
        "debug": bool(options.debug),
        "start_time": start_time,
        "mlagents_options": mlagents_dict,
    }


class CollectorSession:
    """Starts (or joins) the run's collector; :meth:`stop` waits until every plugin caught up."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout
        self.pid: Optional[int] = None
        self.ours = False

    @property
    def collector_args(self) -> List[str]:
        """The arguments of this training's collector, on top of an on-demand start's.

        The trainer client starts the collector again with them if it dies during the
        training (``autostart``), so a restart runs the same plugins with the same options.
        The owner is this process: it may take a while to send its first frame (workers to
        wait for, ML-Agents' environment to build), and the collector must not idle out meanwhile.
        """
        return [
            "--run-options", os.path.join(self.layout.statbus_dir, RUN_OPTIONS_FILE),
            "--nice", str(COLLECTOR_NICE),
            "--owner-pid", str(os.getpid()),
        ]

    def start(self, run_options: Dict[str, Any], force: bool) -> None:
        os.makedirs(self.layout.statbus_dir, exist_ok=True)
        with open(os.path.join(self.layout.statbus_dir, RUN_OPTIONS_FILE), "w", encoding="utf-8") as handle:
            json.dump(run_options, handle)
        env = dict(os.environ)
        if force:
            env[ENV_FORCE] = "1"  # on_demand_arguments turns it into this training's start time
        extra = on_demand_arguments(env) + self.collector_args
        started = ensure_running(self.layout, extra=extra, env=env)
        self.pid = started.pid
        self.ours = not started.already_running
        if not self.ours:
            logger.warning(
                "statbus learn: run %s already has a collector (pid %s); its plugins and options stay as they are",
                self.layout.run_id, started.pid,
            )

    def wait_for_workers(self, timeout: float = WORKERS_READY_TIMEOUT) -> bool:
        """Wait until none of our collector's workers is still starting; True when none is."""
        if not self.ours:
            return True
        from ..control import control_request

        deadline = time.monotonic() + timeout
        while True:
            try:
                status = control_request(self.layout.control_address, {"op": "status"}, timeout=5.0)
            except StatbusError as exc:
                logger.warning("statbus learn: no status from the collector (%s); training starts now", exc)
                return False
            starting = sorted(p["name"] for p in status.get("plugins", []) if p.get("state") == "STARTING")
            if not starting:
                return True
            if time.monotonic() >= deadline:
                logger.info("statbus learn: training starts while %s still start(s); they catch up",
                            ", ".join(starting))
                return False
            time.sleep(READY_POLL_SECONDS)

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Ask our collector to stop once every plugin caught up; True when it has exited."""
        if not self.ours or self.pid is None:
            return False
        from ..control import control_request

        try:
            control_request(self.layout.control_address, {"op": "stop", "timeout": timeout}, timeout=5.0)
        except StatbusError as exc:
            # The reply can be lost while the collector closes its sockets (a signal now
            # would be a second stop: "at once"); an on-demand collector that did not take
            # the request still ends once idle, within the wait below.
            logger.debug("statbus learn: no reply to the stop request (%s); waiting for the collector", exc)
        # The run's collector now: the trainer client may have started another after ours died.
        pid = running_pid(self.layout.pid_file) or self.pid
        deadline = time.monotonic() + timeout + 15.0
        if wait_for_exit(pid, max(0.0, deadline - time.monotonic())):
            return True
        logger.warning("statbus learn: the collector (pid %s) is still running; it stops by itself once idle", pid)
        return False
