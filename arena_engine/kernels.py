"""Loading the compiled kernels (numba) that a run's results need, while its requests are in flight.

A run loads them in a thread once its first request is on its way (run.Arena). With numba's disk
cache warm that is about a second of loading. Right after an install the cache is empty, and the
ROUGE/BLEU kernel takes about 4 s of CPU to compile (rating a run of up to 131,072 games needs numpy
only: see `rating._aggregate.NUMPY_ROWS`). That compile would hold the GIL away from the event loop and
make a first run wait for it at its end, so instead a child process compiles the kernel into the cache
on the other core, and the run does not wait for it: small batches are scored in Python until the kernel
is loaded here (`metrics.PYTHON_PAIRS`, the same results to the bit), larger ones load the kernel from
the cache (or compile it here if the child has not finished). The child ends once the cache is written,
even if the run has finished before it; later runs find the cache warm.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

CHILD_TIMEOUT = 300.0  # s; compiling takes a few seconds
_children: list[subprocess.Popen[bytes]] = []  # kept referenced: a child outlives the run that started it
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


def warm(method: str, interval: str) -> None:
    """Load the rating and metrics kernels of a run rated by ``method`` / ``interval``; when numba's
    cache lacks the metrics kernel, start a child process that compiles it there instead."""
    if _cold():
        _start_child()
    else:
        from .metrics import load_kernel

        load_kernel()
    load_rating(method, interval)


def load_rating(method: str, interval: str) -> None:
    """Rate a tiny input once: numba loads the kernels it uses from its cache, or compiles them."""
    import numpy as np

    from .rating import rate_battles

    two = np.array([0, 1], dtype=np.int64)
    rate_battles(two, two[::-1].copy(), np.array([1, -1], dtype=np.int8), two, models=["a", "b"], baseline="a",
                 rounds=2, seed=0, method=method, interval=interval)  # type: ignore[arg-type]


def wait_for_compiling(timeout: float = CHILD_TIMEOUT) -> None:
    """Wait until the child processes compiling kernels have finished (for tests and benchmarks)."""
    for child in _children:
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    _children.clear()


def _cold() -> bool:
    """Whether numba's cache lacks the metrics kernel (the one a first run spends its seconds on)."""
    try:
        from .metrics import _score_pairs

        index = _score_pairs._cache._cache_file._index_path  # type: ignore[attr-defined]  # numba's index
        return not os.path.exists(index)
    except Exception:  # another numba layout: load() compiles in this process if it must
        log.debug("cannot tell whether numba's cache is warm", exc_info=True)
        return False


def _start_child() -> None:
    """A child process compiling the metrics kernel into numba's cache (none where one cannot start)."""
    if getattr(sys, "frozen", False) or not sys.executable:
        return
    if any(child.poll() is None for child in _children):
        return  # one is compiling already (an earlier run of this process started it)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    code = "from arena_engine.metrics import load_kernel; load_kernel()"
    try:
        _children.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    except OSError as exc:
        log.debug("cannot start a process to compile the kernels: %s", exc)
