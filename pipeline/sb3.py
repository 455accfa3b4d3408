"""``StatbusOutputFormat``: a Stable-Baselines3 ``KVWriter`` that logs through statbus.

::

    from stable_baselines3.common.logger import Logger, HumanOutputFormat
    from statbus.pipeline.sb3 import StatbusOutputFormat
    model.set_logger(Logger(folder, [HumanOutputFormat(sys.stdout), StatbusOutputFormat(folder)]))

Each ``Logger.dump(step)`` becomes one summary (``write_stats(<folder's name>, {key:
StatsSummary}, step)``), keys as SB3 names them (``rollout/ep_rew_mean``,
``train/loss``, ...).  The folder is a ``log_dir`` of :class:`.SummaryWriter`, so the
event files land where SB3's own ``TensorBoardOutputFormat`` puts them.  Keys
excluded for ``"tensorboard"`` (SB3's ``time/*`` counters, ``train/n_updates``) or
for ``"statbus"`` are left out, as SB3's TensorBoard format leaves them out.
Numbers are scalars, strings texts, arrays and tensors histograms; SB3's ``Video``,
``Figure`` and ``Image`` go to :meth:`.SummaryWriter.add_video`, ``add_figure`` and
``add_image`` (copied or pickled here, encoded in the tensorboard writer's worker); an
``HParam`` becomes the HParams plugin's summaries in the folder itself at step 0, as SB3
writes them (not in a ``time.time()`` sub-run; its ``metric_dict`` values are SB3's
placeholders, so no scalars are logged from them), and a HYPERPARAMETERS property.

stable-baselines3 is imported when this module is (never by ``statbus.pipeline``);
without it the class still works, as a plain object with SB3's two methods.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

from .summary_writer import SummaryWriter, hparams_media

logger = logging.getLogger(__name__)

EXCLUDED_FOR = ("statbus", "tensorboard")

try:  # a real KVWriter where SB3 is installed, so isinstance checks hold
    from stable_baselines3.common.logger import Figure, HParam, Image, KVWriter, Video
except ImportError:  # pragma: no cover — SB3 is an optional extra
    KVWriter = object  # type: ignore[misc,assignment]
    Figure = HParam = Image = Video = None  # type: ignore[misc,assignment]


class StatbusOutputFormat(KVWriter):  # type: ignore[misc,valid-type]
    """SB3 output format: one statbus summary per dump."""

    def __init__(self, folder: str) -> None:
        self.writer = SummaryWriter(log_dir=folder)
        self._skipped: set = set()

    def write(self, key_values: Dict[str, Any], key_excluded: Dict[str, Optional[Tuple[str, ...]]],
              step: int = 0) -> None:
        writer = self.writer
        for key, value in key_values.items():
            excluded = key_excluded.get(key)
            if excluded is not None and any(name in excluded for name in EXCLUDED_FOR):
                continue
            if isinstance(value, str):
                writer.add_text(key, value, step)
            elif HParam is not None and isinstance(value, HParam):
                media = hparams_media(value.hparam_dict, value.metric_dict)
                writer._add_hparams_to(writer._category, value.hparam_dict, media, 0)  # noqa: SLF001 — its door
            elif Video is not None and isinstance(value, Video):
                writer.add_video(key, value.frames, step, value.fps)
            elif Figure is not None and isinstance(value, Figure):
                writer.add_figure(key, value.figure, step, close=value.close)
            elif Image is not None and isinstance(value, Image):
                writer.add_image(key, value.image, step, dataformats=value.dataformats)
            elif getattr(value, "ndim", 0) or isinstance(value, (list, tuple)):
                writer.add_histogram(key, value, step)
            elif isinstance(value, (int, float)) or hasattr(value, "__float__"):
                writer.add_scalar(key, value, step)
            elif key not in self._skipped:
                self._skipped.add(key)
                logger.info("statbus: SB3 key %r holds a %s, which statbus does not log", key, type(value).__name__)
        writer.flush()  # the dump's step closes: one summary

    def close(self) -> None:
        self.writer.close()
