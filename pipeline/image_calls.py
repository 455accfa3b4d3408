"""The argument checks of ``SummaryWriter``'s image, video, audio and figure calls, and their media.

Each function checks at the call what torch's call would choke on (``TypeError``/``ValueError``
naming the tag), copies the array and returns the :class:`~statbus.plugins.media.Media` the
TensorBoard writer encodes in its worker (:mod:`statbus.plugins.writers.tb_images`).  Nothing
here imports torch, Pillow or matplotlib: a figure is pickled (stdlib), and rendered here, by
matplotlib's Agg, only when it cannot be pickled.
"""

from __future__ import annotations

import logging
import pickle
import sys
from typing import Any, Dict, List, Optional

from ..plugins.media import Media, MediaKind, array_fields, array_option
from .plugin_data_calls import _array

logger = logging.getLogger(__name__)

_AXES = {2: "HW", 3: "CHW", 4: "NCHW", 5: "NTCHW"}
"""Number of axes → the letters a ``dataformats`` of that many axes is made of."""
_MAIN = b"__main__"
_CHANNELS = {MediaKind.IMAGE: (1, 3, 4), MediaKind.IMAGES: (1, 3), MediaKind.VIDEO: (1, 3, 4)}


def _copy(tag: str, name: str, values: Any) -> "tuple[tuple, str, bytes]":
    """(shape, dtype, bytes) of ``values``, copied; a TypeError naming the tag if it is no array."""
    array = _array(tag, name, values)
    return tuple(array["shape"]), array["dtype"], array["data"]


def _check_formats(tag: str, shape: tuple, dataformats: Any, kind: MediaKind) -> str:
    """``dataformats`` upper-cased, checked against ``shape``: one letter per axis, each once,
    the letters of that many axes (e.g. "HWC" for 3), channels 1, 3 or 4 (a grid: 1 or 3)."""
    if not isinstance(dataformats, str):
        raise TypeError(f"statbus: dataformats of {tag!r} must be a str, got {type(dataformats).__name__}")
    formats = dataformats.upper()
    wanted = _AXES.get(len(formats))
    if wanted is None or sorted(formats) != sorted(wanted) or len(shape) != len(formats) \
            or (kind is MediaKind.VIDEO) != (len(formats) == 5):
        letters = "NTCHW in any order" if kind is MediaKind.VIDEO else "HW, CHW or NCHW in any order"
        raise ValueError(f"statbus: {tag!r} has shape {list(shape)} and dataformats {dataformats!r}: it needs one "
                         f"letter per axis, each once ({letters})")
    if 0 in shape:
        raise ValueError(f"statbus: {tag!r} has an empty axis (shape {list(shape)})")
    if "C" in formats:
        channels = shape[formats.index("C")]
        allowed = _CHANNELS[MediaKind.IMAGES if len(formats) == 4 else kind]
        if channels not in allowed:
            raise ValueError(f"statbus: {tag!r} has {channels} channels (dataformats {dataformats!r}); "
                             f"it needs {' or '.join(map(str, allowed))}")
    return formats


def _rate(tag: str, name: str, value: Any, least: float) -> "int | float":
    """A positive number (numpy's too) as a plain int or float, > 0 or >= ``least`` when that is 1."""
    try:
        number = value.__index__() if hasattr(value, "__index__") else float(value)
    except (TypeError, ValueError):
        number = None
    if isinstance(value, (bool, str, bytes)) or number is None or not (number >= least if least else number > 0) \
            or number != number or number == float("inf"):
        bound = f">= {least}" if least else "> 0"
        raise ValueError(f"statbus: {name} of {tag!r} must be a number {bound}, got {value!r:.80}")
    return number


def image_media(tag: str, img_tensor: Any, dataformats: str, kind: MediaKind = MediaKind.IMAGE) -> Media:
    """``add_image``/``add_images``: the array as it is; uint8 is 0–255, anything else [0, 1]."""
    shape, dtype, data = _copy(tag, "img_tensor", img_tensor)
    formats = _check_formats(tag, shape, dataformats, kind)
    return Media(kind, shape, dtype, data, {"dataformats": formats})


