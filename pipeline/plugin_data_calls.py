"""The argument checks of ``SummaryWriter``'s tensor and plugin-data calls, and their media records.

Each function checks what torch's call would choke on (raising ``TypeError``/``ValueError``
naming the tag, at the call, not later in a worker), copies the arrays and returns the
:class:`~statbus.plugins.media.Media` the TensorBoard writer encodes (see
:mod:`statbus.plugins.writers.tb_plugin_data` for each ``use`` and its options).  What torch
computes on the calling thread — a PR curve's thresholds, an embedding's sprite and text
files — is left to the worker.  Nothing here imports torch, except :func:`graph_media`,
whose trace needs the caller's module.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..plugins.media import Media, MediaKind, array_option
from ..plugins.writers.tb_plugin_data import CUSTOM_SCALARS_TAG, PR_RAW_ROWS, TENSOR_FIELDS

MARGIN = "Margin"
MULTILINE = "Multiline"
CHART_KINDS = (MULTILINE, MARGIN)
ONNX_GRAPH_TAG = "onnx_graph"
"""add_onnx_graph's media tag (an ONNX graph event has no tag)."""
GRAPH_TAG = "step1"
"""add_graph's media tag, and so the tag of the step stats torch writes beside the graph."""
EVENT_TAG = "file_writer.add_event"
"""The media tag of ``file_writer.add_event``'s events (an Event has no tag of its own)."""


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not tag:
        raise TypeError(f"statbus: tag must be a non-empty str, got {type(tag).__name__} ({tag!r:.80})")
    return tag


def _array(tag: str, name: str, values: Any) -> Dict[str, Any]:
    """``values`` copied as an :func:`array_option` dict; a TypeError naming the tag if it is no array."""
    if values is None or isinstance(values, (str, bytes)):
        raise TypeError(f"statbus: {name} of {tag!r} must be an array of numbers, got {type(values).__name__}")
    try:
        return array_option(values)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"statbus: {name} of {tag!r} must be an array of numbers: {exc}") from None


