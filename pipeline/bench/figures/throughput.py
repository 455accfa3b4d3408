"""Figure 2 — throughput: trainer processes → collector (journal on) → 4 plugins, against raw pyzmq.

Per repetition and trainer count, A then B:

* A (statbus): N trainer processes record their share of the values with
  ``StatsReporter`` and ``flush()`` (everything acked = journaled); then every
  plugin (null, jsonl, tensorboard, console) is waited on until its cursor
  passed the journal head.  "acked" rates end at the last trainer's flush,
  "delivered" rates when the last plugin caught up.
* C (collector intake alone): the same frames, re-encoded as one new sender,
  sent by one process to a second collector that runs no plugins; timed to
  the ack of the last (decode, validate, dedupe, journal, aggregate, ack).
* B (raw limit): the very frames A put in the journal, read back, pushed by one
  process over plain PUSH→PULL to another, no decoding, no collector.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Dict, List, Sequence

from ...journal.reader import iter_entries
from ...journal.segments import EntryType
from ..children import Children
from ..collector import BenchCollector, BenchError, wait_for
from ..procs import write_frames
from ..stats import median

logger = logging.getLogger(__name__)

PLUGINS = ("null", "jsonl", "tensorboard", "console")


@dataclasses.dataclass(frozen=True)
class ThroughputConfig:
    trainers: Sequence[int] = (1, 4, 8)
    values: int = 1_200_000
    """Values per run (shared by the trainers), written in summaries of 100 values per key."""
    summaries: int = 20_000
    """write_stats calls per run of the summary-heavy workload (12 values each)."""
    repetitions: int = 5
    timeout: float = 120.0


def _statbus_run(collector: BenchCollector, root: str, ntrainers: int, values: int, write_every: int,
                 timeout: float, tag: str) -> Dict[str, Any]:
    layout = collector.layout
    env = dict(os.environ)
    env.pop("STATBUS_ADDRESS", None)
    with Children() as children:
        for i in range(ntrainers):
            children.start(["trainer", "--run-id", layout.run_id, "--results-dir", layout.results_dir,
                            "--category", f"{tag}{i}", "--values", str(values // ntrainers),
                            "--write-every", str(write_every), "--timeout", str(timeout)], env)
        children.wait_ready(timeout)
        head_go = collector.status()["journal"]["head"]
        children.go()
        results = children.results(timeout)
    started = min(r["started"] for r in results)
    acked = max(r["done"] for r in results) - started
    head = collector.status()["journal"]["head"]
    wait_for(lambda: collector.committed_past(PLUGINS, head), timeout, "every plugin to catch up", 0.005)
    delivered = time.monotonic() - started
    frames = [e.payload for e in iter_entries(layout.journal_dir, after=head_go)
              if e.type == EntryType.FRAME and e.position < head]
    path = os.path.join(root, f"frames-{tag}-{ntrainers}.bin")
    write_frames(path, frames)
    nvalues = sum(r["values"] for r in results)
    nsummaries = sum(r["summaries"] for r in results)
    return {"values": nvalues, "summaries": nsummaries, "acked_s": acked, "delivered_s": delivered,
            "frames": len(frames), "frames_file": path, "all_flushed": all(r["flushed"] for r in results)}


def _intake_run(intake: BenchCollector, frames_file: str, timeout: float) -> float:
    with Children() as children:
        child = children.start(["replay", "--address", intake.layout.data_address, "--frames", frames_file,
                                "--timeout", str(timeout)])
        children.wait_ready(timeout)
        children.go()
        result = child.read(timeout)
    if "error" in result:
        raise RuntimeError(f"replay: {result['error']}")
    return result["done"] - result["started"]


def _raw_run(root: str, frames_file: str, nframes: int, timeout: float) -> float:
    # A Linux abstract socket per run: no path length limit to meet in a deep temporary
    # directory, no file left behind, and nothing of an earlier pair can meet this one.
    address = f"ipc://@statbus-bench-{os.getpid()}-{os.path.basename(frames_file)}"
    with Children() as children:
        puller = children.start(["raw-pull", "--address", address, "--count", str(nframes),
                                 "--timeout", str(timeout)])
        if not puller.read(timeout).get("ready"):
            raise RuntimeError("raw puller not ready")
        pusher = children.start(["raw-push", "--address", address, "--frames", frames_file,
                                 "--timeout", str(timeout)])
        if not pusher.read(timeout).get("ready"):
            raise RuntimeError("raw pusher not ready")
        pusher.go()
        started = pusher.read(timeout)["started"]
        done = puller.read(timeout + 30.0)  # the puller reports its own timeout first
        pusher.go()  # let it go now
        if "error" in done:
            pusher_code = pusher.proc.poll()
            raise RuntimeError(f"raw puller: {done['error']} (pusher exit status {pusher_code})")
    return done["done"] - started


def _raw_run_retried(root: str, frames_file: str, nframes: int, timeout: float) -> float:
    # A measurement of zmq alone: a failure (never seen since the pusher waits for the
    # puller) is retried once, logged, rather than allowed to sink the whole benchmark.
    try:
        return _raw_run(root, frames_file, nframes, min(timeout, 20.0))
    except (RuntimeError, BenchError) as exc:
        logger.warning("raw PUSH/PULL run failed (%s); running it again", exc)
        return _raw_run(root, frames_file, nframes, timeout)


def run(root: str, config: ThroughputConfig) -> Dict[str, Any]:
    """Returns ``{workload: {ntrainers: figures}}`` with medians over the repetitions."""
    # Big segments: no rotation (and so no retention) while frames are read back from the journal.
    collector = BenchCollector(root, "thru", PLUGINS, extra_args=("--segment-mb", "1024"))
    intake = BenchCollector(root, "intake", (), extra_args=("--segment-mb", "1024"))
    samples: Dict[str, Dict[int, List[Dict[str, float]]]] = {"values": {}, "summaries": {}}
    try:
        collector.start()
        intake.start()
        collector.wait_ready()
        intake.wait_ready()
        wait_for(collector.workers_ready, 60.0, "the throughput workers")
        for rep in range(config.repetitions):
            for n in config.trainers:
                for workload, total, every in (("values", config.values, 1200),
                                               ("summaries", config.summaries * 12, 12)):
                    a = _statbus_run(collector, root, n, total, every, config.timeout, f"{workload[0]}{rep}n{n}t")
                    alone = _intake_run(intake, a["frames_file"], config.timeout)
                    raw = _raw_run_retried(root, a["frames_file"], a["frames"], config.timeout)
                    os.unlink(a["frames_file"])
                    samples[workload].setdefault(n, []).append({
                        "acked_values_per_s": a["values"] / a["acked_s"],
                        "delivered_values_per_s": a["values"] / a["delivered_s"],
                        "acked_summaries_per_s": a["summaries"] / a["acked_s"],
                        "delivered_summaries_per_s": a["summaries"] / a["delivered_s"],
                        "raw_values_per_s": a["values"] / raw,
                        "raw_summaries_per_s": a["summaries"] / raw,
                        "raw_frames_per_s": a["frames"] / raw,
                        "ratio_to_raw": raw / a["acked_s"],
                        "intake_values_per_s": a["values"] / alone,
                        "intake_summaries_per_s": a["summaries"] / alone,
                        "intake_ratio_to_raw": raw / alone,
                        "frames": a["frames"],
                        "values": a["values"],
                        "summaries": a["summaries"],
                    })
    finally:
        try:
            intake.close()
        finally:
            collector.close()
    out: Dict[str, Any] = {}
    for workload, by_n in samples.items():
        out[workload] = {
            str(n): {key: median([s[key] for s in runs]) for key in runs[0]} | {"repetitions": len(runs)}
            for n, runs in by_n.items()
        }
    return out
