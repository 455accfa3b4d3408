"""``SummaryWriter``: torch's ``torch.utils.tensorboard.SummaryWriter`` calls, sent to statbus.

Where the files land (the mapping, decided once here and in the README).  torch
writes a ``log_dir``'s event files into ``log_dir`` itself, ``add_scalars``'
sub-runs into ``log_dir/<main_tag with "/" → "_">_<tag>`` and ``add_hparams``'
into ``log_dir/<run_name or time.time()>``.  statbus's tensorboard writer puts a
category's event files in ``<results_dir>/<run_id>/<category>/``.  So::

    log_dir (absolute)  = <results_dir>/<run_id>/<category>
    results_dir, run_id = the parent of log_dir's parent, the name of log_dir's parent
    category            = the name of log_dir ("Dec02_01-30-00_host"); a sub-run is
                          "<name>/<sub-run>"

torch's default ``runs/<Mon><DD>_<HH-MM-SS>_<host><comment>`` is thus category
``<Mon>..<comment>`` of run ``runs`` under the working directory: every
experiment under ``runs/`` shares one collector, whose own files sit beside them
(``runs/statbus/``, ``runs/stats.jsonl``, ``runs/run_logs/``; TensorBoard shows
no run for those).  One process logs to one run at a time (its trainer client is
process-wide): the log_dirs of writers open at once must share their parent directory;
once every writer is closed, a new one may log to another run.

When a step closes.  Values of one step of one category (``log_dir`` or a
sub-run) become one ``write_stats(category, {tag: StatsSummary}, step)`` for
every plugin, ``on_add_stat`` per value.  A process's step closes when it logs a
different step in that category, or at ``flush()``, ``close()`` or exit; the
summary is made once *every* process logging that category has closed the step
(see :mod:`.collector.step_merge`), so N processes logging one tag at one step give one
point holding N values.  A process is such a member from its ``SummaryWriter``'s
construction on: the constructor waits (at most :data:`JOIN_WAIT_SECS`) for the collector
to take its join.  Values that arrive for a step already written — from a process whose
writer was made after other processes closed that step — are a second summary at that
step, never dropped.  Scalars are aggregated AVERAGE (one value per process
and step: ``aggregated_value`` is the mean over processes), histograms HISTOGRAM.

Nothing here imports torch but ``add_graph``, whose trace is torch's own.  Bad input raises
at the call, as ``add_stat`` does (``TypeError``/``ValueError`` naming the tag; a media value
over 64 MiB ``ValueError`` naming its size; ``add_graph``'s trace and ``add_onnx_graph``'s
file read raise what they raise under torch's writer); nothing else raises into training.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional, Set

from ..plugins import ConfigError
from ..plugins.media import Media, MediaKind
from ..plugins.records import MAX_MARKED_STEP, MAX_NAME_LENGTH, step_marker
from ..plugins.records import STEPPED_MARK as MARK
from ..plugins.stats import StatsAggregationMethod, StatsPropertyType
from . import image_calls as images
from . import plugin_data_calls as calls
from .collector.step_merge import JOIN, LEAVE
from .layout import RunLayout
from .trainer import config as trainer_config
from .trainer import reporter
from .trainer.reporter import StatsReporter, plain_value

logger = logging.getLogger(__name__)

TORCH_LAYOUT_ARGS = ("--set", "tensorboard.options.layout=torch")
"""Given to a collector this module starts: the tensorboard writer writes a histogram under
its own tag, as torch does, instead of ML-Agents' ``<tag>_hist`` beside a mean scalar."""
JOIN_WAIT_SECS = 5.0
"""A SummaryWriter's constructor waits at most this long for the collector to take its join."""
HANDOFF_SECS = 0.05
"""Gathered values go to the trainer client at most this often (the sender's own batch interval)."""
MAX_CATEGORY_LENGTH = MAX_NAME_LENGTH - len(MARK + JOIN)
"""A category's wire names add up to three characters (see :mod:`.collector.step_merge`)."""
_AVERAGE = StatsAggregationMethod.AVERAGE
_HISTOGRAM = StatsAggregationMethod.HISTOGRAM
HPARAMS_TAG = "_hparams_"
"""The tag of an HPARAMS media value (the hparams plugin's own tags start so)."""
_lock = threading.Lock()
_bound_run: Optional[RunLayout] = None
_live: "set[SummaryWriter]" = set()
"""Writers with open streams, held until close() (as torch's writer thread holds its writer), so
that exit closes their steps even when the code dropped its last reference."""