def boxes_media(tag: str, img_tensor: Any, box_tensor: Any, rescale: Any, dataformats: str,
                labels: Any) -> Media:
    """``add_image_with_boxes``: the image, the N×4 boxes (xmin, ymin, xmax, ymax), the labels
    (dropped when they are not one per box, as torch does) and ``rescale``."""
    media = image_media(tag, img_tensor, dataformats)
    if len(media.shape) != 3:
        raise ValueError(f"statbus: add_image_with_boxes({tag!r}) takes one image (3 axes), got shape {list(media.shape)}")
    boxes = array_option(_check_boxes(tag, box_tensor))
    rescale = _rate(tag, "rescale", rescale, 0)
    if labels is not None:
        labels = [labels] if isinstance(labels, str) else list(labels)
        if not all(isinstance(label, str) for label in labels):
            raise TypeError(f"statbus: labels of {tag!r} must be strs")
        labels = [str(label) for label in labels]  # numpy's str_ too, as plain str for msgpack
        if len(labels) != boxes["shape"][0]:
            labels = None
    options: Dict[str, Any] = {"dataformats": media.dataformats, "boxes": boxes, "rescale": rescale}
    if labels is not None:
        options["labels"] = labels
    return media._replace(options=options)


def _check_boxes(tag: str, box_tensor: Any) -> Any:
    shape, dtype, data = _copy(tag, "box_tensor", box_tensor)
    if len(shape) != 2 or shape[1] != 4:
        raise ValueError(f"statbus: box_tensor of {tag!r} must be N×4 (xmin, ymin, xmax, ymax), got shape {list(shape)}")
    import numpy

    return numpy.frombuffer(data, dtype=dtype).reshape(shape)


def video_media(tag: str, vid_tensor: Any, fps: Any, dataformats: str) -> Media:
    """``add_video``: N×T×C×H×W (or ``dataformats``, tensorboardX's spelling) and fps."""
    fps = _rate(tag, "fps", fps, 0)
    shape, dtype, data = _copy(tag, "vid_tensor", vid_tensor)
    formats = _check_formats(tag, shape, dataformats, MediaKind.VIDEO)
    return Media(MediaKind.VIDEO, shape, dtype, data, {"dataformats": formats, "fps": fps})


def audio_media(tag: str, snd_tensor: Any, sample_rate: Any) -> Media:
    """``add_audio``: one channel of samples in [-1, 1] (louder ones are clipped, as torch does)."""
    sample_rate = _rate(tag, "sample_rate", sample_rate, 1)
    shape, dtype, data = _copy(tag, "snd_tensor", snd_tensor)
    if sum(1 for n in shape if n != 1) > 1:
        raise ValueError(f"statbus: add_audio({tag!r}) takes one channel (1-D samples), got shape {list(shape)}")
    length = 1
    for n in shape:
        length *= n
    return Media(MediaKind.AUDIO, (length,), dtype, data, {"sample_rate": sample_rate})


def figure_media(tag: str, figure: Any, close: bool) -> Media:
    """``add_figure``: the figure (or list of figures) pickled, to be rendered in the worker; when
    it cannot be pickled, rendered here by Agg (what torch does for every figure) and sent as RGBA.
    ``close``: closed through pyplot, as torch does (pyplot is loaded when the figure came from it)."""
    figures: List[Any] = figure if isinstance(figure, list) else [figure]
    if not figures or not all(hasattr(item, "savefig") and hasattr(item, "canvas") for item in figures):
        raise TypeError(f"statbus: figure of {tag!r} must be a matplotlib Figure or a list of them, "
                        f"got {type(figure).__name__}")
    try:
        data = pickle.dumps(figure, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 — any unpicklable artist (a lambda formatter, a GUI handle)
        logger.debug("statbus: figure %r could not be pickled (%r); rendering it in the caller", tag, exc)
        data = None
    if data is None or _MAIN in data:
        # A function or class of the training script (__main__) pickles by name, and the worker
        # has no such module to find it in.
        media = _rendered(tag, figures, isinstance(figure, list))
    else:
        media = Media(MediaKind.FIGURE, (), "", data, {"pickled": True, "list": isinstance(figure, list)})
    if close:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            for item in figures:
                pyplot.close(item)
    return media


def _rendered(tag: str, figures: List[Any], is_list: bool) -> Media:
    from ..plugins.writers.tb_images import render_rgba

    images = [render_rgba(item) for item in figures]
    if is_list and len({image.shape for image in images}) != 1:
        raise ValueError(f"statbus: the figures of {tag!r} must all have one size in pixels")
    import numpy

    shape, dtype, data = array_fields(numpy.stack(images) if is_list else images[0])
    return Media(MediaKind.FIGURE, shape, dtype, data, {"pickled": False})

