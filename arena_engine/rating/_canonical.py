"""Clusters in an order fixed by their content, so resampling never depends on how queries are numbered.

A bootstrap round draws counts for clusters by position. If positions followed the integer query
codes, renumbering the queries (same clusters, other ids) would hand the counts to other clusters
and move every bound. Here clusters are ordered by a 64-bit hash of their content (their rows, in a
fixed order within the cluster), so the same multiset of clusters always gets the same positions.
Clusters with equal hashes are (but for a 2^-64 collision) identical, hence interchangeable: any
order among them gives bit-identical totals.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def _mix(h: np.uint64, v: np.uint64) -> np.uint64:  # pragma: no cover - numba
    z = (h ^ v) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _hashes(ptr: I64, cols: I64) -> U64:  # pragma: no cover - numba
    """Per cluster c, a hash of rows ptr[c]:ptr[c+1] of `cols` (rows x columns), in that order."""
    n = ptr.size - 1
    out = np.empty(n, np.uint64)
    for c in range(n):
        h = np.uint64(ptr[c + 1] - ptr[c])
        for r in range(ptr[c], ptr[c + 1]):
            for col in range(cols.shape[1]):
                h = _mix(h, np.uint64(cols[r, col]))
        out[c] = h
    return out


def cluster_hashes(ptr: I64, *columns: npt.NDArray[np.generic]) -> U64:
    """Content hash of every cluster; `columns` are per-row arrays (int or float: floats by their bits),
    sorted within each cluster by a rule that depends on content only."""
    if ptr.size < 1 or np.any(np.diff(ptr) < 0):
        raise ValueError("cluster_hashes: ptr must be a non-decreasing array of row offsets")
    n_rows = int(ptr[-1]) if ptr.size else 0
    cols = np.empty((n_rows, len(columns)), np.int64)
    for t, col in enumerate(columns):
        arr = np.ascontiguousarray(col)
        if arr.shape != (n_rows,):
            raise ValueError(f"cluster_hashes: column {t} has shape {arr.shape}, expected ({n_rows},)")
        cols[:, t] = arr.astype(np.float64).view(np.int64) if arr.dtype.kind == "f" else arr.astype(np.int64)
    return _hashes(ptr.astype(np.int64), cols)


def content_order(ptr: I64, *columns: npt.NDArray[np.generic]) -> I64:
    """Clusters sorted by content hash (stable): position -> cluster index."""
    return np.argsort(cluster_hashes(ptr, *columns), kind="stable").astype(np.int64)


def reorder(ptr: I64, order: I64) -> tuple[I64, I64]:
    """(new ptr, row index) that lay clusters out in `order`: rows of cluster order[0] first, ..."""
    sizes = np.diff(ptr)[order]
    new_ptr = np.zeros(order.size + 1, np.int64)
    np.cumsum(sizes, out=new_ptr[1:])
    starts = ptr[:-1][order]
    rows = np.repeat(starts - new_ptr[:-1], sizes) + np.arange(int(new_ptr[-1]), dtype=np.int64)
    return new_ptr, rows


def by_content(cluster: npt.NDArray[np.integer], *columns: npt.NDArray[np.generic]) -> tuple[I64, I64]:
    """Rows grouped by cluster, clusters in content order, rows within a cluster sorted by `columns`.

    Returns (ptr over clusters, row index): cluster t holds rows take[ptr[t]:ptr[t+1]]."""
    order = np.lexsort((*columns[::-1], cluster))
    cl = cluster[order]
    starts = np.flatnonzero(np.r_[True, cl[1:] != cl[:-1]]) if cl.size else np.zeros(0, np.int64)
    ptr = np.append(starts, cl.size).astype(np.int64)
    position = content_order(ptr, *(c[order] for c in columns))
    new_ptr, rows = reorder(ptr, position)
    return new_ptr, order[rows]
