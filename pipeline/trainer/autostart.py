"""On-demand collector: a trainer whose run has no collector starts one.

Called by the trainer client's sender thread (never by a training call) when
frames wait and nothing answers.  ``STATBUS_AUTOSTART=0`` turns it off.  The
collector it starts is the daemon of ``statbus collector start``, flagged as on
demand so that it exits by itself once every trainer has said goodbye and every
plugin has caught up.

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

import logging
import os
from typing import Any, List, MutableMapping

from ...plugins import StatbusError
from ..collector.lifecycle.daemon import ensure_running
from ..layout import RunLayout
from .config import ENV_CONFIG, force_before

logger = logging.getLogger(__name__)

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


def ensure_collector(config: Any) -> bool:
    """Start the run's collector if none serves it; True when one is ready."""
    layout = RunLayout(config.results_dir, config.run_id)
    if config.address != layout.data_address:
        # A collector somewhere else (tcp, or a socket of the user's choosing)
        # is the operator's to run; starting a local one would not reach it.
        return False
    try:
        started = ensure_running(layout, extra=[*on_demand_arguments(), *getattr(config, "collector_args", ())])
    except StatbusError as exc:
        logger.warning("could not start a collector for run %s: %s", layout.run_id, exc)
        return False
    if not started.already_running:
        logger.info("started a collector for run %s (pid %s, log %s)", layout.run_id, started.pid, layout.log_file)
    return True
