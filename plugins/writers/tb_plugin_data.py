"""Encoders of the TensorBoard writer for TENSOR, SUMMARY and EVENT media: what torch writes.

Each is ``encode(media, tag, directory) -> list of Event protos`` (see ``MEDIA_ENCODERS`` in
:mod:`.tensorboard`; the writer sets ``wall_time`` and ``step``).  A TENSOR media's
``options["use"]`` says which ``SummaryWriter`` call made it, and so what torch 2.13's
``torch.utils.tensorboard`` would have written for it:

========================  =====================================================================
``use``                   written (the options the call sends)
========================  =====================================================================
``tensor``                a ``tensor``-plugin summary holding the array (``torch_dtype``:
                          "bfloat16" when the caller widened a bfloat16 tensor)
``histogram_raw``         a ``HistogramProto``; the array is ``bucket_limits``
                          (``bucket_counts``, ``min``, ``max``, ``num``, ``sum``, ``sum_squares``)
``pr_curve``              a ``pr_curves`` summary, computed here from the predictions (the array)
                          and ``labels`` (``num_thresholds``, ``weights``: a number or an array)
``pr_curve_raw``          a ``pr_curves`` summary of the six arrays ``tp``, ``fp``, ``tn``,
                          ``fn``, ``precision``, ``recall`` (``num_thresholds``)
``custom_scalars``        the ``custom_scalars__config__`` layout summary (``layout``:
                          {category: {title: ["Multiline" or "Margin", [tags]]}})
``mesh``                  one ``mesh`` summary value per array among ``vertices``, ``faces``,
                          ``colors`` (``config``: the JSON of ``config_dict``)
``embedding``             no event: the projector files in ``<directory>/<step:05d>/<tag,
                          escaped>/`` and ``<directory>/projector_config.pbtxt``; the array is
                          the matrix (``metadata_tsv``: the text of metadata.tsv, ``label_img``)
``graph``                 a ``graph_def`` event (the array is opaque: the GraphDef's bytes) and
                          the ``tagged_run_metadata`` torch writes beside it, tagged ``tag``
``onnx_graph``            a ``graph_def`` event made here from the ONNX model (opaque bytes: the
                          file ``add_onnx_graph`` was given), as torch makes it
========================  =====================================================================

numpy and tensorboard's plugin modules are imported here, in the worker; Pillow only for an
embedding's sprite, onnx only for an ONNX graph.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from typing import Any, Callable, Dict, List

from ..media import Media

logger = logging.getLogger(__name__)

MAX_PR_THRESHOLDS = 127
"""torch caps ``num_thresholds`` here ("value > 127 breaks protobuf")."""
MIN_PR_COUNT = 1e-7
"""The smallest denominator of precision and recall, as TensorBoard's pr_curve summary has it."""
CUSTOM_SCALARS_TAG = "custom_scalars__config__"
PROJECTOR_CONFIG = "projector_config.pbtxt"
CPU_DEVICE = "/device:CPU:0"
"""The one device of the step stats torch writes beside a graph (it says CPU whatever ran it)."""

# numpy dtype name → (TensorProto dtype, value field), as torch's tensor_proto maps torch dtypes.
# torch puts uint8 in uint32_val (its map names uint8 twice; the later entry wins) and a half's
# float32 bit pattern in half_val; statbus writes the same so both read back alike.
TENSOR_FIELDS: Dict[str, "tuple[str, str]"] = {
    "float16": ("DT_HALF", "half_val"),
    "bfloat16": ("DT_BFLOAT16", "half_val"),
    "float32": ("DT_FLOAT", "float_val"),
    "float64": ("DT_DOUBLE", "double_val"),
    "int8": ("DT_INT8", "int_val"),
    "uint8": ("DT_UINT8", "uint32_val"),
    "int16": ("DT_INT16", "int_val"),
    "int32": ("DT_INT32", "int_val"),
    "int64": ("DT_INT64", "int64_val"),
    "bool": ("DT_BOOL", "bool_val"),
}
_FLOAT_BITS = struct.Struct("<f")
_INT_BITS = struct.Struct("<i")


def _pb() -> Any:
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2

    return event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2


def _shape(dims: Any) -> Any:
    tensor_shape_pb2 = _pb()[3]
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(n)) for n in dims])


def _summary_event(*values: Any) -> Any:
    event_pb2, summary_pb2 = _pb()[:2]
    return event_pb2.Event(summary=summary_pb2.Summary(value=list(values)))


def _plugin_metadata(name: str, content: bytes = b"") -> Any:
    summary_pb2 = _pb()[1]
    return summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=name,
                                                                                           content=content))


