"""``statbus learn``: run ML-Agents' own training in this process, its stats writers out of process.

What changes against ``mlagents-learn`` is the list of stats writers
ML-Agents builds (``register_stats_writer_plugins``, bound into
``mlagents.trainers.learn`` when it is imported, so it is replaced there) and
the moment ``timers.json`` is written.  Everything else — argument parsing,
directory checks, the environment factory, trainers, checkpoints, exit on
error — is ML-Agents' code, called as ``mlagents.trainers.learn.main`` calls it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from mlagents.trainers import learn as ml_learn
from mlagents.trainers.stats import StatsReporter as MLAgentsStatsReporter
from mlagents_envs.timers import get_timer_tree

from ...plugins import StatbusError
from ..layout import RunLayout
from ..trainer import config as trainer_config
from ..trainer import reporter
from .console_echo import ConsoleEcho
from .forwarding import ForwardingWriter
from .session import CollectorSession, plugin_run_options
from .timers import write_with_gauges

logger = logging.getLogger(__name__)

FLUSH_TIMEOUT = 30.0
"""Seconds the launcher waits at the end for the collector to acknowledge every stat."""

VALUE_BATCH_INTERVAL = 1.0
"""How long the trainer client gathers ``add_stat`` values into one frame, summaries included (a
training's default is 0.05 s, each summary at once).  ML-Agents adds a few values per step and
sums them up every ``summary_freq`` steps; a console line a second late is on time.  Every frame
wakes the collector, every worker and threads of the training process; on a small machine each
wake-up costs the training more than its CPU (a virtual machine's steal time grew with them)."""


class LearnSession:
    """One training's statbus side: the forwarding writer, the collector, the console echo."""

    def __init__(self) -> None:
        self.writer: Optional[ForwardingWriter] = None
        self.collector: Optional[CollectorSession] = None
        self.echo: Optional[ConsoleEcho] = None
        self.timer_tree: Optional[Dict[str, Any]] = None
        self.run_logs_dir: Optional[str] = None

    # -- the replacements ML-Agents calls -------------------------------------

    def register_stats_writer_plugins(self, options: Any, *_: Any) -> List[Any]:
        """Called by ML-Agents' ``run_training`` after its directory checks: start statbus, return one writer."""
        checkpoint = options.checkpoint_settings
        layout = RunLayout(checkpoint.results_dir, checkpoint.run_id)
        self.collector = CollectorSession(layout)
        trainer_config.configure(run_id=layout.run_id, results_dir=layout.results_dir,
                                 collector_args=tuple(self.collector.collector_args),
                                 batch_interval=VALUE_BATCH_INTERVAL, prompt_summaries=False)
        try:
            self.collector.start(
                plugin_run_options(options, start_time=time.time()),
                force=bool(checkpoint.force) and not checkpoint.resume,
            )
            self.collector.wait_for_workers()
        except StatbusError as exc:
            # Training goes on: the client keeps what it can (STATBUS_BUFFER_BYTES) and tries
            # an on-demand start itself once its frames wait; or one is started by hand.
            logger.error("statbus learn: the run's collector did not start: %s", exc)
        self.echo = ConsoleEcho(layout.worker_log_file("console")).start()
        self.writer = ForwardingWriter()
        return [self.writer]

    def write_timing_tree(self, run_logs_dir: str) -> None:
        """ML-Agents' end-of-training timers, kept until the gauges are final (see :mod:`.timers`)."""
        self.run_logs_dir = run_logs_dir
        self.timer_tree = get_timer_tree()

    # -- the end -----------------------------------------------------------------

    def close(self) -> None:
        """Deliver every stat, let every plugin catch up, print the last console lines, write timers.json."""
        if self.writer is not None:
            try:
                MLAgentsStatsReporter.writers.remove(self.writer)
            except ValueError:
                pass
        if not reporter.flush(FLUSH_TIMEOUT):
            logger.warning("statbus learn: the collector did not acknowledge every stat within %.0f s", FLUSH_TIMEOUT)
        reporter.shutdown()
        trainer_config.forget_configuration()
        stopped = self.collector.stop() if self.collector is not None else False
        if self.echo is not None:
            self.echo.stop()
        if self.timer_tree is not None and self.run_logs_dir is not None:
            if not stopped and self.collector is not None and self.collector.ours:
                logger.warning("statbus learn: timers.json gets the gauges written so far")
            write_with_gauges(self.run_logs_dir, self.timer_tree)


def _replace(module: Any, name: str, value: Callable[..., Any], saved: Dict[str, Any]) -> None:
    saved[name] = getattr(module, name)
    setattr(module, name, value)


def learn(argv: Optional[Sequence[str]] = None) -> int:
    """``mlagents-learn ARGV`` in this process, with statbus's writers; the exit code.

    Bad arguments return argparse's code (2); an error of ML-Agents' raises, as
    it does out of ``mlagents.trainers.learn.main`` (``statbus learn`` then
    exits 1 with its traceback, as ``mlagents-learn`` does).
    """
    try:
        options = ml_learn.parse_command_line(None if argv is None else list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    session = LearnSession()
    saved: Dict[str, Any] = {}
    _replace(ml_learn, "register_stats_writer_plugins", session.register_stats_writer_plugins, saved)
    _replace(ml_learn, "write_timing_tree", session.write_timing_tree, saved)
    try:
        ml_learn.run_cli(options)
    finally:
        for name, value in saved.items():
            setattr(ml_learn, name, value)
        session.close()
    return 0
