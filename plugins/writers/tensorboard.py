"""The ``tensorboard`` writer: event files TensorBoard reads, without torch or tensorflow.

Event files go to ``<base_dir>/<category>/`` (``base_dir`` is the run's
``<results_dir>/<run_id>``), built from the ``tensorboard`` package's own
summary protos and appended by :mod:`.event_file` (TFRecord framing with a C
CRC32C, no thread):

* one scalar per key, ``aggregated_value`` at ``step``;
* a ``{key}_hist`` histogram for keys aggregated as HISTOGRAM, built from the
  finite values only (non-finite ones are left out and counted in
  ``nonfinite_dropped``; a histogram with no finite value is skipped);
* hyperparameters as a text summary tagged ``Hyperparameters`` (a markdown
  table);
* hidden keys (default exactly ``Is Training`` and ``Step``) matched exactly.

With the plugin option ``layout = "torch"`` (set by the collector a
``SummaryWriter`` starts) the files are torch's ``SummaryWriter``'s instead: a
HISTOGRAM key is written as a histogram under the key itself, in torch's default
buckets (:func:`torch_histogram_proto`), with no mean scalar, no key is hidden by default, and a TEXT property is a text summary
``<tag>/text_summary`` at its step.

Data reach the OS on ``flush()`` (the worker host calls it before every
cursor commit) and ``close()``, and at a write once more than ``flush_secs``
passed since the last flush — never once per key.  There is no background
thread: a writer left idle keeps unflushed summaries buffered until its next
write, ``flush()`` or ``close()``.

Event files left over from an earlier run (last modified over a second before
this run started) are deleted only when the run is started over on purpose
(``checkpoint_settings.force``, ``statbus collector start --force``), as
ML-Agents' ``--force`` does; otherwise they stay.

Nothing twice after a restart: written from a worker host, each summary event is
preceded by a record holding its journal position (an ``Event`` with a
``log_message`` ``"statbus journal position <P>"`` at the summary's step; TensorBoard
ignores such events).  What this run already wrote is read back at first use of a
category, so a restarted worker drops summaries whose journal position is at or
below the highest one whose summary event is in the files (a position record
followed by a torn record counts as not written), and an already written
Hyperparameters text.  A second summary at a step already written (late values of
a process that joined a ``SummaryWriter`` log_dir late) is a second point at that step.

``tensorboard`` is imported when a writer is made (:func:`_protos`), not
when this module is: importing ``statbus.plugins`` must stay cheap for
trainers; and not at the first summary either, where its ~1 s of imports
would hold up delivery instead of the worker's start.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import struct
import time
import types
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

from ..delivery import already_written, journal_position
from ..media import Media
from ..settings import RunOptions
from ..stats import StatsAggregationMethod, StatsPropertyType, StatsSummary, StatsWriter, sum_and_mean
from .event_file import EVENT_FILE_PREFIX, EventFile

if TYPE_CHECKING:  # pragma: no cover
    from tensorboard.compat.proto.summary_pb2 import Summary

logger = logging.getLogger(__name__)

DEFAULT_HIDDEN_KEYS = frozenset({"Is Training", "Step"})
DEFAULT_FLUSH_SECS = 5.0
HYPERPARAMETERS_TAG = "Hyperparameters"
HISTOGRAM_SUFFIX = "_hist"
MAX_HISTOGRAM_BUCKETS = 30
MTIME_MARGIN_SECS = 1.0
LAYOUTS = ("mlagents", "torch")
POSITION_MESSAGE = "statbus journal position "
"""The position record's ``log_message``, followed by the decimal position."""


