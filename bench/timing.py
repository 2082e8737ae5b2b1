"""Timing shared by the benchmarks: medians, because these machines are noisy."""

from __future__ import annotations

import statistics
import time


def median_seconds(fn, repeats: int, warm_up: bool = True) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after one untimed call."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
