"""Calling-thread cost of the plugin-data calls: torch's SummaryWriter against statbus's part.

    python scripts/plugin_data_cost.py [REPEATS]

statbus's part is the argument checks and copies of :mod:`statbus.pipeline.plugin_data_calls`
(what a ``SummaryWriter`` method does before the trainer client's ``add_media`` hand-off); torch's
is its whole method, into a temporary folder.  Prints the median milliseconds of each.  The
numbers in the README and docs/guide.md come from here (2 shared cores: noisy).
"""

from __future__ import annotations

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
    from torch.utils.tensorboard import SummaryWriter

    from statbus.pipeline import plugin_data_calls as calls

    warnings.simplefilter("ignore")  # torch 2.13's tracer warns that it is deprecated, at every add_graph
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 8, 4), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 4, 2),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32 * 9 * 9, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 4))
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 2, 10_000), rng.random(10_000)
    points, images, names = torch.randn(1000, 64), torch.rand(1000, 3, 16, 16), [str(i) for i in range(1000)]
    with tempfile.TemporaryDirectory() as folder:
        writer = SummaryWriter(folder)
        rows = [
            ("add_graph, MLP 4-64-2", lambda: writer.add_graph(mlp, torch.zeros(1, 4)),
             lambda: calls.graph_media(mlp, torch.zeros(1, 4), False, True)),
            ("add_graph, Atari CNN 3x84x84", lambda: writer.add_graph(cnn, torch.zeros(1, 3, 84, 84)),
             lambda: calls.graph_media(cnn, torch.zeros(1, 3, 84, 84), False, True)),
            ("add_pr_curve, 10k predictions", lambda: writer.add_pr_curve("pr", labels, predictions, 0),
             lambda: calls.pr_curve_media("pr", labels, predictions, 127, None)),
            ("add_embedding, 1000x64, 1000 images 3x16x16", lambda: writer.add_embedding(points, names, images, 1),
             lambda: calls.embedding_media("e", points, names, images, 1, None)),
        ]
        for name, torch_call, statbus_call in rows:
            print(f"{name}: torch {median_ms(torch_call, repeats):.3f} ms, "
                  f"statbus {median_ms(statbus_call, repeats):.3f} ms")
        writer.close()


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