def _float_tensor(array: Any) -> Any:
    tensor_pb2 = _pb()[2]
    return tensor_pb2.TensorProto(dtype="DT_FLOAT", float_val=array.reshape(-1).tolist(), tensor_shape=_shape(array.shape))


def _half_bits(value: float) -> int:
    # torch's half_to_int: the float32 bit pattern of the value, read as a signed int.
    return _INT_BITS.unpack(_FLOAT_BITS.pack(value))[0]


def tensor_event(media: Media, tag: str) -> Any:
    """``add_tensor``: the array in a ``tensor``-plugin summary, typed as torch types it."""
    tensor_pb2 = _pb()[2]
    dtype_name = media.options.get("torch_dtype") or media.dtype
    if dtype_name not in TENSOR_FIELDS:
        raise ValueError(f"{tag} has unsupported tensor dtype {dtype_name}")
    proto_dtype, field = TENSOR_FIELDS[dtype_name]
    values = media.array().reshape(-1).tolist()
    if field == "half_val":
        values = [_half_bits(v) for v in values]
    tensor = tensor_pb2.TensorProto(dtype=proto_dtype, tensor_shape=_shape(media.shape), **{field: values})
    value = _pb()[1].Summary.Value(tag=tag, metadata=_plugin_metadata("tensor"), tensor=tensor)
    return _summary_event(value)


def histogram_raw_event(media: Media, tag: str) -> Any:
    """``add_histogram_raw``: the caller's buckets and moments as one ``HistogramProto``."""
    summary_pb2 = _pb()[1]
    options = media.options
    histogram = summary_pb2.HistogramProto(
        min=options["min"], max=options["max"], num=options["num"], sum=options["sum"],
        sum_squares=options["sum_squares"], bucket_limit=media.array().tolist(),
        bucket=media.option_array("bucket_counts").tolist())
    return _summary_event(summary_pb2.Summary.Value(tag=tag, histo=histogram))


def pr_curve_data(labels: Any, predictions: Any, num_thresholds: int, weights: Any = None) -> Any:
    """The 6×``num_thresholds`` array TensorBoard's pr_curves plugin reads: TP, FP, TN, FN,
    precision, recall at thresholds ``i / (num_thresholds - 1)``.

    Each prediction falls into the bucket of the highest threshold at or below it; the counts
    at a threshold are those of its bucket and every higher one.
    """
    import numpy

    weights = 1.0 if weights is None else weights
    buckets = numpy.int32(numpy.floor(predictions * (num_thresholds - 1)))
    positive = labels.astype(numpy.float64)
    bounds = (0, num_thresholds - 1)
    tp_per_bucket = numpy.histogram(buckets, bins=num_thresholds, range=bounds, weights=positive * weights)[0]
    fp_per_bucket = numpy.histogram(buckets, bins=num_thresholds, range=bounds, weights=(1.0 - positive) * weights)[0]
    tp = numpy.cumsum(tp_per_bucket[::-1])[::-1]
    fp = numpy.cumsum(fp_per_bucket[::-1])[::-1]
    tn, fn = fp[0] - fp, tp[0] - tp
    precision = tp / numpy.maximum(MIN_PR_COUNT, tp + fp)
    recall = tp / numpy.maximum(MIN_PR_COUNT, tp + fn)
    return numpy.stack((tp, fp, tn, fn, precision, recall))


def _pr_curve_event(tag: str, data: Any, num_thresholds: int) -> Any:
    from tensorboard.plugins.pr_curve.plugin_data_pb2 import PrCurvePluginData

    content = PrCurvePluginData(version=0, num_thresholds=num_thresholds).SerializeToString()
    value = _pb()[1].Summary.Value(tag=tag, metadata=_plugin_metadata("pr_curves", content), tensor=_float_tensor(data))
    return _summary_event(value)


def _num_thresholds(media: Media) -> int:
    return min(int(media.options.get("num_thresholds", MAX_PR_THRESHOLDS)), MAX_PR_THRESHOLDS)


def pr_curve_event(media: Media, tag: str) -> Any:
    """``add_pr_curve``: the curve computed here from the labels and predictions."""
    weights = media.option_array("weights")
    if weights is None:
        weights = media.options.get("weights")
    count = _num_thresholds(media)
    return _pr_curve_event(tag, pr_curve_data(media.option_array("labels"), media.array(), count, weights), count)


PR_RAW_ROWS = ("tp", "fp", "tn", "fn", "precision", "recall")


def pr_curve_raw_event(media: Media, tag: str) -> Any:
    """``add_pr_curve_raw``: the caller's six rows, stacked."""
    import numpy

    data = numpy.stack([media.option_array(name) for name in PR_RAW_ROWS])
    return _pr_curve_event(tag, data, _num_thresholds(media))


