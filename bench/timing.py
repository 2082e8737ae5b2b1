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


def interleaved_median_seconds(fns, repeats: int) -> list[float]:
    """Median seconds of each of ``fns``, their calls taken in turn (after one untimed round), so a
    change in the machine's load between calls falls on all of them alike and their ratios hold."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]