def _number(tag: str, name: str, value: Any) -> float:
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise TypeError(f"statbus: {name} of {tag!r} must be a number, got {type(value).__name__}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"statbus: {name} of {tag!r} must be a number: {exc}") from None


def _count(tag: str, name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__") or value.__index__() < least:
        raise ValueError(f"statbus: {name} of {tag!r} must be an int >= {least}, got {value!r:.80}")
    return value.__index__()


def _tensor_media(use: str, shape: Sequence[int], dtype: str, data: bytes, **options: Any) -> Media:
    return Media(MediaKind.TENSOR, tuple(shape), dtype, data, {"use": use, **options})


def _from_option(use: str, array: Dict[str, Any], **options: Any) -> Media:
    return _tensor_media(use, array["shape"], array["dtype"], array["data"], **options)


def tensor_media(tag: str, tensor: Any) -> Media:
    """``add_tensor``: the array as it is (a bfloat16 torch tensor widened to float32: numpy has no
    bfloat16; the encoder writes it as DT_BFLOAT16, as torch does)."""
    _check_tag(tag)
    options: Dict[str, Any] = {}
    if str(getattr(tensor, "dtype", "")) == "torch.bfloat16":
        tensor, options["torch_dtype"] = tensor.float(), "bfloat16"
    array = _array(tag, "tensor", tensor)
    if array["dtype"] not in TENSOR_FIELDS:
        raise ValueError(f"statbus: {tag} has unsupported tensor dtype {array['dtype']} (supported: "
                         f"{', '.join(TENSOR_FIELDS)})")
    return _from_option("tensor", array, **options)


def histogram_raw_media(tag: str, min: Any, max: Any, num: Any, sum: Any, sum_squares: Any,  # noqa: A002 — torch's names
                        bucket_limits: Any, bucket_counts: Any) -> Media:
    """``add_histogram_raw``: the moments and the two bucket arrays (1-D, of one length)."""
    _check_tag(tag)
    moments = {name: _number(tag, name, value) for name, value in
               (("min", min), ("max", max), ("num", num), ("sum", sum), ("sum_squares", sum_squares))}
    limits, counts = _array(tag, "bucket_limits", bucket_limits), _array(tag, "bucket_counts", bucket_counts)
    if len(limits["shape"]) != 1 or limits["shape"] != counts["shape"]:
        raise ValueError(f"statbus: add_histogram_raw({tag!r}): bucket_limits and bucket_counts must be 1-D and "
                         f"of one length, got shapes {limits['shape']} and {counts['shape']}")
    return _from_option("histogram_raw", limits, bucket_counts=counts, **moments)


def pr_curve_media(tag: str, labels: Any, predictions: Any, num_thresholds: Any, weights: Any) -> Media:
    """``add_pr_curve``: labels and predictions (one shape; weights a number or that shape too)."""
    _check_tag(tag)
    count = _count(tag, "num_thresholds", num_thresholds, 2)
    labels_array, predictions_array = _array(tag, "labels", labels), _array(tag, "predictions", predictions)
    if labels_array["shape"] != predictions_array["shape"]:
        raise ValueError(f"statbus: add_pr_curve({tag!r}): labels and predictions must have one shape, got "
                         f"{labels_array['shape']} and {predictions_array['shape']}")
    options: Dict[str, Any] = {"labels": labels_array, "num_thresholds": count}
    if weights is not None:
        if isinstance(weights, (int, float)) and not isinstance(weights, bool):
            options["weights"] = float(weights)
        else:
            options["weights"] = _array(tag, "weights", weights)
            if options["weights"]["shape"] not in ([], predictions_array["shape"]):
                raise ValueError(f"statbus: add_pr_curve({tag!r}): weights must be a number or of the predictions' "
                                 f"shape {predictions_array['shape']}, got {options['weights']['shape']}")
    return _from_option("pr_curve", predictions_array, **options)


def pr_curve_raw_media(tag: str, rows: Sequence[Any], num_thresholds: Any) -> Media:
    """``add_pr_curve_raw``: the six rows (TP, FP, TN, FN, precision, recall), 1-D and of one length."""
    _check_tag(tag)
    count = _count(tag, "num_thresholds", num_thresholds, 2)
    arrays = {name: _array(tag, name, row) for name, row in zip(PR_RAW_ROWS, rows)}
    shapes = {tuple(array["shape"]) for array in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"statbus: add_pr_curve_raw({tag!r}): the six counts must be 1-D and of one length, got "
                         f"shapes {[array['shape'] for array in arrays.values()]}")
    return _tensor_media("pr_curve_raw", (), "", b"", num_thresholds=count, **arrays)


def custom_scalars_media(layout: Any) -> Media:
    """``add_custom_scalars``: ``{category: {title: [kind, [tag, ...]]}}`` as plain values."""
    where = "add_custom_scalars"
    if not isinstance(layout, Mapping):
        raise TypeError(f"statbus: {where}: layout must be a dict, got {type(layout).__name__}")
    plain: Dict[str, Dict[str, List[Any]]] = {}
    for category, charts in layout.items():
        if not isinstance(category, str) or not isinstance(charts, Mapping):
            raise TypeError(f"statbus: {where}: layout must map category names (str) to dicts of charts, got "
                            f"{category!r:.80}: {type(charts).__name__}")
        plain[category] = {}
        for title, chart in charts.items():
            kind, tags = _chart(where, category, title, chart)
            plain[category][title] = [kind, tags]
    return _tensor_media("custom_scalars", (), "", b"", layout=plain)


def _chart(where: str, category: str, title: Any, chart: Any) -> Tuple[str, List[str]]:
    if (not isinstance(title, str) or isinstance(chart, (str, bytes)) or not isinstance(chart, Sequence)
            or len(chart) != 2):
        raise TypeError(f"statbus: {where}: chart {title!r:.80} of {category!r} must be a str title mapped to "
                        "[kind, [tag, ...]]")
    kind, tags = chart
    if kind not in CHART_KINDS:
        raise ValueError(f"statbus: {where}: chart {title!r} of {category!r} has kind {kind!r}; use one of "
                         f"{', '.join(CHART_KINDS)}")
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Sequence) or not all(isinstance(t, str) for t in tags):
        raise TypeError(f"statbus: {where}: chart {title!r} of {category!r} needs a list of str tags")
    if kind == MARGIN and len(tags) != 3:
        raise ValueError(f"statbus: {where}: margin chart {title!r} of {category!r} needs 3 tags (value, lower, "
                         f"upper), got {len(tags)}")
    return kind, list(tags)


def custom_chart_layout(kind: str, tags: Any, category: Any, title: Any) -> Dict[Any, Any]:
    """The layout of ``add_custom_scalars_multilinechart`` / ``_marginchart``: one chart."""
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Sequence):
        raise TypeError(f"statbus: add_custom_scalars_{kind.lower()}chart: tags must be a list of str, got "
                        f"{type(tags).__name__}")
    return {category: {title: [kind, list(tags)]}}


MESH_PARTS = ("vertices", "colors", "faces")