def default_log_dir(comment: str = "") -> str:
    """torch's default: ``runs/<Mon><DD>_<HH-MM-SS>_<hostname><comment>``."""
    return os.path.join("runs", datetime.now().strftime("%b%d_%H-%M-%S") + "_" + socket.gethostname() + comment)


def locate(log_dir: str) -> "tuple[RunLayout, str]":
    """``log_dir`` → (the run holding it, its category); raises ConfigError."""
    if not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError(f"statbus: log_dir must be a path, got {type(log_dir).__name__}")
    path = os.path.abspath(os.fspath(log_dir))
    run_dir, category = os.path.split(path)
    results_dir, run_id = os.path.split(run_dir)
    if not category or not run_id or MARK in path:
        raise ConfigError(f"statbus: log_dir {log_dir!r} needs a parent directory that is not the root: "
                          "its parent holds the run (e.g. log_dir='runs/exp1')")
    if len(category) > MAX_CATEGORY_LENGTH:
        raise ConfigError(f"statbus: log_dir name {category[:80]!r}... is longer than {MAX_CATEGORY_LENGTH} characters")
    return RunLayout(results_dir, run_id), category


def _bind_run(layout: RunLayout) -> None:
    """Point this process's trainer client at ``layout``'s run (once per process)."""
    global _bound_run
    with _lock:
        if _bound_run is not None:
            if _bound_run != layout:
                raise ConfigError(
                    f"statbus: this process already logs to the run {_bound_run.run_dir!r}; a SummaryWriter for "
                    f"{layout.run_dir!r} would need a second one. Put the log_dirs of one process in one "
                    "directory (e.g. runs/a and runs/b)")
            return
        current = trainer_config.current_config()
        same_run = (os.path.abspath(current.results_dir), current.run_id) == (layout.results_dir, layout.run_id)
        if not same_run or current.collector_args != TORCH_LAYOUT_ARGS:
            trainer_config.configure(run_id=layout.run_id, results_dir=layout.results_dir,
                                     address=current.address if same_run else None,
                                     collector_args=TORCH_LAYOUT_ARGS)
        _bound_run = layout


def _to_step(tag: str, global_step: Any) -> int:
    if global_step is None:
        return 0  # torch writes such an event at step 0
    if type(global_step) is int and 0 <= global_step <= MAX_MARKED_STEP:
        return global_step
    if isinstance(global_step, bool) or not hasattr(global_step, "__index__"):
        raise TypeError(f"statbus: global_step of {tag!r} must be an int, got {type(global_step).__name__}")
    step = global_step.__index__()
    if not 0 <= step <= MAX_MARKED_STEP:
        raise ValueError(f"statbus: global_step of {tag!r} must be >= 0 and < 2**48, got {step}")
    return step


