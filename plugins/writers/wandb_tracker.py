"""The ``wandb`` writer: the run's summaries in a Weights & Biases run.

Off until asked for (``[plugins.wandb] enabled = true``, or ``STATBUS_WANDB=1``); needs
``pip install 'statbus[wandb]'``.  Configured as W&B's users configure it: ``WANDB_PROJECT``,
``WANDB_ENTITY``, ``WANDB_MODE``, ``WANDB_DIR`` (and ``WANDB_API_KEY``), which the options
``project``, ``entity``, ``mode`` and ``dir`` override; ``settings`` (a table) goes to
``wandb.Settings`` over the defaults here: no console capture and no system metrics (this is
the writer's process, not the training's).  Without ``dir`` nor ``WANDB_DIR`` the files go to
the run's folder, ``<results_dir>/<run_id>/wandb/``.

Mapping:

* one W&B run per statbus run: id ``<run_id>-<8 hex>`` (:func:`.tracker_common.tracker_run_key`),
  named after the run id, ``resume="allow"``, so every worker and collector of the run logs
  into the same W&B run;
* one history row per summary: ``<category>/<key>`` = the aggregated value (sum for SUM, else
  the mean), for a HISTOGRAM key also ``<category>/<key>_hist``, a ``wandb.Histogram`` of its
  finite values (as ML-Agents' TensorBoard writer: ML-Agents records Cumulative Reward as a
  HISTOGRAM, and its curve is the mean), and ``<category>/step`` = the summary's step, declared with
  ``define_metric`` as the x axis of ``<category>/*`` (behaviors step differently);
* HYPERPARAMETERS as the run config, ``config[<category>]``; a TEXT property as
  ``wandb.Html`` at ``<category>/<tag>`` in a row of its own at its step.

Exactly once: each row is written to the outbox (:mod:`.wandb_outbox`) before
``run.log(row, step=n)``, with ``n`` the row's W&B ``_step``.  A restarted worker waits for
its predecessor and that one's ``wandb-core`` to end, reads back the next ``_step`` the run
holds (offline: from the run's earlier ``.wandb`` files, read with wandb's own reader;
online: the resumed run's step), logs again the outbox rows from there on at their own
``_step``, and skips every call the outbox holds when the journal delivers it again (a call's
mark is its entry's journal position and its ordinal in that entry: a step cannot tell a
replay from a late ``SummaryWriter`` value, a second summary at a step already written).
Offline, each worker start writes one ``offline-run-*-<id>`` folder; ``wandb sync`` them all
(in order) to upload the run.
"""

from __future__ import annotations

import glob
import html
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import psutil

from ..errors import PluginError
from ..settings import RunOptions
from ..stats import StatsAggregationMethod, StatsPropertyType, StatsSummary, StatsWriter
from .tracker_common import CallMarks, finite_values, scalar, take_lock, tracker_dir, tracker_run_key
from .wandb_outbox import Outbox

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'statbus[wandb]'"
CORE_EXIT_TIMEOUT = 30.0
"""Seconds a new worker waits for its predecessor's wandb-core to finish writing, then ends it."""
DEFAULT_SETTINGS = {"console": "off", "x_disable_stats": True, "init_timeout": 30.0}
"""``init_timeout`` below the worker's 60 s ``start_timeout``: W&B out of reach makes the plugin
FAILED with wandb's own error in ``statbus status`` (its backlog kept in the journal for a
``statbus restart wandb``), not a worker killed as hung and started again and again."""
HISTOGRAM_SUFFIX = "_hist"
"""A HISTOGRAM key's distribution goes beside its mean, as ML-Agents' TensorBoard writer puts it."""


def wandb_files_dir(options: Dict[str, Any], write_path: str) -> str:
    return str(options.get("dir") or os.environ.get("WANDB_DIR") or write_path)


