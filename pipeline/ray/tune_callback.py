"""Ray Tune trial results → statbus summaries: :class:`StatbusCallback`.

Tune calls its callbacks in the driver, once per result a trial reports.  Each
trial is one category (the trial's name, as Tune shows it); each reported number
is one key; ``training_iteration`` is the step.  A trial's config goes in once as
its hyperparameters.  The values take the trainer client's path, so a sweep's
trials reach every plugin of the run's one collector, crash-isolated.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

from ...plugins.stats import StatsPropertyType
from ..trainer.reporter import StatsReporter, flush
from ..trainer.config import configure
from ..trainer.ray_discovery import import_ray

logger = logging.getLogger(__name__)
_tune = import_ray("ray.tune")
_result = import_ray("ray.tune.result")

STEP_KEY = _result.TRAINING_ITERATION
SKIPPED_KEYS = frozenset(_result.AUTO_RESULT_KEYS) | {
    _result.DONE, _result.TRIAL_ID, _result.EXPERIMENT_TAG, _result.SHOULD_CHECKPOINT, "date",
}
"""What Tune adds to every result by itself (times, pids, hosts, ids): not the trainable's metrics."""


def _numbers(result: Dict[str, Any], prefix: str = "") -> Iterator[Tuple[str, float]]:
    """``(key, value)`` for every finite real number of ``result``; nested keys joined by ``/``."""
    for key, value in result.items():
        name = f"{prefix}{key}"
        if not prefix and name in SKIPPED_KEYS:
            continue
        if isinstance(value, dict):
            yield from _numbers(value, name + "/")
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            number = float(value)
            if math.isfinite(number):
                yield name, number


class StatbusCallback(_tune.Callback):
    """Sends every trial's reported results to the run's collector as summaries.

    ``run_id`` (with ``ray``, default True): configure statbus in the driver to find
    that run's collector actor; None keeps the process's own configuration
    (``configure()`` / ``STATBUS_*``).  ``metrics``: only these keys (default: every
    number the trainable reported).  ``category``: the category of a trial (default:
    its name).  ``flush_timeout``: seconds the end of the experiment waits for the
    collector to acknowledge everything.
    """

    def __init__(
        self,
        run_id: Optional[str] = None,
        *,
        ray: bool = True,
        metrics: Optional[Sequence[str]] = None,
        category: Optional[Callable[[Any], str]] = None,
        flush_timeout: float = 30.0,
    ) -> None:
        self.run_id = run_id
        self.ray = ray
        self.metrics = frozenset(metrics) if metrics is not None else None
        self.category = category
        self.flush_timeout = flush_timeout
        self._reporters: Dict[str, StatsReporter] = {}

    def __getstate__(self) -> Dict[str, Any]:
        # Tune may pickle its callbacks with the experiment's state; reporters are per process.
        state = dict(self.__dict__)
        state["_reporters"] = {}
        return state

    def setup(self, **info: Any) -> None:
        if self.run_id is not None:
            configure(run_id=self.run_id, ray=self.ray)

    def _reporter(self, trial: Any) -> StatsReporter:
        name = self.category(trial) if self.category is not None else str(trial)
        reporter = self._reporters.get(name)
        if reporter is None:
            reporter = self._reporters[name] = StatsReporter(name)
        return reporter

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        try:
            self._reporter(trial).add_property(StatsPropertyType.HYPERPARAMETERS, dict(trial.config or {}))
        except ValueError as exc:  # a config too big for one property: the metrics still go
            logger.warning("statbus: trial %s's config is not sent as hyperparameters: %s", trial, exc)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: Dict[str, Any], **info: Any) -> None:
        step = result.get(STEP_KEY)
        if not isinstance(step, numbers.Integral):
            return
        reporter = self._reporter(trial)
        for key, value in _numbers(result):
            if self.metrics is None or key in self.metrics:
                reporter.add_stat(key, value)
        reporter.write_stats(int(step))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        flush(self.flush_timeout)
