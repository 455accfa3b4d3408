"""Small statistics for the benchmark: medians and percentiles of samples (no numpy in the trainer's path)."""

from __future__ import annotations

import math
import statistics
from typing import Dict, Sequence


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in [0, 1]); NaN for no samples."""
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return float(ordered[index])


def spread(values: Sequence[float]) -> Dict[str, float]:
    """p50, p99 and max of ``values``."""
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99),
            "max": max(values) if values else math.nan}