def offline_next_step(files_dir: str, run_key: str) -> int:
    """1 + the highest history ``_step`` in this run's offline ``.wandb`` files (0 when none)."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal.datastore import DataStore

    highest = -1
    for path in glob.glob(os.path.join(files_dir, "wandb", f"offline-run-*-{run_key}", f"run-{run_key}.wandb")):
        store = DataStore()
        try:
            store.open_for_scan(path)
        except Exception as exc:  # noqa: BLE001 — an empty or damaged file holds nothing we can count on
            logger.warning("wandb: cannot read %s: %r", path, exc)
            continue
        try:
            while True:
                try:
                    data = store.scan_data()
                except Exception as exc:  # noqa: BLE001 — a torn tail ends what the file holds
                    logger.warning("wandb: %s ends in a damaged record: %r", path, exc)
                    break
                if data is None:
                    break
                record = wandb_internal_pb2.Record()
                record.ParseFromString(data)
                if record.WhichOneof("record_type") == "history":
                    highest = max(highest, record.history.step.num)
        finally:
            store.close()
    return highest + 1


def _wait_for_old_core(pid_file: str, timeout: float) -> None:
    """The previous worker's wandb-core may still be writing its file: let it end (then end it)."""
    try:
        with open(pid_file, encoding="utf-8") as handle:
            known = json.load(handle)
        process = psutil.Process(int(known["pid"]))
        if abs(process.create_time() - float(known["create_time"])) > 0.01:
            return  # the pid was reused by another process
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return
    try:
        process.wait(timeout)
    except psutil.TimeoutExpired:
        logger.warning("wandb: the previous worker's wandb-core (pid %d) is still running after %.0f s; ending it",
                       process.pid, timeout)
        process.kill()
        process.wait(10)
    except psutil.Error:
        pass


def _remember_core(pid_file: str) -> None:
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name().startswith("wandb-core"):
                with open(pid_file + ".tmp", "w", encoding="utf-8") as handle:
                    json.dump({"pid": child.pid, "create_time": child.create_time()}, handle)
                os.replace(pid_file + ".tmp", pid_file)
                return
        except psutil.Error:
            continue


def _wait_for_a_new_second(files_dir: str, run_key: str) -> None:
    """wandb names an offline run's folder by the second: a restart within the same second
    would write into (and truncate) its predecessor's file."""
    for _ in range(20):
        stamp = time.strftime("%Y%m%d_%H%M%S")
        if not os.path.exists(os.path.join(files_dir, "wandb", f"offline-run-{stamp}-{run_key}")):
            return
        time.sleep(0.1)


