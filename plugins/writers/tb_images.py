"""TensorBoard encoders of images, image batches, boxes, video, audio and figures (issue 23).

Each ``encode_*`` takes a :class:`~statbus.plugins.media.Media` as ``SummaryWriter`` sent it
(raw data, not encoded) and returns the events torch 2.13's ``SummaryWriter`` would write for
the same call: a PNG made by Pillow for images and figures (a batch laid out as torch's
``make_grid``: 8 per row, grey channels made RGB), an animated GIF for video (frames laid out
and quantized as tensorboardX 2.6.5 through moviepy and imageio does, written with Pillow
alone, each frame lasting 1/fps), a 16-bit mono WAV for audio.  numpy, Pillow and matplotlib
are imported here only, and this module only when the writer meets such a media value.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import sys
import wave
from typing import Any, List, Optional, Sequence

from ..media import Media, MediaKind

logger = logging.getLogger(__name__)

GRID_COLUMNS = 8
"""Images per row of an ``add_images`` grid (torch's ``make_grid``)."""
BOX_COLOR = "Red"
BOX_WIDTH = 2
INT16_MAX = 32767
MIN_FRAME_CS = 2
"""A GIF frame's shortest time, in 1/100 s, that browsers play as written."""
DEFAULT_FORMATS = {MediaKind.IMAGE: "CHW", MediaKind.IMAGES: "NCHW", MediaKind.VIDEO: "NTCHW"}


def _summary_event(value: Any) -> Any:
    from tensorboard.compat.proto import event_pb2, summary_pb2

    return event_pb2.Event(summary=summary_pb2.Summary(value=[value]))


def _value(tag: str, **fields: Any) -> Any:
    from tensorboard.compat.proto import summary_pb2

    return summary_pb2.Summary.Value(tag=tag, **fields)


def to_hwc(array: Any, dataformats: str) -> Any:
    """An image (2-, 3- or 4-D, as ``dataformats`` names its axes) as height × width × channels,
    grey made RGB and a batch laid out as one grid, as torch's ``convert_to_HWC`` does."""
    import numpy as np

    formats = dataformats.upper()
    if len(formats) == 4:
        batch = array.transpose([formats.index(axis) for axis in "NCHW"])
        return grid(batch).transpose(1, 2, 0)
    if len(formats) == 3:
        hwc = array.transpose([formats.index(axis) for axis in "HWC"])
        return np.concatenate([hwc] * 3, axis=2) if hwc.shape[2] == 1 else hwc
    hw = array.transpose([formats.index(axis) for axis in "HW"])
    return np.stack([hw] * 3, axis=2)


def grid(batch: Any, columns: int = GRID_COLUMNS) -> Any:
    """N×C×H×W (C 1 or 3) → 3×(rows·H)×(columns·W), row by row, the rest black."""
    import numpy as np

    if batch.shape[1] == 1:
        batch = np.concatenate([batch] * 3, axis=1)
    count, _, height, width = batch.shape
    columns = min(count, columns)
    rows = -(-count // columns)
    canvas = np.zeros((3, height * rows, width * columns), dtype=batch.dtype)
    for index in range(count):
        row, column = divmod(index, columns)
        canvas[:, row * height:(row + 1) * height, column * width:(column + 1) * width] = batch[index]
    return canvas


def to_uint8(array: Any) -> Any:
    """torch's scaling: uint8 as it is, anything else taken as [0, 1] and times 255; clipped, truncated."""
    import numpy as np

    if array.dtype == np.uint8:
        return array
    return (array.astype(np.float32) * 255).clip(0, 255).astype(np.uint8)


def png_image(hwc: Any, rescale: float = 1, boxes: Any = None, labels: Optional[Sequence[str]] = None) -> Any:
    """A ``Summary.Image`` of an H×W×C uint8 array: boxes drawn, resized by ``rescale``, PNG."""
    from PIL import Image
    from tensorboard.compat.proto import summary_pb2

    height, width, channels = hwc.shape
    image = Image.fromarray(hwc)
    if boxes is not None:
        for index, box in enumerate(boxes.tolist()):
            _draw_box(image, box, None if labels is None else labels[index])
    image = image.resize((int(width * rescale), int(height * rescale)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return summary_pb2.Summary.Image(height=height, width=width, colorspace=channels,
                                     encoded_image_string=out.getvalue())


def _draw_box(image: Any, box: Sequence[float], label: Optional[str]) -> None:
    """One box (xmin, ymin, xmax, ymax) as torch draws it: a red outline, the label on red at its
    lower left corner."""
    from PIL import ImageDraw, ImageFont

    left, top, right, bottom = box
    draw = ImageDraw.Draw(image)
    draw.line([(left, top), (left, bottom), (right, bottom), (right, top), (left, top)],
              width=BOX_WIDTH, fill=BOX_COLOR)
    if label:
        font = ImageFont.load_default()
        text_left, text_top, text_right, text_bottom = font.getbbox(label)
        text_width, text_height = text_right - text_left, text_bottom - text_top
        margin = float(math.ceil(0.05 * text_height))
        draw.rectangle([(left, bottom - text_height - 2 * margin), (left + text_width, bottom)], fill=BOX_COLOR)
        draw.text((left + margin, bottom - text_height - margin), label, fill="black", font=font)


def encode_image(media: Media, tag: str, directory: str) -> List[Any]:
    """``add_image``/``add_images``/``add_image_with_boxes``: one PNG (a batch as a grid)."""
    hwc = to_hwc(media.array(), media.dataformats or DEFAULT_FORMATS[media.kind])
    boxes = media.option_array("boxes")
    image = png_image(to_uint8(hwc), media.options.get("rescale", 1), boxes, media.options.get("labels"))
    return [_summary_event(_value(tag, image=image))]


encode_images = encode_image


def video_frames(array: Any, dataformats: str) -> Any:
    """N×T×C×H×W (or ``dataformats``) → T×H'×W'×C uint8 frames: the N videos side by side, N padded
    to a power of two with black ones, as tensorboardX lays them out and scales them (it takes
    uint8 to [0, 1] and back, which gives every uint8 value back: kept as it is here)."""
    import numpy as np

    formats = (dataformats or "NTCHW").upper()
    videos = array.transpose([formats.index(axis) for axis in "NTCHW"])
    count, frames, channels, height, width = videos.shape
    padded = 1 << (count - 1).bit_length() if count else 1
    if padded != count:  # float64 zeros, as tensorboardX's: a float32 video is scaled in float64 then
        fill = np.uint8 if videos.dtype == np.uint8 else np.float64
        zeros = np.zeros((padded - count, frames, channels, height, width), dtype=fill)
        videos = np.concatenate((videos, zeros), axis=0)
    rows = 2 ** ((count.bit_length() - 1) // 2)
    columns = padded // rows
    tiled = videos.reshape(rows, columns, frames, channels, height, width).transpose(2, 0, 4, 1, 5, 3)
    frames_hwc = tiled.reshape(frames, rows * height, columns * width, channels)
    if frames_hwc.dtype == np.uint8:
        return frames_hwc
    # In the array's own precision (float64 once padded), as tensorboardX scales; clipped, as torch does.
    return (frames_hwc * 255.0).clip(0, 255).astype(np.uint8)


def gif(frames: Any, fps: float) -> bytes:
    """An endlessly looping GIF of T×H×W×C uint8 frames, made by Pillow as tensorboardX's (through
    moviepy and imageio) is: RGB frames (grey made RGB, alpha dropped), each quantized to 256
    colours, equal neighbours merged.  One difference: each frame lasts 1/fps here, where imageio
    2.38 takes moviepy's seconds for milliseconds and writes no frame time at all.  A GIF counts
    time in 1/100 s and browsers slow frames shorter than 2/100 s down to 1/10 s: 1/fps is rounded
    to 1/100 s, at least 2/100 s (50 fps at most)."""
    from PIL import Image

    rgb = frames[:, :, :, :3] if frames.shape[3] >= 3 else frames[:, :, :, [0, 0, 0]]
    images = [Image.fromarray(frame) for frame in rgb]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=10 * max(MIN_FRAME_CS, round(100 / fps)),
                   loop=0)
    return out.getvalue()


def encode_video(media: Media, tag: str, directory: str) -> List[Any]:
    """``add_video``: an animated GIF, as ``Summary.Image`` (what TensorBoard's image tab plays)."""
    from tensorboard.compat.proto import summary_pb2

    frames = video_frames(media.array(), media.dataformats)
    _, height, width, channels = frames.shape
    image = summary_pb2.Summary.Image(height=height, width=width, colorspace=channels,
                                      encoded_image_string=gif(frames, media.fps))
    return [_summary_event(_value(tag, image=image))]


def encode_audio(media: Media, tag: str, directory: str) -> List[Any]:
    """``add_audio``: mono 16-bit WAV of the samples, clipped to [-1, 1]."""
    from tensorboard.compat.proto import summary_pb2

    samples = media.array().reshape(-1)
    if samples.size and abs(samples).max() > 1:
        samples = samples.clip(-1, 1)
    pcm = (samples * INT16_MAX).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(media.sample_rate)
        wav.writeframes(pcm.tobytes())
    audio = summary_pb2.Summary.Audio(sample_rate=media.sample_rate, num_channels=1, length_frames=len(pcm),
                                      encoded_audio_string=out.getvalue(), content_type="audio/wav")
    return [_summary_event(_value(tag, audio=audio))]


def render_rgba(figure: Any) -> Any:
    """A matplotlib figure drawn by Agg: H×W×4 uint8 (a copy)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    width, height = canvas.get_width_height()
    return np.frombuffer(canvas.buffer_rgba(), dtype=np.uint8).reshape(height, width, 4).copy()


def _unpickle_figures(data: bytes) -> List[Any]:
    import matplotlib

    matplotlib.use("Agg")  # a figure made through pyplot re-registers with pyplot on unpickling
    figures = pickle.loads(data)  # noqa: S301 — our own trainer's pickle, through the journal
    figures = figures if isinstance(figures, list) else [figures]
    pyplot = sys.modules.get("matplotlib.pyplot")
    rendered = [render_rgba(figure) for figure in figures]
    if pyplot is not None:
        for figure in figures:
            pyplot.close(figure)
    return rendered


def encode_figure(media: Media, tag: str, directory: str) -> List[Any]:
    """``add_figure``: the figure (or list of figures, as a grid) rendered by Agg, its RGB as PNG.
    ``options["pickled"]``: data is the pickle; else the caller's rendering, H×W×4 or N×H×W×4."""
    import numpy as np

    if media.options.get("pickled", bool(not media.dtype)):
        try:
            rgba = _unpickle_figures(media.data)
        except Exception as exc:  # noqa: BLE001 — a bad pickle must not stop the writer (and its other tags)
            logger.error("tensorboard: figure %r could not be unpickled and drawn here (%r): skipped; matplotlib "
                         "and the modules of the figure's artists must be importable in this worker", tag, exc)
            return []
        is_list = media.options.get("list", False)
    else:
        array = media.array()
        is_list = array.ndim == 4
        rgba = list(array) if is_list else [array]
    if is_list:
        hwc = to_hwc(np.stack([image[:, :, :3] for image in rgba]), "NHWC")
    else:
        hwc = np.ascontiguousarray(rgba[0][:, :, :3])
    return [_summary_event(_value(tag, image=png_image(hwc)))]
