"""add_image, add_images, add_image_with_boxes, add_figure, add_video and add_audio through statbus,
against torch's writer (video: tensorboardX's), read back with TensorBoard's reader."""

from __future__ import annotations

import io
import pickle
import wave

import numpy as np
import pytest

import image_sequence
from image_sequence import AUDIO_TAGS, IMAGE_TAGS, VIDEO_TAGS
from summary_writer_helpers import run_child, start_collector, stop

from statbus.plugins.media import Media, MediaKind, array_fields, array_option


def read_media(directory: str) -> dict:
    """tag → [(step, what it decodes to)] of every image (pixels, or GIF frames) and audio (samples)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(directory, size_guidance={"images": 0, "audio": 0})
    acc.Reload()
    tags = acc.Tags()
    found = {tag: [(e.step, (e.width, e.height), decode_image(e.encoded_image_string)) for e in acc.Images(tag)]
             for tag in tags["images"]}
    found.update({tag: [(e.step, (e.content_type, e.sample_rate, e.length_frames), decode_wav(e.encoded_audio_string))
                        for e in acc.Audio(tag)] for tag in tags["audio"]})
    return found


def decode_image(encoded: bytes) -> tuple:
    """A PNG's (format, mode, pixels); a GIF's format, frame count and frames as RGB."""
    from PIL import Image, ImageSequence

    with Image.open(io.BytesIO(encoded)) as image:
        if image.format == "GIF":
            frames = [np.asarray(frame.convert("RGB")).tolist() for frame in ImageSequence.Iterator(image)]
            return image.format, len(frames), frames
        return image.format, image.mode, np.asarray(image).tolist()


def decode_wav(encoded: bytes) -> tuple:
    with wave.open(io.BytesIO(encoded)) as wav:
        return wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.readframes(wav.getnframes())


def reference(directory) -> None:
    """The sequence through torch's writer (video through tensorboardX's) into ``directory``/torch and /tbx."""
    from tensorboardX import SummaryWriter as TbxWriter
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    torch_writer = TorchWriter(str(directory / "torch"))
    image_sequence.image_calls(torch_writer, np)
    image_sequence.audio_calls(torch_writer, np)
    image_sequence.figure_calls(torch_writer, np)
    torch_writer.close()
    tbx_writer = TbxWriter(str(directory / "tbx"))
    image_sequence.video_calls(tbx_writer, np)
    tbx_writer.close()


def test_each_call_lands_through_a_collector_as_torch_writes_it(tmp_path):
    """The same calls through torch's and tensorboardX's writers and, in a child process (which checks
    it loads no torch, Pillow or matplotlib for them), through statbus's to a real collector: the
    same tags and steps, the same pixels, GIF frames and WAV samples."""
    reference(tmp_path / "reference")
    log_dir = tmp_path / "statbus" / "runs" / "exp1"
    collector = start_collector(str(tmp_path / "statbus"), "runs")
    try:
        run_child("statbus", str(log_dir), script=image_sequence.__file__)
        stop(collector)
    finally:
        collector.close()
    got = read_media(str(log_dir))
    want = {**read_media(str(tmp_path / "reference" / "torch")), **read_media(str(tmp_path / "reference" / "tbx"))}
    assert sorted(got) == sorted(want) == sorted(IMAGE_TAGS + VIDEO_TAGS + AUDIO_TAGS)
    for tag in want:
        assert [point[:2] for point in got[tag]] == [point[:2] for point in want[tag]], tag  # steps, sizes
        assert got[tag] == want[tag], tag
    # What the calls were meant to write (not only equal to torch's).
    assert [step for step, *_ in got["video"]] == [13, 14, 15]
    assert [decoded[:2] for _, _, decoded in got["video"]] == [("GIF", 20), ("GIF", 5), ("GIF", 1)]  # a still: one frame
    assert got["images"][0][1] == (8 * 20, 2 * 20) and got["boxes"][1][1] == (80, 64)
    assert got["image/rgba"][0][2][1] == "RGBA"
    assert got["audio"][0][1] == ("audio/wav", 16000, 16000)


# --- the encoders alone, against torch's summary functions ----------------------------------------


def media(kind: MediaKind, values, **options) -> Media:
    shape, dtype, data = array_fields(values)
    return Media(kind, shape, dtype, data, options)


def image_of(events) -> object:
    assert len(events) == 1
    return events[0].summary.value[0].image


@pytest.mark.parametrize("dataformats,shape,dtype", [("CHW", (3, 84, 84), np.uint8), ("HWC", (84, 50, 1), np.float32),
                                                      ("HW", (20, 30), np.float64), ("CHW", (4, 10, 12), np.uint8),
                                                      ("WHC", (12, 10, 3), np.float32)])
def test_encode_image_is_torchs_png(dataformats, shape, dtype):
    from torch.utils.tensorboard.summary import image

    from statbus.plugins.writers.tb_images import encode_image

    rng = np.random.default_rng(1)
    values = rng.integers(0, 256, shape).astype(dtype) if dtype == np.uint8 else (rng.random(shape) * 1.4 - 0.2).astype(dtype)
    want = image("t", values, dataformats=dataformats).value[0].image
    assert image_of(encode_image(media(MediaKind.IMAGE, values, dataformats=dataformats), "t", "")) == want


def test_encode_images_is_torchs_grid():
    from torch.utils.tensorboard.summary import image

    from statbus.plugins.writers.tb_images import encode_images

    batch = np.random.default_rng(2).random((11, 1, 7, 5))
    want = image("t", batch, dataformats="NCHW").value[0].image
    got = image_of(encode_images(media(MediaKind.IMAGES, batch), "t", ""))  # NCHW by default
    assert got == want and (got.width, got.height) == (8 * 5, 2 * 7)


def test_encode_image_with_boxes_draws_as_torch():
    from torch.utils.tensorboard.summary import image_boxes

    from statbus.plugins.writers.tb_images import encode_image

    image = np.random.default_rng(3).random((3, 40, 60))
    boxes = np.array([[2, 3, 30, 20], [10, 10, 55, 38]])
    for labels, rescale in ((None, 1), (["a", "bird"], 1), (["a", "bird"], 0.5)):
        want = image_boxes("t", image, boxes, rescale=rescale, labels=labels).value[0].image
        options = {"dataformats": "CHW", "boxes": array_option(boxes), "rescale": rescale,
                   **({"labels": labels} if labels else {})}
        assert image_of(encode_image(media(MediaKind.IMAGE, image, **options), "t", "")) == want


def test_encode_video_gives_tensorboardxs_frames_at_fps():
    from PIL import Image, ImageSequence
    from tensorboardX.summary import video

    from statbus.plugins.writers.tb_images import encode_video

    clips = np.random.default_rng(4).integers(0, 256, (2, 6, 3, 10, 12), dtype=np.uint8)
    want = video("t", clips, fps=20).value[0].image
    got = image_of(encode_video(media(MediaKind.VIDEO, clips, fps=20), "t", ""))
    assert (got.height, got.width, got.colorspace) == (want.height, want.width, want.colorspace) == (10, 24, 3)
    assert decode_image(got.encoded_image_string) == decode_image(want.encoded_image_string)
    with Image.open(io.BytesIO(got.encoded_image_string)) as gif:
        assert [frame.info["duration"] for frame in ImageSequence.Iterator(gif)] == [50] * 6
        assert gif.info["loop"] == 0
    for fps, centiseconds in ((30, 3), (60, 2), (0.5, 200)):
        with Image.open(io.BytesIO(gif_bytes(clips[:1, :2], fps))) as gif:
            assert gif.info["duration"] == centiseconds * 10, fps


def gif_bytes(clips, fps) -> bytes:
    from statbus.plugins.writers.tb_images import encode_video

    return image_of(encode_video(media(MediaKind.VIDEO, clips, fps=fps), "t", "")).encoded_image_string


def test_encode_audio_is_torchs_wav():
    from torch.utils.tensorboard.summary import audio

    from statbus.plugins.writers.tb_images import encode_audio

    samples = np.random.default_rng(5).random(4410).astype(np.float32) * 2 - 1
    want = audio("t", samples, sample_rate=22050).value[0].audio
    assert encode_audio(media(MediaKind.AUDIO, samples, sample_rate=22050), "t", "")[0].summary.value[0].audio == want


def test_encode_figure_renders_the_pickle_as_torch_renders_the_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch.utils.tensorboard.summary import image
    from torch.utils.tensorboard._utils import figure_to_image

    from statbus.plugins.writers.tb_images import encode_figure

    fig = plt.figure(figsize=(2, 2), dpi=40)
    fig.add_subplot(1, 1, 1).plot([0, 1, 4])
    data = pickle.dumps(fig)
    want = image("t", figure_to_image(fig, close=True), dataformats="CHW").value[0].image
    got = image_of(encode_figure(Media(MediaKind.FIGURE, (), "", data, {"pickled": True}), "t", ""))
    assert got == want and not plt.get_fignums()  # the worker closes what unpickling opened


def test_a_figure_the_worker_cannot_unpickle_is_skipped_and_logged(caplog):
    from statbus.plugins.writers.tb_images import encode_figure

    data = b"cno_such_module\nFigure\n."  # a pickle of a class no worker can import
    with caplog.at_level("ERROR"):
        assert encode_figure(Media(MediaKind.FIGURE, (), "", data, {"pickled": True}), "fig", "") == []
    assert "figure 'fig' could not be unpickled" in caplog.text


def test_bad_arguments_raise_at_the_call_naming_the_tag():
    from statbus.pipeline import image_calls as calls

    cases = [
        (lambda: calls.image_media("i", np.zeros((3, 4)), "CHW"), ValueError, r"'i' has shape \[3, 4\] and dataformats 'CHW'"),
        (lambda: calls.image_media("i", np.zeros((2, 4, 4)), "CHW"), ValueError, "'i' has 2 channels"),
        (lambda: calls.image_media("i", np.zeros((2, 4, 4, 4)), "NCHW", MediaKind.IMAGES), ValueError,
         "'i' has 4 channels .* it needs 1 or 3"),
        (lambda: calls.image_media("i", np.zeros((3, 0, 4)), "CHW"), ValueError, "'i' has an empty axis"),
        (lambda: calls.image_media("i", np.zeros((3, 4, 4)), "CCW"), ValueError, "each once"),
        (lambda: calls.image_media("i", "pixels", "CHW"), TypeError, "img_tensor of 'i' must be an array"),
        (lambda: calls.boxes_media("b", np.zeros((3, 4, 4)), np.zeros((2, 3)), 1, "CHW", None), ValueError,
         "box_tensor of 'b' must be N×4"),
        (lambda: calls.boxes_media("b", np.zeros((3, 4, 4)), np.zeros((2, 4)), 0, "CHW", None), ValueError,
         "rescale of 'b' must be a number > 0"),
        (lambda: calls.video_media("v", np.zeros((1, 2, 3, 4)), 4, "NTCHW"), ValueError, "'v' has shape"),
        (lambda: calls.video_media("v", np.zeros((1, 2, 3, 4, 4)), 0, "NTCHW"), ValueError, "fps of 'v'"),
        (lambda: calls.audio_media("a", np.zeros((2, 10)), 44100), ValueError, r"add_audio\('a'\) takes one channel"),
        (lambda: calls.audio_media("a", np.zeros(10), 0), ValueError, "sample_rate of 'a' must be a number >= 1"),
        (lambda: calls.video_media("v", np.zeros((1, 2, 3, 4, 4)), float("nan"), "NTCHW"), ValueError, "fps of 'v'"),
        (lambda: calls.video_media("v", np.zeros((1, 2, 3, 4, 4)), "30", "NTCHW"), ValueError, "fps of 'v'"),
        (lambda: calls.figure_media("f", np.zeros((3, 3)), True), TypeError, "figure of 'f' must be a matplotlib Figure"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_calls_copy_torch_tensors_as_numpy_arrays():
    import torch

    from statbus.pipeline.image_calls import audio_media, boxes_media, image_media, video_media

    values = np.random.default_rng(6).random((3, 5, 5), dtype=np.float32)
    assert image_media("i", torch.tensor(values), "CHW") == image_media("i", values, "CHW")
    boxes = boxes_media("b", torch.tensor(values), torch.tensor([[1, 1, 3, 3]]), 1, "CHW", "one")
    assert boxes.options["labels"] == ["one"] and boxes.option_array("boxes").tolist() == [[1, 1, 3, 3]]
    labels = boxes_media("b", values, [[1, 1, 3, 3]], 1, "CHW", np.array(["cat"])).options["labels"]
    assert labels == ["cat"] and type(labels[0]) is str
    assert audio_media("a", torch.zeros(1, 8), 8000).shape == (8,)
    assert audio_media("a", values[0, 0], np.int64(8000)).options["sample_rate"] == 8000  # plain, for msgpack
    assert type(video_media("v", values[None, None], np.float32(7.5), "NTCHW").options["fps"]) is float


def test_methods_take_torchs_parameters_in_torchs_order():
    import inspect

    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    from statbus.pipeline import SummaryWriter

    for name in ("add_image", "add_images", "add_image_with_boxes", "add_figure", "add_video", "add_audio"):
        want = [(p.name, p.default) for p in inspect.signature(getattr(TorchWriter, name)).parameters.values()]
        got = [(p.name, p.default) for p in inspect.signature(getattr(SummaryWriter, name)).parameters.values()]
        extra = [("dataformats", "NTCHW")] if name == "add_video" else []  # tensorboardX's spelling
        assert got == want + extra, name
