"""Timing helpers the benchmarks share (wall clock; callers block on JAX results themselves)."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Hashable


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` calls of ``fn`` after one warm-up call (compiles, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def alternating_medians(variants: dict[Hashable, Callable[[], object]], repeats: int) -> dict[Hashable, float]:
    """Median seconds of each variant: one warm-up call each, then ``repeats`` rounds in which
    the variants run in turn, so a change of machine load hits them all alike."""
    for fn in variants.values():
        fn()
    times = {key: [] for key in variants}
    for _ in range(repeats):
        for key, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    return {key: statistics.median(ts) for key, ts in times.items()}
