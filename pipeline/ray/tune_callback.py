"""Ray Tune trial results → statbus summaries: :class:`StatbusCallback`.

Tune calls its callbacks in the driver, once per result a trial reports.  Each
trial is one category (the trial's name, as Tune shows it); each reported number
is one key; ``training_iteration`` is the step.  A trial's config goes in once as
its hyperparameters.  The values take the trainer client's path, so a sweep's
trials reach every plugin of the run's one collector, crash-isolated.

Media as Ray's ``TBXLoggerCallback`` logs them: a numpy array of 3 dimensions is an
image (CHW), of 4 an image batch (NCHW), of 5 a video (NTCHW, 20 fps) — copied here,
encoded in the tensorboard writer's worker.  At a trial's end (completed or failed) its
hyperparameters (``evaluated_params``: numbers, strings, bools) and its last numbers go
as the HParams plugin's summaries into the trial's own category, as tensorboardX writes
them, so TensorBoard's HParams dashboard lists each trial as a session.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

from ...plugins.media import MediaKind
from ...plugins.stats import StatsPropertyType
from .. import image_calls as images
from ..summary_writer import HPARAMS_TAG, hparams_media
from ..trainer.reporter import StatsReporter, add_media, flush
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


def _leaves(result: Dict[str, Any], prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """``(key, value)`` for every value of ``result`` that is no dict; nested keys joined by ``/``."""
    for key, value in result.items():
        name = f"{prefix}{key}"
        if not prefix and name in SKIPPED_KEYS:
            continue
        if isinstance(value, dict):
            yield from _leaves(value, name + "/")
        else:
            yield name, value


def _numbers(result: Dict[str, Any]) -> Iterator[Tuple[str, float]]:
    """``(key, value)`` for every finite real number of ``result``."""
    for name, value in _leaves(result):
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            number = float(value)
            if math.isfinite(number):
                yield name, number


VIDEO_FPS = 20
"""The frame rate ``TBXLoggerCallback`` gives a 5-D array's video."""
_MEDIA = {3: ("CHW", MediaKind.IMAGE), 4: ("NCHW", MediaKind.IMAGES)}


def _arrays(result: Dict[str, Any]) -> Iterator[Tuple[str, Any]]:
    """``(key, array)`` for every non-empty numpy array of 3, 4 or 5 dimensions of ``result``."""
    for name, value in _leaves(result):
        if type(value).__name__ == "ndarray" and getattr(value, "ndim", 0) in (3, 4, 5) and value.size:
            yield name, value


def _media(key: str, array: Any) -> Any:
    if array.ndim == 5:
        return images.video_media(key, array, VIDEO_FPS, "NTCHW")
    dataformats, kind = _MEDIA[array.ndim]
    return images.image_media(key, array, dataformats, kind)


def _hparams(params: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``evaluated_params`` flattened (``a/b``), keeping what tensorboardX writes a value of:
    str, bool, int, float (numpy numbers as theirs)."""
    found: Dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found.update(_hparams(value, name + "/"))
            continue
        if type(value).__module__ == "numpy" and hasattr(value, "item"):
            value = value.item()
        if isinstance(value, (str, bool, int, float)):
            found[name] = value
    return found


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
        self._last: Dict[str, Dict[str, float]] = {}
        """category → the numbers of its trial's last result (the HParams metrics at its end)."""
        self._refused: set = set()

    def __getstate__(self) -> Dict[str, Any]:
        # Tune may pickle its callbacks with the experiment's state; reporters are per process.
        state = dict(self.__dict__)
        state["_reporters"] = {}
        return state

    def setup(self, **info: Any) -> None:
        if self.run_id is not None:
            configure(run_id=self.run_id, ray=self.ray)

    def _name(self, trial: Any) -> str:
        return self.category(trial) if self.category is not None else str(trial)

    def _reporter(self, trial: Any) -> StatsReporter:
        name = self._name(trial)
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
        last = self._last[self._name(trial)] = {}
        for key, value in _numbers(result):
            if self.metrics is None or key in self.metrics:
                reporter.add_stat(key, value)
                last[key] = value
        reporter.write_stats(int(step))
        for key, array in _arrays(result):
            if self.metrics is None or key in self.metrics:
                self._send(trial, key, lambda: _media(key, array), int(step))

    def _send(self, trial: Any, key: str, make: Callable[[], Any], step: int) -> None:
        """One media value of the trial; one that cannot be sent is logged (once per key), never raised
        into Tune."""
        try:
            add_media(self._name(trial), key, make(), step)
        except (TypeError, ValueError) as exc:
            if key not in self._refused:
                self._refused.add(key)
                logger.warning("statbus: trial %s's %r is not logged: %s", trial, key, exc)

    def _end(self, trial: Any) -> None:
        params = _hparams(dict(getattr(trial, "evaluated_params", None) or {}))
        last = self._last.pop(self._name(trial), None)
        if params and last:  # as TBXLoggerCallback: a trial with no parameters or no results has no session
            self._send(trial, HPARAMS_TAG, lambda: hparams_media(params, last, bools=True), 0)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        flush(self.flush_timeout)
