"""Rating jobs split over threads: the bootstrap rounds (or pairs) of one fit, one slice per CPU."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

MIN_THREAD_WORK = 2e6  # rough inner-loop steps below which a job stays on the calling thread


def in_threads(call: Callable[[int, int], F64], n: int, work: float) -> F64:
    """call(lo, hi) over slices of range(n) on up to one thread per CPU, results stacked on axis 0.

    The kernels release the GIL and seed every round (or pair) on its own, so the result is the same
    on any number of threads. Small jobs (`work` in rough inner-loop steps) stay on this thread."""
    workers = min(os.cpu_count() or 1, n, 8)
    if workers <= 1 or work < MIN_THREAD_WORK:
        return call(0, n)
    bounds = np.linspace(0, n, workers + 1).astype(np.int64)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(lambda t: call(int(bounds[t]), int(bounds[t + 1])), range(workers)))
    return np.concatenate(parts, axis=0)
