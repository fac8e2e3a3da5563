"""Shared by the benchmark scripts: timing and peak memory."""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager


@contextmanager
def timed(results: dict, key: str):
    """Time the block into ``results[key]``; timed again, the key keeps the best (least noisy) run."""
    start = time.perf_counter()
    yield
    results[key] = min(results.get(key, float("inf")), time.perf_counter() - start)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

