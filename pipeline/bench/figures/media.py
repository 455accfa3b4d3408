"""Figure 6, media: what images, video, figures, audio and histograms cost the calling thread.

Torch's, tensorboardX's and statbus's ``SummaryWriter`` run in one child process
(``python -m statbus.pipeline.bench.figures.media``, as figure 6's ``add_scalar`` part
does), rounds alternated torch → tensorboardX → statbus per call, medians over the
repetitions.  Each call is timed on the calling thread: its wall clock and its own CPU
clock (``thread_time``).  torch and tensorboardX encode on that thread (PNG, GIF, WAV,
the figure's rendering); statbus copies the array (pickles the figure) and hands it to
the trainer client, and the collector's tensorboard worker encodes.  The inputs: an
image 3×84×84 uint8, 16 of them, a small matplotlib line plot, a video 1×100×3×64×64
uint8 at 30 fps, 1 s of audio at 44.1 kHz, 10,000 floats for a histogram.  Figures are
made before the timed loop (making one is the caller's own work with any writer).

The figure runs twice against one collector: with the built-in writers, and with a
plugin that sleeps 50 ms per summary and per media value enabled too.  Then the
end-to-end rate: one trainer sends ``e2e_videos`` videos through statbus, and the
figure waits until the tensorboard worker has written them all (its cursor has caught
up); the videos per second from the first call to then, and the worker's CPU per video.
Skipped, with the reason, where torch, tensorboardX, matplotlib or moviepy is missing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

from ..children import run_json_child
from ..collector import BenchCollector, wait_for
from .frameworks import with_and_without_slow_plugin

KINDS = ("torch", "tensorboardX", "statbus")
CALLS = ("add_image", "add_images", "add_figure", "add_video", "add_audio", "add_histogram")
NOT_MEASURED = {("tensorboardX", "add_audio")}
"""tensorboardX's add_audio needs the soundfile package (libsndfile); torch's is the reference there."""
E2E_CATEGORY = "bench-e2e"
E2E_TAG = "e2e/video"


@dataclasses.dataclass(frozen=True)
class MediaConfig:
    repetitions: int = 3
    calls: Tuple[Tuple[str, int], ...] = (("add_image", 40), ("add_images", 8), ("add_figure", 8), ("add_video", 2),
                                          ("add_audio", 10), ("add_histogram", 40))
    """Calls per round, per method (torch's add_video takes about a second a call)."""
    e2e_videos: int = 40
    enabled: bool = True


def missing() -> List[str]:
    """The libraries this figure needs that are not installed."""
    return [name for name in ("torch", "tensorboardX", "matplotlib", "moviepy") if importlib.util.find_spec(name) is None]


def _writer(kind: str, log_dir: str) -> Any:
    if kind == "torch":
        from torch.utils.tensorboard import SummaryWriter
    elif kind == "tensorboardX":
        from tensorboardX import SummaryWriter
    else:
        from ...summary_writer import SummaryWriter  # type: ignore[assignment]
    return SummaryWriter(log_dir)


def _inputs() -> Dict[str, Any]:
    import numpy

    rng = numpy.random.default_rng(6)
    return {
        "image": rng.integers(0, 256, (3, 84, 84), dtype=numpy.uint8),
        "images": rng.integers(0, 256, (16, 3, 84, 84), dtype=numpy.uint8),
        "video": rng.integers(0, 256, (1, 100, 3, 64, 64), dtype=numpy.uint8),
        "audio": (numpy.sin(numpy.linspace(0, 440 * 2 * numpy.pi, 44_100)) * 0.5).astype(numpy.float32)[None, :],
        "histogram": rng.standard_normal(10_000).astype(numpy.float32),
    }


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure = pyplot.figure(figsize=(4, 3))
    pyplot.plot(range(100), [i * i % 17 for i in range(100)])
    return figure


def _call(writer: Any, name: str, inputs: Dict[str, Any], step: int, figure: Any = None) -> None:
    tag = f"bench/{name}"
    if name == "add_image":
        writer.add_image(tag, inputs["image"], step)
    elif name == "add_images":
        writer.add_images(tag, inputs["images"], step)
    elif name == "add_figure":
        writer.add_figure(tag, figure, step)  # close=True (the default): the figure is gone after the call
    elif name == "add_video":
        writer.add_video(tag, inputs["video"], step, fps=30)
    elif name == "add_audio":
        writer.add_audio(tag, inputs["audio"], step, sample_rate=44_100)
    else:
        writer.add_histogram(tag, inputs["histogram"], step)


def _round(writer: Any, name: str, calls: int, inputs: Dict[str, Any], step0: int) -> Dict[str, float]:
    figures = [_figure() for _ in range(calls)] if name == "add_figure" else [None] * calls
    wall = cpu = 0
    for i in range(calls):
        cpu0, wall0 = time.thread_time_ns(), time.perf_counter_ns()
        _call(writer, name, inputs, step0 + i, figures[i])
        wall += time.perf_counter_ns() - wall0
        cpu += time.thread_time_ns() - cpu0
    return {"ms_per_call": wall / calls / 1e6, "cpu_ms_per_call": cpu / calls / 1e6}


def child(run_dir: str, config: MediaConfig, e2e: bool) -> Dict[str, Any]:
    """Runs in the child: the alternated rounds (or the end-to-end send); returns medians per writer and call."""
    import torch

    torch.set_num_threads(1)
    inputs = _inputs()
    if e2e:
        from ...summary_writer import SummaryWriter

        writer = SummaryWriter(os.path.join(run_dir, E2E_CATEGORY))
        started = time.time()
        for step in range(config.e2e_videos):
            writer.add_video(E2E_TAG, inputs["video"], step, fps=30)
        sent = time.time()
        writer.close()
        return {"started": started, "sent": sent, "closed": time.time()}
    writers = {kind: _writer(kind, os.path.join(run_dir, f"bench-media-{kind}")) for kind in KINDS}
    runs: Dict[str, Dict[str, List[Dict[str, float]]]] = {kind: {name: [] for name, _ in config.calls} for kind in KINDS}
    step = 0
    try:
        for _ in range(config.repetitions):
            for name, calls in config.calls:
                for kind in KINDS:
                    if (kind, name) not in NOT_MEASURED:
                        runs[kind][name].append(_round(writers[kind], name, calls, inputs, step))
                step += calls
            for kind in KINDS:
                writers[kind].flush()
    finally:
        for writer in writers.values():
            writer.close()
    return {kind: {name: {"ms_per_call": statistics.median(r["ms_per_call"] for r in results),
                          "cpu_ms_per_call": statistics.median(r["cpu_ms_per_call"] for r in results)}
                   for name, results in per_call.items() if results}
            for kind, per_call in runs.items()}


def _run_child(collector: BenchCollector, config: MediaConfig, scenario: str) -> Dict[str, Any]:
    out_path = os.path.join(collector.root, f"media-{scenario}.json")
    env = dict(collector.env, STATBUS_AUTOSTART="0", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    args = [collector.layout.run_dir, out_path, json.dumps(dataclasses.asdict(config)),
            "e2e" if scenario == "e2e" else "calls"]
    return run_json_child(__name__, args, out_path, env, timeout=900.0)


def _video_events(directory: str) -> int:
    """How many video events (``E2E_TAG``) the event files in ``directory`` hold, read with TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    accumulator = EventAccumulator(directory, size_guidance={IMAGES: 0})
    accumulator.Reload()
    return len(accumulator.Images(E2E_TAG)) if E2E_TAG in accumulator.Tags().get("images", []) else 0


def _end_to_end(collector: BenchCollector, config: MediaConfig) -> Dict[str, Any]:
    import psutil

    worker = psutil.Process(int(collector.plugin(collector.status(), "tensorboard")["pid"]))
    cpu0 = sum(worker.cpu_times()[:2])
    sent = _run_child(collector, config, "e2e")
    wait_for(lambda: collector.caught_up(["tensorboard"]), 600.0, "the tensorboard worker to write every video")
    done = time.time()
    cpu = sum(worker.cpu_times()[:2]) - cpu0
    landed = _video_events(os.path.join(collector.layout.run_dir, E2E_CATEGORY))
    return {"videos": config.e2e_videos, "landed": landed, "seconds": done - sent["started"],
            "videos_per_s": config.e2e_videos / (done - sent["started"]),
            "worker_cpu_ms_per_video": cpu * 1000 / config.e2e_videos,
            "send_ms_per_video": (sent["sent"] - sent["started"]) * 1000 / config.e2e_videos}


def run(root: str, config: MediaConfig) -> Dict[str, Any]:
    if not config.enabled:
        return {"skipped": "not in this mode"}
    absent = missing()
    if absent:
        return {"skipped": f"{' and '.join(absent)} not installed (pip install -e '.[frameworks]')"}
    return with_and_without_slow_plugin(root, "media", lambda collector, name: _run_child(collector, config, name),
                                        between=lambda collector: {"e2e": _end_to_end(collector, config)})


TARGETS: Dict[str, Tuple[float, str]] = {
    "add_video": (100.0, "≤ 1/100 torch"),
    "add_figure": (10.0, "≤ 1/10 torch"),
    "add_image": (5.0, "≤ 1/5 torch"),
    "add_images": (5.0, "≤ 1/5 torch"),
}
"""call → (how many times cheaper than torch statbus must be on the calling thread, the target's words)."""


def rows(figure: Dict[str, Any], row: Callable[..., Any], unchanged: Callable[[float, float, float], bool]) -> List[Any]:
    """The figure's table rows (``row`` builds one: figure, measure, statbus, reference, target, passed)."""
    label = "6 media"
    if "skipped" in figure:
        return [row(label, "media calls: torch, tensorboardX, statbus", "skipped", figure["skipped"], "", None)]
    out = []
    normal, sleepy = figure["normal"], figure["sleepy"]
    for name in CALLS:
        if name not in normal["statbus"]:
            continue
        s, t, x = (normal[kind].get(name) for kind in ("statbus", "torch", "tensorboardX"))
        factor, words = TARGETS.get(name, (0.0, ""))
        out.append(row(label, f"{name}, ms/call (calling thread, wall; CPU)",
                       f"{s['ms_per_call']:.3f}; {s['cpu_ms_per_call']:.3f}",
                       f"torch {t['ms_per_call']:.2f}; {t['cpu_ms_per_call']:.2f}"
                       + (f", tensorboardX {x['ms_per_call']:.2f}" if x else ""),
                       words, s["ms_per_call"] <= t["ms_per_call"] / factor if factor else None))
        # Judged on the calling thread's CPU: its wall clock also holds the waits for one of two
        # cores that the encoding and the sleeping plugin's workers share with the benchmark.
        slow = sleepy["statbus"][name]
        out.append(row(label, f"+50 ms writer: {name}, CPU ms/call with / without (wall with)",
                       f"{slow['cpu_ms_per_call']:.3f} ({slow['ms_per_call']:.3f})", f"{s['cpu_ms_per_call']:.3f}",
                       "statbus unchanged", unchanged(slow["cpu_ms_per_call"], s["cpu_ms_per_call"], 0.2)))
    e2e = figure["e2e"]
    out.append(row(label, f"end to end: {e2e['videos']} videos 1×100×3×64×64 → event file",
                   f"{e2e['videos_per_s']:.1f} videos/s", f"{e2e['landed']} of {e2e['videos']} in TensorBoard",
                   "every video lands", e2e["landed"] == e2e["videos"]))
    out.append(row(label, "end to end: tensorboard worker CPU per video (GIF encoding)",
                   f"{e2e['worker_cpu_ms_per_video']:.0f} ms", f"caller {e2e['send_ms_per_video']:.2f} ms/video",
                   "", None))
    return out


if __name__ == "__main__":
    run_dir_arg, out_arg, config_arg, mode_arg = sys.argv[1:5]
    loaded = json.loads(config_arg)
    loaded["calls"] = tuple(tuple(pair) for pair in loaded["calls"])
    result = child(run_dir_arg, MediaConfig(**loaded), mode_arg == "e2e")
    with open(out_arg, "w", encoding="utf-8") as out_file:
        json.dump(result, out_file)