class _Stream:
    """One TensorBoard run directory (the log_dir or a sub-run): its open step and gathered values.

    Values are gathered here (a dict get and a list append per value, no lock), each
    tag's run of one step led by a step marker, and handed to the trainer client at
    most every :data:`HANDOFF_SECS` — checked when the step changes — and at
    ``flush()``, ``close()`` and exit, with a write that says up to which step this
    process is done (see :mod:`.collector.step_merge`).  One thread at a time per
    writer: a value added while another thread hands the values over may be lost.
    """

    __slots__ = ("category", "wire", "step", "marker", "done", "values", "marked", "tags", "handed_at")

    def __init__(self, category: str) -> None:
        self.category = category
        self.wire = MARK + category
        self.step = -1
        """The open step, -1 when none is."""
        self.marker = 0.0
        self.done = -1
        """The highest step this stream closed, -1 before the first."""
        self.values: Dict[str, list] = {}
        """tag → [aggregation, marker, v, v, marker, v, ...] gathered since the last hand-over."""
        self.marked: Dict[str, int] = {}
        """tag → the step its run in ``values`` is at."""
        self.tags: Set[str] = set()
        """Tags whose name was checked already."""
        self.handed_at = time.monotonic()
        StatsReporter(self.wire + JOIN).write_stats(0)

    def at(self, step: int) -> "_Stream":
        """Make ``step`` the open one; returns self."""
        if step != self.step:
            if self.step > self.done:
                self.done = self.step
            self.step, self.marker = step, step_marker(step)
            if time.monotonic() - self.handed_at >= HANDOFF_SECS:
                self.hand_over()
        return self

    def add(self, tag: str, value: Any, aggregation: StatsAggregationMethod) -> None:
        if type(value) is not float:
            value = float(value) if type(value) is int else reporter._to_float(tag, value)  # noqa: SLF001
        entry = self.values.get(tag)
        if entry is None:
            if tag not in self.tags:
                reporter._check_name(tag, "stat key")  # noqa: SLF001 — add_stat's own check and message
                if len(self.tags) < reporter.MAX_CACHED_KEYS:
                    self.tags.add(tag)
            entry = self.values[tag] = [aggregation]
        else:
            entry[0] = aggregation  # the last one given wins, as in a period
        if self.marked.get(tag) != self.step:
            entry.append(self.marker)
            self.marked[tag] = self.step
        entry.append(value)

    def hand_over(self) -> None:
        """Give the gathered values and the step this stream is done with to the client."""
        values, self.values, self.marked = self.values, {}, {}
        self.handed_at = time.monotonic()
        if values or self.done >= 0:
            reporter.write_period(self.wire, values, self.done if self.done >= 0 else None)

    def close_step(self) -> None:
        if self.step > self.done:
            self.done = self.step
        self.step = -1
        self.hand_over()

    def leave(self) -> None:
        self.close_step()
        StatsReporter(self.wire + LEAVE).write_stats(0)


class FileWriter:
    """torch's ``SummaryWriter.file_writer``: TensorBoard protos made by the caller, into the log_dir.

    ``walltime`` is ignored, as everywhere here; ``flush()`` and ``close()`` are the writer's
    ``flush()`` (the log_dir's event files belong to the collector's tensorboard writer).
    """

    def __init__(self, writer: "SummaryWriter") -> None:
        self._writer = writer

    def get_logdir(self) -> str:
        return self._writer.log_dir

    def add_summary(self, summary: Any, global_step: Optional[int] = None, walltime: Optional[float] = None) -> None:
        """A ``Summary`` proto (torch's, tensorboardX's or tensorboard's), at ``global_step`` (default 0)."""
        tag = calls.summary_tag(summary)
        step = _to_step(tag, global_step)
        self._writer._send(tag, calls.summary_media(summary), step)  # noqa: SLF001 — its own writer

    def add_event(self, event: Any, step: Optional[int] = None, walltime: Optional[float] = None) -> None:
        """An ``Event`` proto, at ``step`` or, when None, the event's own."""
        media = calls.event_media(event)
        self._writer._send(calls.EVENT_TAG, media,  # noqa: SLF001 — its own writer
                           _to_step(calls.EVENT_TAG, getattr(event, "step", 0) if step is None else step))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.flush()


