"""``run_logs/timers.json`` as ``mlagents-learn`` leaves it: ML-Agents' timer tree with the gauges.

``mlagents-learn`` writes the file once, at the end, from its in-process
timers, which hold the gauges its ``GaugeWriter`` set.  Under ``statbus
learn`` the gauges are kept by statbus's ``gauges`` plugin, out of process,
in the same file: ML-Agents' end-of-training write would replace them (and
the plugin's later writes would replace ML-Agents' tree).  The launcher
therefore holds ML-Agents' tree back (:func:`deferred_timing_tree`) and writes
it once the collector has stopped, with the plugin's gauges in it.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Optional

logger = logging.getLogger(__name__)

TIMERS_FILE = "timers.json"


def read_gauges(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            tree = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("statbus learn: cannot read the gauges in %s: %s", path, exc)
        return {}
    gauges = tree.get("gauges") if isinstance(tree, dict) else None
    return gauges if isinstance(gauges, dict) else {}


def write_with_gauges(run_logs_dir: str, tree: Dict[str, Any], gauges: Optional[Dict[str, Any]] = None) -> None:
    """Write ML-Agents' ``tree`` to ``timers.json`` with the gauges found there now (or ``gauges``)."""
    path = os.path.join(run_logs_dir, TIMERS_FILE)
    merged = dict(tree)
    merged["gauges"] = {**(tree.get("gauges") or {}), **(read_gauges(path) if gauges is None else gauges)}
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(run_logs_dir, exist_ok=True)
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(merged, handle, indent=4)
        os.replace(temporary, path)
    except OSError as exc:
        logger.warning("statbus learn: unable to save %s: %s", path, exc)