class WandbWriter(StatsWriter):
    def __init__(self, run: Any, outbox: Outbox, next_step: int, lock_fd: Optional[int] = None) -> None:
        import wandb

        self._wandb = wandb
        self.lock_fd = lock_fd
        """The run's tracker lock (:func:`.tracker_common.take_lock`), released by :meth:`close`."""
        self.run = run
        self.outbox = outbox
        self.marks = CallMarks()
        self.highest: Tuple[int, int] = (-1, -1)
        """The highest call mark the outbox holds: calls at or below it are replays."""
        self._defined: set = set()
        self._config: Dict[str, Any] = {}
        self.next_row = next_step
        self._replay(next_step)

    def _replay(self, next_step: int) -> None:
        """Learn the outbox's highest call mark and config; log again the rows the W&B run does not hold."""
        again = 0
        for entry in self.outbox.entries:
            if entry.get("mark"):
                self.highest = max(self.highest, tuple(entry["mark"]))
            if "config" in entry:
                self._config.update(entry["config"])
                continue
            if entry["row"] >= next_step:
                self._send(entry)
                again += 1
            self.next_row = max(self.next_row, entry["row"] + 1)
        if self._config:
            self.run.config.update(self._config, allow_val_change=True)
        if again:
            logger.info("wandb: logged %d rows again that run %s did not hold", again, self.run.id)

    def _define(self, category: str) -> None:
        if category not in self._defined:
            self.run.define_metric(f"{category}/step")
            self.run.define_metric(f"{category}/*", step_metric=f"{category}/step")
            self._defined.add(category)

    def _send(self, entry: Dict[str, Any]) -> None:
        category = entry["category"]
        self._define(category)
        row: Dict[str, Any] = {}
        for name, value in entry["values"].items():
            if isinstance(value, dict):
                if "histogram" in value:
                    value = self._wandb.Histogram(value["histogram"])
                else:
                    value = self._wandb.Html(value["html"], inject=False)
            row[name] = value
        row[f"{category}/step"] = entry["step"]
        self.run.log(row, step=entry["row"], commit=True)

    def _is_replay(self, mark: Optional[Tuple[int, int]]) -> bool:
        return mark is not None and mark <= self.highest

    def _log(self, mark: Optional[Tuple[int, int]], category: str, step: int, values: Dict[str, Any]) -> None:
        entry = {"row": self.next_row, "mark": mark, "category": category, "step": step, "values": values}
        self.outbox.append(entry)  # before W&B sees it: a kill in between is repaired from here
        self._send(entry)
        self.next_row += 1

    def write_stats(self, category: str, values: Dict[str, StatsSummary], step: int) -> None:
        mark = self.marks.next()
        if self._is_replay(mark):
            return
        row: Dict[str, Any] = {}
        for key, summary in values.items():
            name = f"{category}/{key}"
            value = scalar(summary)
            if value is not None:
                row[name] = value
            if summary.aggregation_method is StatsAggregationMethod.HISTOGRAM:
                finite = finite_values(summary)
                if finite:
                    row[f"{name}{HISTOGRAM_SUFFIX}"] = {"histogram": finite}
        if row:
            self._log(mark, category, step, row)

    def add_property(self, category: str, property_type: StatsPropertyType, value: Any) -> None:
        if property_type not in (StatsPropertyType.HYPERPARAMETERS, StatsPropertyType.TEXT):
            return
        mark = self.marks.next()  # taken for every such call, written or not: a replay makes the same calls
        if self._is_replay(mark):
            return
        if property_type == StatsPropertyType.HYPERPARAMETERS:
            if self._config.get(category) != value:
                self.outbox.append({"mark": mark, "config": {category: value}})
                self.run.config.update({category: value}, allow_val_change=True)
                self._config[category] = value
        elif isinstance(value, dict) and isinstance(value.get("tag"), str) and isinstance(value.get("text"), str):
            step = value.get("step") if type(value.get("step")) is int else 0
            name = f"{category}/{value['tag']}"
            self._log(mark, category, step, {name: {"html": f"<pre>{html.escape(value['text'])}</pre>"}})

    def close(self) -> None:
        try:
            self.run.finish()
            self._wandb.teardown()  # wandb-core has written the .wandb file once this returns
        finally:
            self.outbox.close()
            if self.lock_fd is not None:
                os.close(self.lock_fd)
                self.lock_fd = None


def get_wandb_writer(run_options: RunOptions) -> List[StatsWriter]:
    """Registration function of the ``wandb`` plugin (options: ``project``, ``entity``, ``mode``,
    ``dir``, ``id``, ``settings``, ``core_exit_timeout``: seconds to wait for the previous
    worker's wandb-core, default 30)."""
    options = dict(run_options.plugin_options)
    try:
        import wandb
    except ImportError as exc:
        raise PluginError("wandb", f"wandb is not installed ({exc}): {INSTALL_HINT}") from None
    state = tracker_dir(run_options, "wandb")
    lock = take_lock(state)
    pid_file = os.path.join(state, "core.json")
    _wait_for_old_core(pid_file, float(options.get("core_exit_timeout", CORE_EXIT_TIMEOUT)))
    run_key = str(options.get("id") or tracker_run_key(run_options))
    files_dir = wandb_files_dir(options, run_options.checkpoint_settings.write_path)
    os.makedirs(files_dir, exist_ok=True)
    mode = str(options.get("mode") or os.environ.get("WANDB_MODE") or "online")
    offline = mode in ("offline", "dryrun")
    next_step: Optional[int] = None
    if offline:
        next_step = offline_next_step(files_dir, run_key)
        _wait_for_a_new_second(files_dir, run_key)
    settings = wandb.Settings(**{**DEFAULT_SETTINGS, **dict(options.get("settings") or {})})
    init: Dict[str, Any] = {key: options[key] for key in ("project", "entity") if options.get(key)}
    if options.get("mode"):
        init["mode"] = mode
    run = wandb.init(id=run_key, name=run_options.run_id, resume="allow", dir=files_dir, settings=settings, **init)
    _remember_core(pid_file)
    if next_step is None:
        next_step = int(run.step)  # online: the resumed run's next step, as the server holds it
    outbox = Outbox(os.path.join(state, "outbox.jsonl"))
    logger.info("wandb: logging to run %s (%s mode), from row %d", run_key, mode, next_step)
    return [WandbWriter(run, outbox, next_step, lock)]