@functools.lru_cache(maxsize=None)
def _protos() -> types.SimpleNamespace:
    """tensorboard's proto modules, imported once (when the first writer is made)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2

    return types.SimpleNamespace(event_pb2=event_pb2, summary_pb2=summary_pb2, tensor_pb2=tensor_pb2, types_pb2=types_pb2)


def histogram_proto(values: Iterable[float]) -> Tuple[Optional[Any], int]:
    """A ``HistogramProto`` of the finite ``values`` and the number left out.

    Returns ``(None, dropped)`` when no finite value is left: TensorBoard
    cannot show an empty histogram, and an empty one is no information.
    Buckets are equal-width between min and max; each bucket's limit is its
    right edge, as TensorBoard expects.
    """
    all_values = list(values)
    finite = sorted(v for v in all_values if math.isfinite(v))
    dropped = len(all_values) - len(finite)
    if not finite:
        return None, dropped
    low, high = finite[0], finite[-1]
    count = min(MAX_HISTOGRAM_BUCKETS, len(set(finite)))
    if high == low:
        limits = [high]
    else:
        width = (high - low) / count
        limits = [low + width * (i + 1) for i in range(count - 1)] + [high]
    buckets = [0.0] * len(limits)
    index = 0
    for value in finite:  # sorted, so one pass over the limits
        while value > limits[index] and index < len(limits) - 1:
            index += 1
        buckets[index] += 1
    proto = _protos().summary_pb2.HistogramProto(
        min=low,
        max=high,
        num=len(finite),
        sum=sum_and_mean(finite)[0],
        sum_squares=sum_and_mean([v * v for v in finite])[0],
        bucket_limit=limits,
        bucket=buckets,
    )
    return proto, dropped


@functools.lru_cache(maxsize=1)
def _torch_default_edges() -> Any:
    """torch's ``bins="tensorflow"`` (its default): edges ±1e-12·1.1^k up to 1e20, and 0."""
    import numpy

    positive = [1e-12]
    while positive[-1] * 1.1 < 1e20:
        positive.append(positive[-1] * 1.1)
    return numpy.array([-v for v in reversed(positive)] + [0.0] + positive)


def torch_histogram_proto(values: Iterable[float]) -> Tuple[Optional[Any], int]:
    """A ``HistogramProto`` of the finite ``values`` bucketed as torch's ``add_histogram`` does
    with its default bins: numpy's counts over :func:`_torch_default_edges`, trimmed to the
    buckets between the first and the last one holding values, led by one empty bucket (TensorBoard
    reads right edges only).  Returns ``(None, dropped)`` when no finite value is left."""
    import numpy

    array = numpy.asarray(list(values), dtype=numpy.float64)
    finite = array[numpy.isfinite(array)]
    dropped = int(array.size - finite.size)
    if not finite.size:
        return None, dropped
    counts, edges = numpy.histogram(finite, bins=_torch_default_edges())
    filled = numpy.flatnonzero(counts)
    if not filled.size:  # every value beyond ±1e20: numpy counted none of them
        return histogram_proto(finite.tolist())[0], dropped
    start, end = int(filled[0]), int(filled[-1]) + 1
    counts = counts[start - 1:end] if start > 0 else numpy.concatenate([[0], counts[:end]])
    limits = edges[start:end + 1]
    proto = _protos().summary_pb2.HistogramProto(
        min=float(finite.min()), max=float(finite.max()), num=int(finite.size), sum=float(finite.sum()),
        sum_squares=float(finite.dot(finite)), bucket_limit=limits.tolist(), bucket=counts.astype(float).tolist(),
    )
    return proto, dropped


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_DOUBLE = struct.Struct("<d")


def position_event(now: float, step: int, position: int) -> bytes:
    """The serialized ``Event(wall_time=now, step=step, log_message=LogMessage(level=DEBUGGING,
    message=POSITION_MESSAGE + position))``, encoded by hand: building it through the protobuf
    API (pure Python here) cost ~20 µs a summary, a quarter of the summary event's own cost."""
    message = f"{POSITION_MESSAGE}{position:d}".encode("ascii")
    log = b"\x08\x0a\x12" + _varint(len(message)) + message  # level (1) = DEBUGGING (10), message (2)
    # wall_time (1, double), step (2, varint), log_message (6, length-delimited)
    return b"\x09" + _DOUBLE.pack(now) + b"\x10" + _varint(step) + b"\x32" + _varint(len(log)) + log


