"""The image, video, audio and figure calls torch's (video: tensorboardX's) SummaryWriter and statbus's
get (imported by the tests; run as their child: ``python image_sequence.py statbus LOG_DIR``).

The data is numpy's only, so the statbus child can check that its calls load no torch, Pillow or
matplotlib (the figures need matplotlib, the user's own; they come last).
"""

from __future__ import annotations

import sys

IMAGE_TAGS = ("image/chw", "image/hwc", "image/hw", "image/rgba", "images", "boxes", "figure", "figures",
              "figure/unpicklable", "figure/script_function")
VIDEO_TAGS = ("video",)
AUDIO_TAGS = ("audio",)


def image_calls(writer, np) -> None:
    """add_image, add_images, add_image_with_boxes (numpy data; the steps say which call is which)."""
    rng = np.random.default_rng(23)
    writer.add_image("image/chw", rng.integers(0, 256, (3, 84, 84), dtype=np.uint8), 0)
    writer.add_image("image/chw", rng.random((3, 84, 84), dtype=np.float32) * 1.2 - 0.1, 1)  # clipped
    writer.add_image("image/hwc", rng.random((30, 40, 1)), 2, dataformats="HWC")
    writer.add_image("image/hw", rng.random((30, 40)), 3, dataformats="HW")
    writer.add_image("image/rgba", rng.integers(0, 256, (4, 20, 24), dtype=np.uint8), 4)
    writer.add_images("images", rng.integers(0, 256, (16, 3, 20, 20), dtype=np.uint8), 5)
    writer.add_images("images", rng.random((5, 8, 9, 1)), 6, dataformats="NHWC")
    image, boxes = rng.random((3, 64, 80), dtype=np.float32), np.array([[5, 5, 40, 30], [10.5, 20, 70, 60]])
    writer.add_image_with_boxes("boxes", image, boxes, 7, labels=["cat", "dog"])
    writer.add_image_with_boxes("boxes", image, boxes, 8, rescale=2, labels=["one label for two boxes: dropped"])


def video_calls(writer, np) -> None:
    rng = np.random.default_rng(5)
    writer.add_video("video", rng.integers(0, 256, (1, 20, 3, 32, 32), dtype=np.uint8), 13, fps=10)
    writer.add_video("video", rng.random((3, 5, 1, 16, 16), dtype=np.float32), 14)  # a 2×2 grid, one black
    still = np.repeat(rng.integers(0, 256, (2, 1, 8, 8, 3), dtype=np.uint8), 4, axis=1)
    writer.add_video("video", still, 15, fps=2, dataformats="NTHWC")


def audio_calls(writer, np) -> None:
    t = np.arange(16000) / 16000
    writer.add_audio("audio", (np.sin(2 * np.pi * 440 * t) * 0.8).astype(np.float32), 12, sample_rate=16000)
    writer.add_audio("audio", np.linspace(-1.5, 1.5, 4410).reshape(1, -1), 16)  # clipped


def figure_calls(writer, np) -> None:
    """add_figure: one figure, a list of two (a grid), one that cannot be pickled (rendered in the caller)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    def figure(scale):
        fig = plt.figure(figsize=(3, 2), dpi=50)
        fig.add_subplot(1, 1, 1).plot(np.arange(10), np.arange(10) ** scale)
        return fig

    writer.add_figure("figure", figure(2), 9)
    writer.add_figure("figures", [figure(1), figure(0.5)], 10)
    unpicklable = figure(3)
    unpicklable.axes[0].xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0f}s"))
    writer.add_figure("figure/unpicklable", unpicklable, 11)
    by_name = figure(1)  # its formatter pickles as a name of this script, which the worker cannot import
    by_name.axes[0].yaxis.set_major_formatter(FuncFormatter(seconds))
    writer.add_figure("figure/script_function", by_name, 17)
    assert not plt.get_fignums(), "add_figure closes the figures (close=True)"


def seconds(x, _position) -> str:
    return f"{x:.0f}s"


def main(kind: str, log_dir: str) -> None:
    """``kind`` statbus: every call into ``log_dir`` through statbus's writer; it checks that none
    but the figures' loads torch, Pillow or matplotlib."""
    import numpy as np

    from statbus.pipeline import SummaryWriter

    assert kind == "statbus", kind
    writer = SummaryWriter(log_dir)
    image_calls(writer, np)
    video_calls(writer, np)
    audio_calls(writer, np)
    loaded = sorted({name.split(".")[0] for name in sys.modules} & {"torch", "PIL", "matplotlib", "moviepy"})
    assert not loaded, f"statbus's image, video and audio calls loaded {loaded}"
    figure_calls(writer, np)
    assert "torch" not in sys.modules and "moviepy" not in sys.modules
    writer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