def custom_scalars_event(media: Media, tag: str) -> Any:
    """``add_custom_scalars`` and its two short forms: the layout, one chart per title."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    tensor_pb2 = _pb()[2]
    categories = []
    for category, charts in media.options["layout"].items():
        built = []
        for title, (kind, tags) in charts.items():
            if kind == "Margin":
                series = layout_pb2.MarginChartContent.Series(value=tags[0], lower=tags[1], upper=tags[2])
                built.append(layout_pb2.Chart(title=title, margin=layout_pb2.MarginChartContent(series=[series])))
            else:  # torch draws any other kind as a multiline chart
                built.append(layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=tags)))
        categories.append(layout_pb2.Category(title=category, chart=built))
    layout = layout_pb2.Layout(category=categories)
    tensor = tensor_pb2.TensorProto(dtype="DT_STRING", string_val=[layout.SerializeToString()], tensor_shape=_shape(()))
    value = _pb()[1].Summary.Value(tag=CUSTOM_SCALARS_TAG, metadata=_plugin_metadata("custom_scalars"), tensor=tensor)
    return _summary_event(value)


def mesh_event(media: Media, tag: str) -> Any:
    """``add_mesh``: one summary value per component, each carrying the mesh's metadata."""
    from tensorboard.plugins.mesh import metadata
    from tensorboard.plugins.mesh.plugin_data_pb2 import MeshPluginData

    summary_pb2 = _pb()[1]
    parts = [(media.option_array(name), kind) for name, kind in
             (("vertices", MeshPluginData.VERTEX), ("faces", MeshPluginData.FACE), ("colors", MeshPluginData.COLOR))]
    parts = [(array, kind) for array, kind in parts if array is not None]
    components = metadata.get_components_bitmask([kind for _, kind in parts])
    config = media.options.get("config", "{}")
    values = []
    for array, kind in parts:
        meta = metadata.create_summary_metadata(tag, None, kind, components, list(array.shape), None,
                                                json_config=config)
        values.append(summary_pb2.Summary.Value(tag=metadata.get_instance_name(tag, kind),
                                                tensor=_float_tensor(array), metadata=meta))
    return _summary_event(*values)


def escape_tag(tag: str) -> str:
    """An embedding's tag as one folder name: "%", "/" and "\\" as %xx, as torch names it."""
    return tag.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")


def sprite_png(images: Any) -> bytes:
    """The projector's sprite of N×C×H×W images (C 1 or 3, floats in [0, 1]): a PNG of ceil(√N)
    columns, rows filled left to right, black where no image is, square unless the images are
    so tall that the rows need more height."""
    import io

    import numpy
    from PIL import Image

    count, channels, height, width = images.shape
    if channels == 1:
        images = numpy.repeat(images, 3, axis=1)
    columns = min(count, math.ceil(count ** 0.5))
    rows = math.ceil(count / columns)
    grid = numpy.zeros((rows * height, columns * width, 3), dtype=images.dtype)
    for index in range(count):
        row, column = divmod(index, columns)
        grid[row * height:(row + 1) * height, column * width:(column + 1) * width] = images[index].transpose(1, 2, 0)
    # torch pads the grid to a square as wide as it; the projector counts columns by the width,
    # so a grid taller than wide (tall images) keeps its width and its height.
    square = numpy.zeros((max(grid.shape[0], grid.shape[1]), grid.shape[1], 3))
    square[:grid.shape[0]] = grid
    buffer = io.BytesIO()
    Image.fromarray(numpy.uint8((square * 255).clip(0, 255))).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(path: str, data: bytes) -> None:
    # Whole or not at all: TensorBoard may read the folder at any moment, a worker may die mid-write.
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def write_embedding(media: Media, tag: str, step: int, directory: str) -> None:
    """``add_embedding``: tensors.tsv, metadata.tsv and sprite.png of one embedding, and its entry
    in the folder's projector_config.pbtxt (replaced when already there: a replay writes it once)."""
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import EmbeddingInfo, ProjectorConfig

    subdir = f"{step:05d}/{escape_tag(tag)}"
    folder = os.path.join(directory, subdir)
    if os.path.isdir(folder):
        logger.warning("tensorboard: embedding folder %s exists already (add_embedding of one tag at one "
                       "global_step twice, or a replay after a restart); it is written again", folder)
    os.makedirs(folder, exist_ok=True)
    matrix = media.array()
    _write(os.path.join(folder, "tensors.tsv"),
           "".join("\t".join(str(v) for v in row) + "\n" for row in matrix.tolist()).encode("utf-8"))
    info = EmbeddingInfo(tensor_name=f"{tag}:{step:05d}", tensor_path=f"{subdir}/tensors.tsv")
    if "metadata_tsv" in media.options:
        _write(os.path.join(folder, "metadata.tsv"), media.options["metadata_tsv"].encode("utf-8"))
        info.metadata_path = f"{subdir}/metadata.tsv"
    images = media.option_array("label_img")
    if images is not None:
        _write(os.path.join(folder, "sprite.png"), sprite_png(images))
        info.sprite.image_path = f"{subdir}/sprite.png"
        info.sprite.single_image_dim.extend([images.shape[3], images.shape[2]])
    config = ProjectorConfig()
    config_path = os.path.join(directory, PROJECTOR_CONFIG)
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as handle:
            text_format.Parse(handle.read(), config)
    kept = [entry for entry in config.embeddings if entry.tensor_name != info.tensor_name]
    del config.embeddings[:]
    config.embeddings.extend(kept + [info])
    _write(config_path, text_format.MessageToString(config).encode("utf-8"))


