"""A run's compiled kernels: with numba's cache empty (the first run after an install) the metrics kernel
is compiled in a child process, not on the thread beside the event loop, and a later run just loads it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

PROBE = """
import resource, sys, time, orjson
from arena_engine import kernels
cold = kernels._cold()
t = time.perf_counter()
kernels.warm("bt", "score")
kernels.wait_for_compiling()
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
from arena_engine.metrics import sample_metrics_batch
sys.stdout.buffer.write(orjson.dumps({"cold": cold, "wall": time.perf_counter() - t, "children_cpu": kids.ru_utime,
                                      "rouge": float(sample_metrics_batch(["a b c"], ["a b d"])[0, 0])}))
"""


def _probe(cache: Path) -> dict[str, float]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, timeout=240, check=True)
    return orjson.loads(done.stdout)


def test_an_empty_kernel_cache_is_filled_by_a_child_process_once(tmp_path: Path) -> None:
    first = _probe(tmp_path / "numba-cache")
    assert first["cold"] is True
    assert first["children_cpu"] > 1.0, first  # the child compiled: seconds of CPU, none of them on our GIL
    second = _probe(tmp_path / "numba-cache")
    assert second["cold"] is False and second["children_cpu"] == 0.0, second  # no child once the cache is warm
    assert first["rouge"] == second["rouge"] > 0.0  # the kernels the child compiled are the ones we use
