"""On-demand collector: a trainer whose run has no collector starts one.

Called by the trainer client's sender thread (never by a training call) when
frames wait and nothing answers.  ``STATBUS_AUTOSTART=0`` turns it off.  The
collector it starts is the daemon of ``statbus collector start``, flagged as on
demand so that it exits by itself once every trainer has said goodbye and every
plugin has caught up.
"""

from __future__ import annotations

import logging
from typing import Any

from ...plugins import StatbusError
from ..collector.daemon import ensure_running
from ..layout import RunLayout

logger = logging.getLogger(__name__)


def ensure_collector(config: Any) -> bool:
    """Start the run's collector if none serves it; True when one is ready."""
    layout = RunLayout(config.results_dir, config.run_id)
    if config.address != layout.data_address:
        # A collector somewhere else (tcp, or a socket of the user's choosing)
        # is the operator's to run; starting a local one would not reach it.
        return False
    try:
        started = ensure_running(layout, extra=["--on-demand"])
    except StatbusError as exc:
        logger.warning("could not start a collector for run %s: %s", layout.run_id, exc)
        return False
    if not started.already_running:
        logger.info("started a collector for run %s (pid %s, log %s)", layout.run_id, started.pid, layout.log_file)
    return True