def _markdown_cell(text: str) -> str:
    # A "|" inside a cell would end it; markdown's escape keeps the table whole.
    return text.replace("|", "\\|").replace("\n", " ")


def hyperparameters_markdown(params: Any) -> str:
    """A two-column markdown table of the (flattened) hyperparameters."""
    rows: List[Tuple[str, str]] = []

    def flatten(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                flatten(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            rows.append((prefix, str(value)))

    flatten("", params)
    lines = ["| Hyperparameter | Value |", "|---|---|"]
    lines += [f"| {_markdown_cell(key)} | {_markdown_cell(value)} |" for key, value in rows]
    return "\n".join(lines)


def _text_summary(tag: str, text: str) -> "Summary":
    pb = _protos()
    summary_pb2, tensor_pb2, types_pb2 = pb.summary_pb2, pb.tensor_pb2, pb.types_pb2
    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode("utf-8")])
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)])


MEDIA_ENCODERS: Dict[str, str] = {
    "image": "tb_images:encode_image",
    "images": "tb_images:encode_images",
    "video": "tb_images:encode_video",
    "audio": "tb_images:encode_audio",
    "figure": "tb_images:encode_figure",
    "hparams": "tb_hparams:encode_hparams",
    "summary": "tb_plugin_data:encode_summary",
    "event": "tb_plugin_data:encode_event",
    "tensor": "tb_plugin_data:encode_tensor",
}
"""media kind (``Media.kind.value``) → ``module:function`` of this package that encodes it:
``function(media, tag, directory) -> list of Event protos`` (``directory``: the category's
event-file folder, for what goes beside the event files).  The writer sets each event's
``wall_time`` and ``step``.  Imported at a kind's first use: Pillow, numpy and matplotlib
load only in a worker that gets such media."""