def mesh_media(tag: str, vertices: Any, colors: Any, faces: Any, config_dict: Any) -> Media:
    """``add_mesh``: each given array B×N×3; ``config_dict`` as its JSON text."""
    _check_tag(tag)
    if vertices is None:
        raise TypeError(f"statbus: add_mesh({tag!r}) needs vertices")
    arrays = {}
    for name, values in zip(MESH_PARTS, (vertices, colors, faces)):
        if values is not None:
            arrays[name] = _array(tag, name, values)
            if len(arrays[name]["shape"]) != 3:
                raise ValueError(f"statbus: add_mesh({tag!r}): {name} must be 3-D (batch, points, 3), got shape "
                                 f"{arrays[name]['shape']}")
    try:
        config = "{}" if config_dict is None else json.dumps(config_dict, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"statbus: add_mesh({tag!r}): config_dict must be JSON-serializable: {exc}") from None
    return _tensor_media("mesh", (), "", b"", config=config, **arrays)


def embedding_media(tag: str, mat: Any, metadata: Any, label_img: Any, step: int, metadata_header: Any) -> Media:
    """``add_embedding``: the matrix (N×D), metadata.tsv's text and the label images (N×C×H×W, C 1 or 3)."""
    _check_tag(tag)
    matrix = _array(tag, "mat", mat)
    if len(matrix["shape"]) != 2:
        raise ValueError(f"statbus: add_embedding({tag!r}): mat must be 2-D (points, dimensions), got shape "
                         f"{matrix['shape']}")
    points = matrix["shape"][0]
    options: Dict[str, Any] = {"step": step}
    if metadata is not None:
        options["metadata_tsv"] = metadata_tsv(tag, metadata, metadata_header, points)
    if label_img is not None:
        images = _array(tag, "label_img", label_img)
        shape = images["shape"]
        if len(shape) != 4 or shape[0] != points or shape[1] not in (1, 3):
            raise ValueError(f"statbus: add_embedding({tag!r}): label_img must be N×C×H×W with N = {points} points "
                             f"and C 1 or 3, got shape {shape}")
        options["label_img"] = images
    return _from_option("embedding", matrix, **options)


def metadata_tsv(tag: str, metadata: Any, header: Optional[Sequence[Any]], points: int) -> str:
    """metadata.tsv: one label a line, or with a header, its row and one tab-separated row a point."""
    if isinstance(metadata, (str, bytes)) or not hasattr(metadata, "__len__"):
        raise TypeError(f"statbus: add_embedding({tag!r}): metadata must be a list, got {type(metadata).__name__}")
    if len(metadata) != points:
        raise ValueError(f"statbus: add_embedding({tag!r}): {len(metadata)} labels for {points} points")
    if not header:
        lines = [str(label) for label in metadata]
    else:
        if any(len(row) != len(header) for row in metadata):
            raise ValueError(f"statbus: add_embedding({tag!r}): each metadata row needs {len(header)} columns, "
                             "one per metadata_header entry")
        lines = ["\t".join(str(cell) for cell in row) for row in [header, *metadata]]
    return "\n".join(lines) + "\n"


def graph_media(model: Any, input_to_model: Any, verbose: bool, use_strict_trace: bool) -> Media:
    """``add_graph``: torch traces the module here (it needs the caller's module and inputs, as
    torch's own call does); the GraphDef travels as bytes."""
    from torch.utils.tensorboard._pytorch_graph import graph

    graph_def, _ = graph(model, input_to_model, verbose, use_strict_trace)
    return _tensor_media("graph", (), "", graph_def.SerializeToString())


def onnx_graph_media(prototxt: Any) -> Media:
    """``add_onnx_graph``: the model file's bytes (the worker converts it; onnx is not imported here)."""
    if not isinstance(prototxt, (str, os.PathLike)):
        raise TypeError(f"statbus: add_onnx_graph takes the path of an ONNX model file, got {type(prototxt).__name__}")
    with open(prototxt, "rb") as handle:
        return _tensor_media("onnx_graph", (), "", handle.read())


def serialized(what: str, proto: Any) -> bytes:
    """A TensorBoard proto's bytes (torch's, tensorboardX's or tensorboard's own: all have
    ``SerializeToString``)."""
    serialize = getattr(proto, "SerializeToString", None)
    if serialize is None:
        raise TypeError(f"statbus: file_writer.{what} takes a TensorBoard proto, got {type(proto).__name__}")
    return serialize()


def summary_tag(summary: Any) -> str:
    """The tag a Summary's media goes by: its first value's (``"summary"`` when it has none)."""
    values = getattr(summary, "value", None)
    tag = getattr(values[0], "tag", "") if values else ""
    return tag or "summary"


def summary_media(summary: Any) -> Media:
    return Media(MediaKind.SUMMARY, (), "", serialized("add_summary", summary), {})


def event_media(event: Any) -> Media:
    return Media(MediaKind.EVENT, (), "", serialized("add_event", event), {})
