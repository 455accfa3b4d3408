"""The ``mlflow`` writer: the run's summaries as MLflow metrics, through ``MlflowClient``.

Off until asked for (``[plugins.mlflow] enabled = true``, or ``STATBUS_MLFLOW=1``); needs
``pip install 'statbus[mlflow]'``.  Configured as MLflow's users configure it:
``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME``, which the options ``tracking_uri`` and
``experiment_name`` override (``artifact_location`` is used when the experiment is created).

Mapping:

* one MLflow run per statbus run, named after the run id and tagged ``statbus.run_key``
  (:func:`.tracker_common.tracker_run_key`), found again by that tag after any restart;
* each summary's keys as metrics ``<category>/<key>`` at the summary's step (MLflow keeps a
  step per metric), the aggregated value (sum for SUM, else the mean; a HISTOGRAM key as its
  mean: MLflow has no histogram type);
* HYPERPARAMETERS as params ``<category>.a.b.c`` (values cut to MLflow's 6,000 characters;
  a param MLflow holds already with another value is left as it is and logged as a warning:
  MLflow params cannot change);
* a TEXT property as the text artifact ``text/<category>/<tag>/step_<step>.txt``.

Exactly once: every ``log_batch`` of metrics ends with the marker metric
``statbus/journal_position`` (step: the journal position of the last summary in the batch;
value: how many of that summary's metrics the run holds with it), stored in the same
transaction.  ``log_batch`` returns once MLflow stored the batch, and ``flush()`` (called
by the worker host before it commits its cursor) sends every pending metric; a new worker
reads the marker back and skips what the run holds, so what a killed worker sent is there
once and what it had not sent is delivered again from the journal.  (A step cannot tell a
replay: a late ``SummaryWriter`` value is a second summary at a step already written.)
Params and text artifacts are idempotent (the same value, the same path).  The per-run lock of
:mod:`.tracker_common` keeps a new worker out until the old one is gone.

MLflow's fluent API (``mlflow.log_metric``) is not used: it keeps an active run per
process, which a forked child silently replaces by a new one.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Dict, List, Optional, Tuple

from ..delivery import journal_position
from ..errors import PluginError
from ..settings import RunOptions
from ..stats import StatsPropertyType, StatsSummary, StatsWriter
from .tracker_common import flatten, scalar, take_lock, tracker_dir, tracker_run_key

logger = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE_CHARS = 6000
MAX_KEY_CHARS = 250
RUN_KEY_TAG = "statbus.run_key"
RUN_ID_TAG = "statbus.run_id"
POSITION_METRIC = "statbus/journal_position"
"""The marker metric: at step P (a journal position), value n (metrics of that summary stored)."""
INSTALL_HINT = "pip install 'statbus[mlflow]'"

_BAD_CHARS = re.compile(r"[^\w./\- :]")


def metric_name(name: str) -> str:
    """``name`` as a valid MLflow metric or param name (same input → same name)."""
    clean = _BAD_CHARS.sub("_", name)
    # MLflow refuses names that are not unique as file paths ("a//b", "./a", "a/").
    parts = [part if part not in ("", ".", "..") else "_" for part in clean.split("/")]
    return "/".join(parts)[:MAX_KEY_CHARS]


class MlflowWriter(StatsWriter):
    def __init__(self, client: Any, run_id: str, lock_fd: Optional[int] = None) -> None:
        self.client = client
        self.run_id = run_id
        self.lock_fd = lock_fd
        """The run's tracker lock (:func:`.tracker_common.take_lock`), released by :meth:`close`."""
        self.stored: Tuple[int, int] = (-1, 0)
        """(journal position P, n): the run holds the first n metrics of the summary at P and all before it."""
        self.params: Dict[str, str] = {}
        self._pending: List[Tuple[Any, Optional[Tuple[int, int]]]] = []
        from mlflow.entities import Metric, Param

        self._metric, self._param = Metric, Param
        self._read_back()

    def _read_back(self) -> None:
        """What the run holds already: the highest position marker, the params."""
        run = self.client.get_run(self.run_id)
        for metric in run.data._metric_objs:  # the latest point of each metric: highest step, then value
            if metric.key == POSITION_METRIC:
                self.stored = (int(metric.step), int(metric.value))
        self.params = dict(run.data.params)
        if self.stored[0] >= 0:
            logger.info("mlflow: run %s holds the summaries up to journal position %d; logging what follows",
                        self.run_id, self.stored[0])

    def write_stats(self, category: str, values: Dict[str, StatsSummary], step: int) -> None:
        position = journal_position()
        done = 0
        if position is not None:
            if position < self.stored[0]:
                return
            if position == self.stored[0]:
                done = self.stored[1]  # a kill between two batches of one summary: the rest of it
        now = int(time.time() * 1000)
        count = 0
        for key, summary in values.items():
            value = scalar(summary)
            if value is None:
                continue
            count += 1
            if count > done:
                metric = self._metric(metric_name(f"{category}/{key}"), value, now, step)
                self._pending.append((metric, None if position is None else (position, count)))
        if len(self._pending) >= MAX_METRICS_PER_BATCH:
            self.flush()

    def add_property(self, category: str, property_type: StatsPropertyType, value: Any) -> None:
        if property_type == StatsPropertyType.HYPERPARAMETERS:
            self._log_params(category, value)
        elif property_type == StatsPropertyType.TEXT:
            if isinstance(value, dict) and isinstance(value.get("tag"), str) and isinstance(value.get("text"), str):
                step = value.get("step") if type(value.get("step")) is int else 0
                path = f"text/{metric_name(category)}/{metric_name(value['tag'])}/step_{step:09d}.txt"
                self.client.log_text(self.run_id, value["text"], path)  # same path again: overwritten, not doubled

    def _log_params(self, category: str, value: Any) -> None:
        new = []
        for key, item in flatten(value if isinstance(value, dict) else {"value": value}, metric_name(category)):
            name = metric_name(key)
            text = str(item)[:MAX_PARAM_VALUE_CHARS]
            held = self.params.get(name)
            if held is None:
                new.append(self._param(name, text))
                self.params[name] = text
            elif held != text:
                logger.warning("mlflow: param %s is %r in run %s already; MLflow params cannot change, %r not logged",
                               name, held, self.run_id, text)
        for start in range(0, len(new), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=new[start:start + MAX_PARAMS_PER_BATCH])

    def flush(self) -> None:
        # Each batch carries a marker metric, stored in the same transaction as the batch's
        # metrics (MLflow stores a batch's tags in another): the next worker reads it back.
        while self._pending:
            batch = self._pending[:MAX_METRICS_PER_BATCH - 1]
            metrics = [metric for metric, _ in batch]
            mark = batch[-1][1]
            if mark is not None:
                metrics.append(self._metric(POSITION_METRIC, float(mark[1]), metrics[-1].timestamp, mark[0]))
            self.client.log_batch(self.run_id, metrics=metrics)
            del self._pending[:len(batch)]
            if mark is not None:
                self.stored = mark

    def close(self) -> None:
        try:
            self.flush()
            self.client.set_terminated(self.run_id)
        finally:
            if self.lock_fd is not None:
                os.close(self.lock_fd)
                self.lock_fd = None