def graph_events(media: Media, tag: str) -> List[Any]:
    """``add_graph``: the caller's GraphDef bytes as a ``graph_def`` event, and the (empty, CPU)
    step stats torch tags ``step1`` beside it."""
    from tensorboard.compat.proto import config_pb2, step_stats_pb2

    event_pb2 = _pb()[0]
    stats = config_pb2.RunMetadata(step_stats=step_stats_pb2.StepStats(
        dev_stats=[step_stats_pb2.DeviceStepStats(device=CPU_DEVICE)]))
    tagged = event_pb2.TaggedRunMetadata(tag=tag, run_metadata=stats.SerializeToString())
    return [event_pb2.Event(graph_def=media.data), event_pb2.Event(tagged_run_metadata=tagged)]


def onnx_graph_def(model_bytes: bytes) -> bytes:
    """An ONNX model as the GraphDef torch's ``add_onnx_graph`` writes: its inputs and outputs as
    ``Variable`` nodes (element type and shape), then one node per operator, named after its
    first output, its attributes' values as one text attribute ``parameters``."""
    import onnx
    from tensorboard.compat.proto.attr_value_pb2 import AttrValue
    from tensorboard.compat.proto.graph_pb2 import GraphDef
    from tensorboard.compat.proto.node_def_pb2 import NodeDef
    from tensorboard.compat.proto.versions_pb2 import VersionDef

    graph = onnx.load_from_string(model_bytes).graph
    nodes = []
    for value in [*graph.input, *graph.output]:
        tensor_type = value.type.tensor_type
        shape = _shape(dim.dim_value for dim in tensor_type.shape.dim)
        nodes.append(NodeDef(name=value.name, op="Variable", attr={
            "dtype": AttrValue(type=tensor_type.elem_type), "shape": AttrValue(shape=shape)}))
    for operator in graph.node:
        parameters = ", ".join(" = ".join(str(field_value) for _, field_value in attribute.ListFields())
                               for attribute in operator.attribute)
        nodes.append(NodeDef(name=operator.output[0], op=operator.op_type, input=operator.input,
                             attr={"parameters": AttrValue(s=parameters.encode("utf-8"))}))
    return GraphDef(node=nodes, versions=VersionDef(producer=22)).SerializeToString()


_TENSOR_USES: Dict[str, Callable[[Media, str], Any]] = {
    "tensor": tensor_event,
    "histogram_raw": histogram_raw_event,
    "pr_curve": pr_curve_event,
    "pr_curve_raw": pr_curve_raw_event,
    "custom_scalars": custom_scalars_event,
    "mesh": mesh_event,
}


def encode_tensor(media: Media, tag: str, directory: str) -> List[Any]:
    use = media.options.get("use", "tensor")
    if use == "graph":
        return graph_events(media, tag)
    if use == "onnx_graph":
        return [_pb()[0].Event(graph_def=onnx_graph_def(media.data))]
    if use == "embedding":
        write_embedding(media, tag, int(media.options.get("step", 0)), directory)
        return []
    encode = _TENSOR_USES.get(use)
    if encode is None:
        raise ValueError(f"tensorboard: unknown tensor use {use!r} of {tag!r}; known are "
                         f"{sorted([*_TENSOR_USES, 'embedding', 'graph', 'onnx_graph'])}")
    return [encode(media, tag)]


def encode_summary(media: Media, tag: str, directory: str) -> List[Any]:
    """``file_writer.add_summary``: the caller's serialized ``Summary`` in an event."""
    event_pb2, summary_pb2 = _pb()[:2]
    return [event_pb2.Event(summary=summary_pb2.Summary.FromString(media.data))]


def encode_event(media: Media, tag: str, directory: str) -> List[Any]:
    """``file_writer.add_event``: the caller's serialized ``Event`` as it is (the writer sets its
    ``wall_time`` and ``step``)."""
    return [_pb()[0].Event.FromString(media.data)]
