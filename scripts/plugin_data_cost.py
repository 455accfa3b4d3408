"""Calling-thread cost of the plugin-data calls: torch's SummaryWriter against statbus's.

    python scripts/plugin_data_cost.py [REPEATS]

Each side's whole ``SummaryWriter`` method, timed on the calling thread (wall clock): torch's
into a temporary folder, statbus's into a run served by a real collector with the tensorboard
writer (started here, stopped at the end), which encodes meanwhile.  Prints the median
milliseconds of each, statbus's dropped media (none expected), and what the tensorboard
worker's encoders spend on a PR curve and an embedding.  The numbers in the README
and docs/guide.md come from here (2 shared cores: noisy).
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from typing import Callable


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # the first call pays imports and caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(repeats: int = 20) -> None:
    import numpy as np
    import torch
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    import statbus.pipeline as sp
    from statbus.pipeline.bench.collector import BenchCollector, wait_for
    from statbus.pipeline import plugin_data_calls as calls
    from statbus.pipeline.summary_writer import TORCH_LAYOUT_ARGS, SummaryWriter
    from statbus.plugins.writers.tb_plugin_data import encode_tensor

    warnings.simplefilter("ignore")  # torch 2.13's tracer warns that it is deprecated, at every add_graph
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 8, 4), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 4, 2),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32 * 9 * 9, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 4))
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 2, 10_000), rng.random(10_000)
    points, images, names = torch.randn(1000, 64), torch.rand(1000, 3, 16, 16), [str(i) for i in range(1000)]
    with tempfile.TemporaryDirectory() as root:
        collector = BenchCollector(root, "runs", ["tensorboard"], extra_args=TORCH_LAYOUT_ARGS)
        try:
            collector.start()
            collector.wait_ready()
            wait_for(collector.workers_ready, 60.0, "the tensorboard worker")
            os.environ["STATBUS_AUTOSTART"] = "0"  # the collector above serves the run
            writers = {"torch": TorchWriter(os.path.join(root, "torch")),
                       "statbus": SummaryWriter(os.path.join(collector.layout.run_dir, "exp"))}
            steps = iter(range(10**6))
            rows = [
                ("add_graph, MLP 4-64-2", lambda w: w.add_graph(mlp, torch.zeros(1, 4))),
                ("add_graph, Atari CNN 3x84x84", lambda w: w.add_graph(cnn, torch.zeros(1, 3, 84, 84))),
                ("add_pr_curve, 10k predictions", lambda w: w.add_pr_curve("pr", labels, predictions, next(steps))),
                ("add_embedding, 1000x64, 1000 images 3x16x16",
                 lambda w: w.add_embedding(points, names, images, next(steps))),
            ]
            for name, call in rows:
                measured = {kind: median_ms(lambda: call(writer), repeats) for kind, writer in writers.items()}
                print(f"{name}: torch {measured['torch']:.3f} ms, statbus {measured['statbus']:.3f} ms", flush=True)
            for writer in writers.values():
                writer.close()
            print(f"statbus media dropped: {sp.client_counters().get('media_dropped')}")
            # What the tensorboard worker spends on the same values (its encoders, in this process).
            logging.disable(logging.WARNING)  # the embedding folder is written again each round, on purpose
            worker = [("add_pr_curve", calls.pr_curve_media("pr", labels, predictions, 127, None)),
                      ("add_embedding", calls.embedding_media("e", points, names, images, 0, None))]
            for name, media in worker:
                print(f"worker, {name}: {median_ms(lambda: encode_tensor(media, 't', root), repeats):.3f} ms")
        finally:
            collector.close()


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
