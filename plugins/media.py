"""The media record: images, video, audio, figures and TensorBoard protos, as a plugin gets them.

ML-Agents' ``StatsWriter`` has no media method, so ML-Agents plugins never see media.  A
statbus-aware writer gets them by defining one more method::

    def add_media(self, category: str, tag: str, media: Media, step: int) -> None: ...

It is called in journal order, between the ``write_stats`` calls, once per media value a
trainer recorded (``SummaryWriter.add_image``, ``add_video``, ...).  ``media`` holds the
caller's raw data, copied and not encoded: encoding (PNG, GIF, WAV, protos) is the
writer's job, in its own process, so that the training thread does almost nothing.

A :class:`Media` is

* ``kind`` — what it is (:class:`MediaKind`);
* ``shape``, ``dtype``, ``data`` — one array, C order, little-endian: ``data`` is its bytes,
  ``dtype`` a numpy dtype name (``"uint8"``, ``"float32"``, ...), or ``""`` when ``data`` is
  opaque bytes (a pickled figure, a serialized proto) and ``shape`` is ``()``;
* ``options`` — what the call said besides the array (plain msgpack values: ``dataformats``,
  ``fps``, ``sample_rate``, ...; further arrays, such as the boxes of
  ``add_image_with_boxes``, as :func:`array_option` dicts).

Each kind's options are listed in :class:`MediaKind`.  :meth:`Media.array` gives the data as
a numpy array (numpy is imported only then).
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import Any, Dict, Mapping, NamedTuple, Tuple

from .errors import RecordError

MAX_MEDIA_BYTES = 64 * 1024 * 1024
"""The largest media value, in bytes of raw data (its array and the arrays in its options)."""


class MediaKind(Enum):
    """What a media value is; the value is its wire code.

    Options each kind carries (all optional unless said):
    """

    IMAGE = "image"
    """One image. ``dataformats`` ("CHW", "HWC", "HW", ...; torch's default "CHW");
    ``boxes`` (an array N×4, xmin ymin xmax ymax), ``labels`` (list of str),
    ``rescale`` for ``add_image_with_boxes``."""
    IMAGES = "images"
    """A batch of images shown as one grid. ``dataformats`` ("NCHW" default, "NHWC", ...)."""
    VIDEO = "video"
    """Frames N×T×C×H×W (or ``dataformats``); ``fps`` (default 4)."""
    AUDIO = "audio"
    """Samples in [-1, 1], one channel; ``sample_rate`` (default 44100)."""
    FIGURE = "figure"
    """A matplotlib figure (or a list of them, shown as one grid) pickled (dtype ""), or
    rendered to an RGBA array, H×W×4 or N×H×W×4, when it could not be pickled; ``pickled``
    (bool), ``list`` (bool: the pickle is a list)."""
    TENSOR = "tensor"
    """Any array, e.g. ``add_tensor``'s, ``add_histogram_raw``'s, a PR curve's, a mesh's, an
    embedding's: what it is is said by ``options["use"]`` and the options that use needs."""
    HPARAMS = "hparams"
    """``add_hparams``'s: no array (shape ``()``, dtype "", data b""); ``hparams`` (name → value),
    ``metrics`` (name → value), ``hparam_domain_discrete`` (name → list), as given; ``bools``
    (True: bools are bools, as tensorboardX writes them; else numbers, as torch does)."""
    SUMMARY = "summary"
    """A serialized TensorBoard ``Summary`` proto (dtype ""), as ``file_writer.add_summary``
    got it."""
    EVENT = "event"
    """A serialized TensorBoard ``Event`` proto (dtype ""), as ``file_writer.add_event`` got it."""


_KINDS = {kind.value: kind for kind in MediaKind}


class Media(NamedTuple):
    """One media value: raw data and what is needed to encode it (see the module's text)."""

    kind: MediaKind
    shape: Tuple[int, ...]
    dtype: str
    data: bytes
    options: Mapping[str, Any]

    @property
    def nbytes(self) -> int:
        """Raw bytes of this value: its data and the arrays among its options."""
        return len(self.data) + sum(len(v["data"]) for v in self.options.values() if _is_array_option(v))

    @property
    def fps(self) -> float:
        return self.options.get("fps", 4)

    @property
    def sample_rate(self) -> float:
        return self.options.get("sample_rate", 44100)

    @property
    def dataformats(self) -> str:
        return self.options.get("dataformats", "")

    def array(self) -> Any:
        """The data as a numpy array of ``shape`` and ``dtype`` (read-only, no copy)."""
        return _to_array(self.shape, self.dtype, self.data)

    def option_array(self, name: str) -> Any:
        """The array option ``name`` as a numpy array, or None when there is none."""
        value = self.options.get(name)
        return _to_array(value["shape"], value["dtype"], value["data"]) if _is_array_option(value) else None

    def to_msgpack(self) -> list:
        return [self.kind.value, list(self.shape), self.dtype, self.data, dict(self.options)]


def _is_array_option(value: Any) -> bool:
    return isinstance(value, dict) and value.keys() == {"shape", "dtype", "data"}


def _to_array(shape: Any, dtype: str, data: bytes) -> Any:
    import numpy

    return numpy.frombuffer(data, dtype=numpy.dtype(dtype).newbyteorder("<")).reshape(tuple(shape))


def array_fields(values: Any) -> Tuple[Tuple[int, ...], str, bytes]:
    """(shape, dtype, bytes) of an array-like (numpy array, torch tensor, nested lists), copied.

    A torch tensor is moved to the CPU and detached through its own methods: torch is
    never imported here.
    """
    import numpy

    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor
        values = values.detach().cpu().numpy()
    array = numpy.asarray(values)
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise TypeError(f"expected an array of numbers, got dtype {array.dtype}")
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    return tuple(int(n) for n in array.shape), array.dtype.name, numpy.ascontiguousarray(array).tobytes()


def array_option(values: Any) -> Dict[str, Any]:
    """An array as an option value: ``{"shape": [...], "dtype": str, "data": bytes}``."""
    shape, dtype, data = array_fields(values)
    return {"shape": list(shape), "dtype": dtype, "data": data}


def decode_media(obj: Any) -> Media:
    """The :class:`Media` of :meth:`Media.to_msgpack`'s form; raises :class:`RecordError`."""
    if not isinstance(obj, (list, tuple)) or len(obj) != 5:
        raise RecordError("media must be [kind, shape, dtype, data, options]")
    kind, shape, dtype, data, options = obj
    if kind not in _KINDS:
        raise RecordError(f"unknown media kind {kind!r}; known are {sorted(_KINDS)}")
    if not isinstance(shape, (list, tuple)) or not all(type(n) is int and n >= 0 for n in shape):
        raise RecordError(f"media shape must be a list of non-negative ints, got {shape!r}")
    if not isinstance(dtype, str) or not isinstance(data, bytes) or not isinstance(options, dict):
        raise RecordError("media dtype must be a str, data bytes and options a map")
    if dtype:
        size = 1
        for n in shape:
            size *= n
        try:
            import numpy

            itemsize = numpy.dtype(dtype).itemsize
        except TypeError:
            raise RecordError(f"unknown media dtype {dtype!r}") from None
        if size * itemsize != len(data):
            raise RecordError(f"media of shape {list(shape)} and dtype {dtype} needs {size * itemsize} bytes, "
                              f"got {len(data)}")
    return Media(_KINDS[kind], tuple(shape), dtype, data, options)