class SummaryWriter:
    """Call-compatible with ``torch.utils.tensorboard.SummaryWriter`` for what training code uses.

    ``purge_step``, ``max_queue``, ``flush_secs`` and ``filename_suffix`` are accepted and
    have no effect: the collector's tensorboard writer owns the event files (see the README,
    "From other frameworks").  ``walltime`` is accepted and ignored: events carry the time the
    collector's writer wrote them.
    """

    def __init__(self, log_dir: Optional[str] = None, comment: str = "", purge_step: Optional[int] = None,
                 max_queue: int = 10, flush_secs: int = 120, filename_suffix: str = "", *,
                 logdir: Optional[str] = None) -> None:
        if logdir is not None:  # tensorboardX's spelling
            if log_dir is not None and os.fspath(log_dir) != os.fspath(logdir):
                raise TypeError(f"statbus: SummaryWriter got log_dir={log_dir!r} and logdir={logdir!r}; give one")
            log_dir = logdir
        if not log_dir:
            log_dir = default_log_dir(comment)
        self.log_dir = os.fspath(log_dir)
        self.file_writer = FileWriter(self)
        """torch's ``file_writer``: takes TensorBoard ``Summary``/``Event`` protos (never None here)."""
        self.purge_step, self.max_queue, self.flush_secs = purge_step, max_queue, flush_secs
        self.filename_suffix = filename_suffix
        self._layout, self._category = locate(self.log_dir)
        _bind_run(self._layout)
        os.makedirs(self.log_dir, exist_ok=True)  # torch makes it at once; TensorBoard may be pointed at it
        self._lock = threading.Lock()
        self._streams: Dict[str, _Stream] = {}
        self._main: Optional[_Stream] = None
        self._stream(self._category)
        # A member from now on, not from its first values: once the collector has the join,
        # no step of this log_dir closes without this process's values (see step_merge).
        if not reporter.flush(timeout=JOIN_WAIT_SECS):
            logger.warning("statbus: the collector did not take this SummaryWriter's join for %s within %g s; "
                           "it is a member of the log_dir once it does (values of steps other processes "
                           "close before then arrive as a second summary at those steps)", self.log_dir,
                           JOIN_WAIT_SECS)

    def _stream(self, category: str) -> _Stream:
        stream = self._streams.get(category)
        if stream is None:
            if not self._streams:
                _live.add(self)
            stream = self._streams[category] = _Stream(category)
            if category == self._category:
                self._main = stream
        return stream

    def get_logdir(self) -> str:
        return self.log_dir

    @property
    def logdir(self) -> str:
        """tensorboardX's name of ``log_dir``."""
        return self.log_dir

    # --- values -------------------------------------------------------------------

    def add_scalar(self, tag: str, scalar_value: Any, global_step: Optional[int] = None,
                   walltime: Optional[float] = None, new_style: bool = False, double_precision: bool = False) -> None:
        """One value of ``tag`` at ``global_step`` (default 0)."""
        step = global_step if type(global_step) is int and 0 <= global_step <= MAX_MARKED_STEP \
            else _to_step(tag, global_step)
        stream = self._main or self._stream(self._category)
        if stream.step != step:
            stream.at(step)
        # _Stream.add, inlined for the common case (a float of a tag already logged at this step).
        entry = stream.values.get(tag) if type(scalar_value) is float else None
        if entry is not None and entry[0] is _AVERAGE and stream.marked[tag] == step:
            entry.append(scalar_value)
        else:
            stream.add(tag, scalar_value, _AVERAGE)

    def add_scalars(self, main_tag: str, tag_scalar_dict: Mapping[str, Any], global_step: Optional[int] = None,
                    walltime: Optional[float] = None) -> None:
        """torch's sub-runs: ``<log_dir>/<main_tag, "/" → "_">_<tag>``, each holding tag ``main_tag``."""
        step = _to_step(main_tag, global_step)
        if not isinstance(main_tag, str):
            raise TypeError(f"statbus: main_tag must be a str, got {type(main_tag).__name__}")
        if not isinstance(tag_scalar_dict, Mapping):
            raise TypeError(f"statbus: tag_scalar_dict of {main_tag!r} must be a dict, got {type(tag_scalar_dict).__name__}")
        prefix = f"{self._category}/{main_tag.replace('/', '_')}_"
        for tag in tag_scalar_dict:
            if not isinstance(tag, str) or not tag or "/" in tag or MARK in tag:
                raise ValueError(f"statbus: add_scalars({main_tag!r}): sub-tag {tag!r} must be a non-empty str "
                                 "without '/' (it names a directory)")
        checked = [(tag, reporter._to_float(main_tag, value)) for tag, value in tag_scalar_dict.items()]  # noqa: SLF001
        for tag, value in checked:
            self._stream(prefix + tag).at(step).add(main_tag, value, _AVERAGE)

    def add_histogram(self, tag: str, values: Any, global_step: Optional[int] = None, bins: Any = "tensorflow",
                      walltime: Optional[float] = None, max_bins: Optional[int] = None) -> None:
        """The values of one histogram (any array-like or iterable of numbers); bucketed by the writer."""
        step = _to_step(tag, global_step)
        flat = _flatten(tag, values)
        if flat:
            target = self._stream(self._category).at(step)
            target.add(tag, flat[0], _HISTOGRAM)  # the name's check and the step's marker, once
            target.values[tag].extend(flat[1:])

    def add_text(self, tag: str, text_string: str, global_step: Optional[int] = None,
                 walltime: Optional[float] = None) -> None:
        """A text at ``<tag>/text_summary``, as torch writes it (a TEXT property for plugins)."""
        step = _to_step(tag, global_step)
        reporter._check_name(tag, "text tag")  # noqa: SLF001 — the same check as a stat key
        if not isinstance(text_string, str):
            raise TypeError(f"statbus: text of {tag!r} must be a str, got {type(text_string).__name__}")
        StatsReporter(self._category).add_property(StatsPropertyType.TEXT,
                                                   {"tag": tag, "text": text_string, "step": step})

    def add_hparams(self, hparam_dict: Mapping[str, Any], metric_dict: Mapping[str, Any],
                    hparam_domain_discrete: Optional[Mapping[str, Any]] = None, run_name: Optional[str] = None,
                    global_step: Optional[int] = None, *, name: Optional[str] = None) -> None:
        """A sub-run ``<log_dir>/<run_name or time.time()>`` (``name=``: tensorboardX's spelling) holding
        the HParams plugin's summaries (one session of TensorBoard's HParams dashboard),
        ``metric_dict``'s values as scalars at ``global_step`` and, for plugins, the
        hyperparameters as a HYPERPARAMETERS property."""
        if name is not None:
            if run_name is not None and run_name != name:
                raise TypeError(f"statbus: add_hparams got run_name={run_name!r} and name={name!r}; give one")
            run_name = name
        media = hparams_media(hparam_dict, metric_dict, hparam_domain_discrete)
        step = _to_step("add_hparams", global_step)
        run = str(time.time()) if not run_name else run_name
        if not isinstance(run, str) or "/" in run or MARK in run or run in (".", ".."):
            raise ValueError(f"statbus: add_hparams run_name {run!r} must be one directory name")
        category = f"{self._category}/{run}"
        checked = [(key, reporter._to_float(str(key), value)) for key, value in metric_dict.items()]  # noqa: SLF001
        self._add_hparams_to(category, hparam_dict, media, step)
        stream = self._stream(category)
        for key, value in checked:
            stream.at(step).add(key, value, _AVERAGE)
        stream.close_step()

    def _add_hparams_to(self, category: str, hparam_dict: Mapping[str, Any], media: Media, step: int) -> None:
        """The HParams summaries and the HYPERPARAMETERS property into ``category`` (SB3's door
        writes them into the log_dir itself, with no scalars)."""
        StatsReporter(category).add_property(StatsPropertyType.HYPERPARAMETERS, plain_value(dict(hparam_dict)))
        reporter.add_media(category, HPARAMS_TAG, media, step)

    # --- tensors, plugin data and protos: encoded by the tensorboard writer's worker ----------

    def _send(self, tag: str, media: Media, step: int) -> None:
        """Hand one media value of the log_dir over (never blocks; a value past the trainer's
        media bound is dropped and counted by the client)."""
        reporter.add_media(self._category, tag, media, step)

    def add_tensor(self, tag: str, tensor: Any, global_step: Optional[int] = None,
                   walltime: Optional[float] = None) -> None:
        """The whole array as a ``tensor``-plugin summary (any array-like, not only a torch tensor)."""
        self._send(tag, calls.tensor_media(tag, tensor), _to_step(tag, global_step))

    def add_histogram_raw(self, tag: str, min: Any, max: Any, num: Any, sum: Any,  # noqa: A002 — torch's names
                          sum_squares: Any, bucket_limits: Any, bucket_counts: Any,
                          global_step: Optional[int] = None, walltime: Optional[float] = None) -> None:
        """A histogram the caller bucketed: written as given, under ``tag``."""
        step = _to_step(tag, global_step)
        self._send(tag, calls.histogram_raw_media(tag, min, max, num, sum, sum_squares, bucket_limits,
                                                  bucket_counts), step)

    def add_pr_curve(self, tag: str, labels: Any, predictions: Any, global_step: Optional[int] = None,
                     num_thresholds: int = 127, weights: Any = None, walltime: Optional[float] = None) -> None:
        """A precision-recall curve: the labels and predictions are copied, the curve is computed in
        the worker (torch computes it on the calling thread)."""
        step = _to_step(tag, global_step)
        self._send(tag, calls.pr_curve_media(tag, labels, predictions, num_thresholds, weights), step)

    def add_pr_curve_raw(self, tag: str, true_positive_counts: Any, false_positive_counts: Any,
                         true_negative_counts: Any, false_negative_counts: Any, precision: Any, recall: Any,
                         global_step: Optional[int] = None, num_thresholds: int = 127, weights: Any = None,
                         walltime: Optional[float] = None) -> None:
        """A precision-recall curve the caller computed (``weights`` is ignored, as torch does)."""
        step = _to_step(tag, global_step)
        rows = (true_positive_counts, false_positive_counts, true_negative_counts, false_negative_counts,
                precision, recall)
        self._send(tag, calls.pr_curve_raw_media(tag, rows, num_thresholds), step)

    def add_custom_scalars(self, layout: Mapping[str, Mapping[str, Any]]) -> None:
        """The Custom Scalars dashboard's layout: ``{category: {title: ["Multiline" or "Margin",
        [tag, ...]]}}`` (a margin chart: value, lower, upper)."""
        self._send(calls.CUSTOM_SCALARS_TAG, calls.custom_scalars_media(layout), 0)

    def add_custom_scalars_multilinechart(self, tags: Any, category: str = "default", title: str = "untitled") -> None:
        self.add_custom_scalars(calls.custom_chart_layout(calls.MULTILINE, tags, category, title))

    def add_custom_scalars_marginchart(self, tags: Any, category: str = "default", title: str = "untitled") -> None:
        self.add_custom_scalars(calls.custom_chart_layout(calls.MARGIN, tags, category, title))

    def add_mesh(self, tag: str, vertices: Any, colors: Any = None, faces: Any = None, config_dict: Any = None,
                 global_step: Optional[int] = None, walltime: Optional[float] = None) -> None:
        """A mesh or point cloud: vertices, colors and faces, each batch × points × 3."""
        step = _to_step(tag, global_step)
        self._send(tag, calls.mesh_media(tag, vertices, colors, faces, config_dict), step)

    def add_embedding(self, mat: Any, metadata: Any = None, label_img: Any = None, global_step: Optional[int] = None,
                      tag: str = "default", metadata_header: Any = None) -> None:
        """Projector data: the matrix, labels and label images are copied; the worker writes
        tensors.tsv, metadata.tsv, sprite.png and projector_config.pbtxt where torch does."""
        step = _to_step(tag, global_step)
        self._send(tag, calls.embedding_media(tag, mat, metadata, label_img, step, metadata_header), step)

    def add_graph(self, model: Any, input_to_model: Any = None, verbose: bool = False,
                  use_strict_trace: bool = True) -> None:
        """The module's graph: traced here by torch (as torch's call does, and at its cost); the
        GraphDef goes to the worker."""
        self._send(calls.GRAPH_TAG, calls.graph_media(model, input_to_model, verbose, use_strict_trace), 0)

    def add_onnx_graph(self, prototxt: str) -> None:
        """The graph of the ONNX model file ``prototxt``: the file's bytes are sent (at most 64 MiB),
        the worker converts it (with ``onnx``) as torch does on the calling thread."""
        self._send(calls.ONNX_GRAPH_TAG, calls.onnx_graph_media(prototxt), 0)

    # --- images, video, audio, figures: encoded by the tensorboard writer's worker ----------

    def add_image(self, tag: str, img_tensor: Any, global_step: Optional[int] = None,
                  walltime: Optional[float] = None, dataformats: str = "CHW") -> None:
        """One image (uint8 0–255, else [0, 1]; ``dataformats`` CHW, HWC or HW): copied; the PNG is
        made in the worker."""
        step = _to_step(tag, global_step)
        self._send(tag, images.image_media(tag, img_tensor, dataformats), step)

    def add_images(self, tag: str, img_tensor: Any, global_step: Optional[int] = None,
                   walltime: Optional[float] = None, dataformats: str = "NCHW") -> None:
        """A batch of images shown as one grid, 8 per row (``dataformats`` NCHW, NHWC, ...)."""
        step = _to_step(tag, global_step)
        self._send(tag, images.image_media(tag, img_tensor, dataformats, MediaKind.IMAGES), step)

    def add_image_with_boxes(self, tag: str, img_tensor: Any, box_tensor: Any, global_step: Optional[int] = None,
                             walltime: Optional[float] = None, rescale: float = 1, dataformats: str = "CHW",
                             labels: Any = None) -> None:
        """One image with N boxes (xmin, ymin, xmax, ymax) and their labels, drawn in the worker."""
        step = _to_step(tag, global_step)
        self._send(tag, images.boxes_media(tag, img_tensor, box_tensor, rescale, dataformats, labels), step)

    def add_figure(self, tag: str, figure: Any, global_step: Optional[int] = None, close: bool = True,
                   walltime: Optional[float] = None) -> None:
        """A matplotlib figure (or a list of them, as a grid): pickled here (about a millisecond),
        rendered by Agg in the worker; rendered here when it cannot be pickled."""
        step = _to_step(tag, global_step)
        self._send(tag, images.figure_media(tag, figure, close), step)

    def add_video(self, tag: str, vid_tensor: Any, global_step: Optional[int] = None, fps: float = 4,
                  walltime: Optional[float] = None, dataformats: str = "NTCHW") -> None:
        """Videos N×T×C×H×W (``dataformats``: tensorboardX's spelling), side by side in one animated
        GIF made in the worker (no moviepy)."""
        step = _to_step(tag, global_step)
        self._send(tag, images.video_media(tag, vid_tensor, fps, dataformats), step)

    def add_audio(self, tag: str, snd_tensor: Any, global_step: Optional[int] = None, sample_rate: int = 44100,
                  walltime: Optional[float] = None) -> None:
        """One channel of samples in [-1, 1]; the WAV is made in the worker."""
        step = _to_step(tag, global_step)
        self._send(tag, images.audio_media(tag, snd_tensor, sample_rate), step)

    # --- life -------------------------------------------------------------------------

    def flush(self) -> None:
        """Close every open step (its summary goes out); does not wait for the collector."""
        with self._lock:
            for stream in self._streams.values():
                stream.close_step()

    def close(self) -> None:
        """Close every open step and leave the log_dir; waits (bounded) until the collector has it all."""
        with self._lock:
            # A call after close() starts over (joins again), as torch's writer reopens its files.
            streams, self._streams, self._main = list(self._streams.values()), {}, None
            for stream in streams:
                stream.leave()
        _live.discard(self)
        reporter.flush(timeout=trainer_config.current_config().linger)
        global _bound_run
        with _lock:
            if not _live:  # every writer closed: the next one may log to another run
                _bound_run = None

    def __enter__(self) -> "SummaryWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _hparam_value(name: str, value: Any) -> Any:
    """A hyperparameter as torch's ``hparams`` takes it: None, bool, int, float or str; a numpy
    number or a tensor becomes a float (a tensor's first element, as torch takes it)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):  # numpy's float64 too: a plain number on the wire
        return float(value) if isinstance(value, float) else int(value)
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        value = tolist()
        while isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, (bool, int, float)):
            return float(value)
    raise ValueError(f"statbus: add_hparams: hyperparameter {name!r} is a {type(value).__name__}; "
                     "it must be an int, float, str, bool or a tensor")


def hparams_media(hparam_dict: Any, metric_dict: Any, hparam_domain_discrete: Any = None,
                  bools: bool = False) -> Media:
    """``add_hparams``' arguments, checked as torch checks them, as one HPARAMS media value
    (``bools``: bools written as bools, as tensorboardX does; torch writes numbers)."""
    if not isinstance(hparam_dict, Mapping) or not isinstance(metric_dict, Mapping):
        raise TypeError("statbus: add_hparams takes hparam_dict and metric_dict as dicts")
    hparams = {}
    for key, value in hparam_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"statbus: add_hparams: hyperparameter names must be str, got {key!r}")
        hparams[key] = _hparam_value(key, value)
    domains = hparam_domain_discrete or {}
    if not isinstance(domains, Mapping):
        raise TypeError("statbus: add_hparams: hparam_domain_discrete must be a dict")
    for key, values in domains.items():
        if key not in hparams or not isinstance(values, list) or \
                not all(isinstance(item, type(hparam_dict[key])) for item in values):
            raise TypeError(f"statbus: add_hparams: hparam_domain_discrete[{key!r}] must be a list of values of "
                            f"the type of hparam_dict[{key!r}]")
    # Only the names are written (the experiment's metric tags); SB3's placeholders may be anything.
    metrics = {str(key): float(value) if isinstance(value, (int, float)) else None for key, value in metric_dict.items()}
    return Media(MediaKind.HPARAMS, (), "", b"", {"hparams": hparams, "metrics": metrics,
                                                 "hparam_domain_discrete": {k: list(v) for k, v in domains.items()},
                                                 "bools": bools})


def _flatten(tag: str, values: Any) -> List[float]:
    dtype = getattr(values, "dtype", None)
    if dtype is not None and hasattr(values, "tolist"):  # a numpy array or a torch tensor
        if hasattr(values, "detach"):
            values = values.detach().cpu().numpy()
        kind = getattr(values.dtype, "kind", None)
        if kind in ("b", "i", "u", "f"):
            # numpy is loaded already (the caller made the array): one C pass to a flat list of
            # floats, where checking each value in Python cost ~0.5 µs a value.
            import numpy

            return numpy.asarray(values, dtype=numpy.float64).ravel().tolist()
        values = values.tolist()
    if isinstance(values, (int, float)):
        return [values]
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"statbus: values of histogram {tag!r} must be numbers, got {type(values).__name__}")
    out = []

    def walk(items: Any) -> None:
        for item in items:
            if isinstance(item, (list, tuple)):
                walk(item)
            else:
                out.append(reporter._to_float(tag, item))  # noqa: SLF001 — add_stat's own conversion

    walk(values)
    return out


@atexit.register
def _close_steps_at_exit() -> None:
    # Registered after the reporter's exit hook, so it runs first: the open steps
    # reach the client before it sends its goodbye.
    for writer in list(_live):
        try:
            writer.flush()
        except Exception as exc:  # noqa: BLE001 — never fail the interpreter's exit
            logger.error("statbus: SummaryWriter could not close its steps at exit: %r", exc)