@functools.lru_cache(maxsize=None)
def media_encoder(kind: str) -> Callable[[Media, str, str], List[Any]]:
    import importlib

    module, function = MEDIA_ENCODERS[kind].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), function)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TensorboardWriter(StatsWriter):
    """Writes scalars, histograms and hyperparameters as TensorBoard event files."""

    def __init__(
        self,
        base_dir: str,
        clear_past_data: bool = False,
        hidden_keys: Optional[Iterable[str]] = None,
        flush_secs: float = DEFAULT_FLUSH_SECS,
        start_time: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
        layout: str = "mlagents",
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"tensorboard: layout {layout!r} must be one of {', '.join(LAYOUTS)}")
        self.torch_layout = layout == "torch"
        self.base_dir = base_dir
        self._clock = clock  # for flush_secs (injectable, for tests)
        self.clear_past_data = clear_past_data
        if isinstance(hidden_keys, str):  # one key, not its characters
            hidden_keys = [hidden_keys]
        default_hidden = frozenset() if self.torch_layout else DEFAULT_HIDDEN_KEYS
        self.hidden_keys = frozenset(default_hidden if hidden_keys is None else hidden_keys)
        self.flush_secs = flush_secs
        self.start_time = time.time() if start_time is None else start_time
        self.nonfinite_dropped = 0
        """Non-finite values left out of histograms so far."""
        self.summary_writers: Dict[str, EventFile] = {}
        self._written: Dict[str, int] = {}
        """category → the highest journal position of a summary event this run wrote there."""
        self._last_text: Dict[str, str] = {}
        _protos()

    # -- per-category event writers ---------------------------------------------

    def category_dir(self, category: str) -> str:
        return os.path.join(self.base_dir, category)

    def _writer(self, category: str) -> EventFile:
        writer = self.summary_writers.get(category)
        if writer is None:
            directory = self.category_dir(category)
            os.makedirs(directory, exist_ok=True)
            if self.clear_past_data:
                self._delete_past_event_files(directory)
            self._recover(category, directory)
            writer = EventFile(directory, flush_secs=self.flush_secs, clock=self._clock)
            self.summary_writers[category] = writer
        return writer

    def _event_files(self, directory: str) -> List[str]:
        return sorted(
            os.path.join(directory, name) for name in os.listdir(directory) if name.startswith(EVENT_FILE_PREFIX)
        )

    def _older_than_run(self, path: str) -> bool:
        # File timestamps come from a coarse kernel clock that can lag
        # time.time() by milliseconds; a second of margin keeps a file this
        # run just created from looking older than the run.
        return os.path.getmtime(path) < self.start_time - MTIME_MARGIN_SECS

    def _delete_past_event_files(self, directory: str) -> None:
        # Only files of earlier runs: a restarted worker of this run must keep
        # what its predecessor wrote (it is not written again).
        for path in self._event_files(directory):
            try:
                if not self._older_than_run(path):
                    continue
                logger.warning("Deleting TensorBoard data %s that was left over from a previous run.", path)
                os.remove(path)
            except OSError as exc:
                logger.error("%s was left over from a previous run and not deleted: %s", path, exc)

    def _recover(self, category: str, directory: str) -> None:
        """Read back the highest journal position and the hyperparameters this run wrote for ``category``."""
        paths: List[str] = []
        for path in self._event_files(directory):
            try:
                if not self._older_than_run(path):  # an earlier run's file (kept on resume) holds nothing of this run
                    paths.append(path)
            except OSError as exc:
                logger.warning("tensorboard: could not read back %s: %r", path, exc)
        if not paths:
            return
        # Only a restarted worker has files of this run to read: TensorBoard's reader
        # imports fsspec and its tensorflow stub, 0.4 s of CPU that a fresh start skips.
        from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

        written = self._written.get(category, -1)
        for path in paths:
            announced: Optional[int] = None  # the position record's, until the summary event after it is read
            try:
                # The loader yields whole records only: a summary event torn off leaves its position unconfirmed.
                for event in LegacyEventFileLoader(path).Load():
                    if event.wall_time < self.start_time:
                        continue
                    if announced is not None:
                        written = max(written, announced)
                        announced = None
                    message = event.log_message.message if event.HasField("log_message") else ""
                    if message.startswith(POSITION_MESSAGE):
                        announced = int(message[len(POSITION_MESSAGE):])
                    elif event.HasField("summary"):
                        for value in event.summary.value:
                            if value.tag == HYPERPARAMETERS_TAG and value.HasField("tensor"):
                                self._last_text[category] = _digest(b"".join(value.tensor.string_val).decode("utf-8"))
            except Exception as exc:  # noqa: BLE001 — a damaged file must not stop the writer
                logger.warning("tensorboard: could not read back %s: %r", path, exc)
        if written >= 0:
            self._written[category] = written

    # -- StatsWriter --------------------------------------------------------------

    def write_stats(self, category: str, values: Dict[str, StatsSummary], step: int) -> None:
        writer = self._writer(category)
        position = journal_position()
        if already_written(position, self._written.get(category, -1)):
            logger.debug("tensorboard: dropping replayed summary %s step %s (journal position %s)",
                         category, step, position)
            return
        # The values are added to the Event's own summary (no separate
        # Summary copied in): the cheapest way through the protobuf API.
        now = time.time()
        event = _protos().event_pb2.Event(wall_time=now, step=step)
        add_value = event.summary.value.add
        hidden = self.hidden_keys
        for key, stats in values.items():
            if key in hidden:
                continue
            # StatsSummary.aggregated_value, inlined: through its property
            # chain it cost ~1 µs a key.
            method = stats.aggregation_method
            total, mean = sum_and_mean(stats.full_dist)
            value = total if method is StatsAggregationMethod.SUM else mean
            if method is not StatsAggregationMethod.HISTOGRAM or not self.torch_layout:
                add_value(tag=key, simple_value=value)
            if method is StatsAggregationMethod.HISTOGRAM:
                histogram, dropped = (torch_histogram_proto if self.torch_layout else histogram_proto)(stats.full_dist)
                self.nonfinite_dropped += dropped
                if dropped:
                    logger.debug("tensorboard: %d non-finite value(s) left out of %s%s", dropped, key, HISTOGRAM_SUFFIX)
                if histogram is not None:
                    add_value(tag=key if self.torch_layout else f"{key}{HISTOGRAM_SUFFIX}", histo=histogram)
        # One event per summary, flushed by time or flush(), never per key.
        # A summary of hidden keys only leaves nothing to show.
        if event.summary.value:
            if position is not None:
                writer.write(position_event(now, step, position))
                self._written[category] = position
            writer.write(event.SerializeToString())

    def add_property(self, category: str, property_type: StatsPropertyType, value: Any) -> None:
        if property_type == StatsPropertyType.TEXT:
            self._write_text(category, value)
            return
        if property_type != StatsPropertyType.HYPERPARAMETERS:
            return
        text = hyperparameters_markdown(value)
        writer = self._writer(category)
        if self._last_text.get(category) == _digest(text):
            return
        event = _protos().event_pb2.Event(wall_time=time.time(), step=0, summary=_text_summary(HYPERPARAMETERS_TAG, text))
        writer.write(event.SerializeToString())
        self._last_text[category] = _digest(text)

    def _write_text(self, category: str, value: Any) -> None:
        # torch's add_text: one string tensor at <tag>/text_summary, at its step.
        if not isinstance(value, dict) or not isinstance(value.get("tag"), str) or not isinstance(value.get("text"), str):
            logger.warning("tensorboard: ignoring a malformed text property in %s", category)
            return
        step = value.get("step")
        event = _protos().event_pb2.Event(wall_time=time.time(), step=step if type(step) is int and step >= 0 else 0,
                                          summary=_text_summary(f"{value['tag']}/text_summary", value["text"]))
        self._writer(category).write(event.SerializeToString())

    def add_media(self, category: str, tag: str, media: Media, step: int) -> None:
        """Encode one media value (see :mod:`statbus.plugins.media`) as torch's writer would."""
        writer = self._writer(category)
        position = journal_position()
        if already_written(position, self._written.get(category, -1)):
            logger.debug("tensorboard: dropping replayed %s %s of %s step %s (journal position %s)",
                         media.kind.value, tag, category, step, position)
            return
        events = media_encoder(media.kind.value)(media, tag, self.category_dir(category))
        now = time.time()
        if events and position is not None:
            writer.write(position_event(now, step, position))
            self._written[category] = position
        for event in events:
            event.wall_time, event.step = now, step
            writer.write(event.SerializeToString())

    def flush(self) -> None:
        for writer in self.summary_writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.summary_writers.values():
            writer.close()
        self.summary_writers.clear()


def get_tensorboard_writer(run_options: RunOptions) -> List[StatsWriter]:
    """Registration function of the ``tensorboard`` plugin.

    Plugin options: ``hidden_keys`` (list of exact key names, default
    ``["Is Training", "Step"]``), ``flush_secs`` (default 5) and ``layout``
    (``"mlagents"``, the default, or ``"torch"``).
    """
    options = run_options.plugin_options
    hidden = options.get("hidden_keys")
    return [
        TensorboardWriter(
            run_options.checkpoint_settings.write_path,
            # Only a run started over on purpose (--force) loses its past curves: a
            # collector that continues a run (after a crash, a stop, an idle exit) keeps them.
            clear_past_data=run_options.checkpoint_settings.force,
            hidden_keys=None if hidden is None else [str(key) for key in hidden],
            flush_secs=float(options.get("flush_secs", DEFAULT_FLUSH_SECS)),
            start_time=run_options.start_time,
            layout=str(options.get("layout", "mlagents")),
        )
    ]