def find_or_create_run(client: Any, experiment_id: str, run_key: str, run_name: str) -> str:
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'", max_results=10, order_by=["attributes.start_time ASC"]
    )
    if found:
        run = found[0]
        if run.info.status != "RUNNING":
            client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id
    run = client.create_run(experiment_id, run_name=run_name, tags={RUN_KEY_TAG: run_key, RUN_ID_TAG: run_name})
    return run.info.run_id


def get_mlflow_writer(run_options: RunOptions) -> List[StatsWriter]:
    """Registration function of the ``mlflow`` plugin (options: ``tracking_uri``,
    ``experiment_name``, ``artifact_location``)."""
    options = run_options.plugin_options
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise PluginError("mlflow", f"mlflow is not installed ({exc}): {INSTALL_HINT}") from None
    lock = take_lock(tracker_dir(run_options, "mlflow"))
    client = MlflowClient(tracking_uri=options.get("tracking_uri") or None)
    name = options.get("experiment_name") or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        experiment_id = client.create_experiment(name, artifact_location=options.get("artifact_location"))
    run_id = find_or_create_run(client, experiment_id, tracker_run_key(run_options), run_options.run_id)
    logger.info("mlflow: logging to run %s (%s) of experiment %r at %s", run_id, run_options.run_id, name,
                client.tracking_uri if hasattr(client, "tracking_uri") else "?")
    return [MlflowWriter(client, run_id, lock)]
