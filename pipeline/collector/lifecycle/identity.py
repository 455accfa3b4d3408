"""A run's identity, fixed at its first start, and the one way to start a run over.

``<results>/<run>/statbus/run.json`` holds the run's start time and run options.
The first collector of a run writes it; every later collector of that run — after a
crash, a clean stop or an idle exit — reads it back, so writers see the same
``RunOptions.start_time`` for the run's whole life: their elapsed time counts from
the real start, and files of the run never look like those of "an earlier run".

Nothing of a run is ever removed unless asked: a collector on an existing run
directory continues the run.  ``--force`` (``STATBUS_FORCE=1`` for on-demand
starts) clears the run's outputs first (:func:`clear_run_outputs`), ML-Agents' meaning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Optional

from ....plugins import ConfigError
from ....plugins.settings import RUN_LOGS, CheckpointSettings, RunOptions
from ....plugins.writers.console import STATE_FILE_NAME as CONSOLE_STATE_FILE
from ....plugins.writers.gauges import FILE_NAME as GAUGES_FILE
from ....plugins.writers.jsonl import FILE_NAME as JSONL_FILE
from ...layout import RunLayout

logger = logging.getLogger(__name__)

IDENTITY_FILE = "run.json"
IDENTITY_VERSION = 1

# The built-in writers' file names, spelled here: the collector never imports writer code.
EVENT_FILE_PREFIX = "events.out.tfevents."
RUN_OUTPUT_FILES = (JSONL_FILE, os.path.join(RUN_LOGS, GAUGES_FILE), os.path.join(RUN_LOGS, CONSOLE_STATE_FILE))
"""The built-in writers' files, relative to the run directory."""


def statbus_kept(layout: RunLayout) -> frozenset:
    """What a forced start keeps in ``statbus/``: the collector's log and pidfile, the starters' lock, Ray's keys."""
    return frozenset(os.path.basename(path) for path in (layout.log_file, layout.pid_file, layout.autostart_lock,
                                                         layout.ray_dir))
"""Entries of ``statbus/`` a forced start keeps: the starting collector's own log, pidfile and lock,
and the Ray actor's keys and endpoint, made before it starts the collector it passes them to."""


@dataclasses.dataclass(frozen=True)
class RunIdentity:
    run_id: str
    start_time: float
    """Wall-clock time (``time.time()``) of the run's first start."""
    options: Dict[str, Any]
    """``RunOptions.as_dict()`` of the first start, without any plugin's own options."""
    continued: bool
    """True when this start continues a run (the identity was on disk already)."""
    forced: bool
    """True when this start cleared the run's outputs (``--force``)."""

    def status(self) -> Dict[str, Any]:
        """The ``run`` section of ``statbus status``."""
        return {"start_time": self.start_time, "continued": self.continued, "forced": self.forced}

    def run_options(self, layout: RunLayout) -> RunOptions:
        """The run options handed to every plugin: paths from ``layout``, the rest from the first start."""
        stored = RunOptions.from_dict({k: v for k, v in self.options.items() if k != "checkpoint_settings"})
        checkpoint = CheckpointSettings(
            run_id=layout.run_id, results_dir=layout.results_dir, resume=self.continued, force=self.forced
        )
        return dataclasses.replace(stored, checkpoint_settings=checkpoint, start_time=self.start_time)


def identity_path(layout: RunLayout) -> str:
    return os.path.join(layout.statbus_dir, IDENTITY_FILE)


def read_identity(layout: RunLayout) -> Optional[Dict[str, Any]]:
    """The stored identity, or None when the run has none yet; ConfigError when it is damaged."""
    path = identity_path(layout)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"the run identity {path} cannot be read ({exc}); restore it, or start the run over with --force"
        ) from None
    start = data.get("start_time") if isinstance(data, dict) else None
    if type(start) not in (int, float) or not isinstance(data.get("run_options"), dict):
        raise ConfigError(
            f"the run identity {path} has no start_time or run_options; restore it, or start over with --force"
        )
    return data


def _write_identity(layout: RunLayout, data: Dict[str, Any]) -> None:
    path = identity_path(layout)
    os.makedirs(layout.statbus_dir, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def clear_run_outputs(layout: RunLayout) -> List[str]:
    """Remove the run's outputs; the paths removed.  Call with the run's pidfile held.

    ``statbus/`` but :func:`statbus_kept`, :data:`RUN_OUTPUT_FILES`, and every TensorBoard
    event file under the run directory; nothing else (checkpoints, a user's files).
    """
    removed: List[str] = []
    run_dir, statbus_dir = layout.run_dir, layout.statbus_dir
    kept = statbus_kept(layout)
    if os.path.isdir(statbus_dir):
        for name in sorted(os.listdir(statbus_dir)):
            if name in kept:
                continue
            path = os.path.join(statbus_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(path)
    for relative in RUN_OUTPUT_FILES:
        path = os.path.join(run_dir, relative)
        if os.path.isfile(path):
            os.unlink(path)
            removed.append(path)
    for directory, subdirs, files in os.walk(run_dir):
        if os.path.abspath(directory) == os.path.abspath(run_dir):
            subdirs[:] = [d for d in subdirs if d != "statbus"]
        for name in files:
            if name.startswith(EVENT_FILE_PREFIX):
                path = os.path.join(directory, name)
                os.unlink(path)
                removed.append(path)
    return removed


def establish(
    layout: RunLayout,
    force: bool = False,
    force_before: Optional[float] = None,
    clock: Callable[[], float] = time.time,
) -> RunIdentity:
    """This start's identity of the run: the stored one, or a new one (after clearing, when forced).

    ``force_before`` is an on-demand start's ``STATBUS_FORCE``: start over unless
    the run was started at or after that time (then it is the very run the
    forcing training began, and a later on-demand start of it continues it).
    Call with the run's pidfile held, before the journal is opened.
    """
    stored = read_identity(layout) if not force else None
    if force_before is not None and not force:
        if stored is None or float(stored["start_time"]) < force_before:
            force, stored = True, None
    if force:
        removed = clear_run_outputs(layout)
        if removed:
            logger.warning(
                "--force: run %s started over; removed %d file(s)/folder(s) of its earlier outputs: %s%s",
                layout.run_id, len(removed), ", ".join(removed[:20]), " ..." if len(removed) > 20 else "",
            )
    if stored is not None:
        return RunIdentity(layout.run_id, float(stored["start_time"]), dict(stored["run_options"]), True, False)
    start = clock()
    options = RunOptions.create(layout.run_id, layout.results_dir, start_time=start).as_dict()
    options.pop("plugin_options", None)
    _write_identity(layout, {
        "version": IDENTITY_VERSION,
        "run_id": layout.run_id,
        "start_time": start,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
        "run_options": options,
    })
    return RunIdentity(layout.run_id, start, options, False, force)
