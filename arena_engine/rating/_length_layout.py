"""The games of a length-controlled scope laid out for its kernels (numba; see _length for the model).

`lc_layout` groups the games by cluster, clusters in content order (the content hash of _canonical
over (pair, s2, w, length difference seen from the pair's first model)), all in one numba pass plus
one argsort of the cluster hashes (instead of a five-key lexsort of the rows); `in_content_order`
lays them out in that order with the length feature and the pair totals.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from arena_engine.rating._canonical import _mix

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]
U64 = npt.NDArray[np.uint64]



@njit(cache=True, inline="always")
def _before(p1: int, s1: int, w1: int, x1: float, p2: int, s2: int, w2: int, x2: float) -> bool:  # pragma: no cover
    if p1 != p2:
        return p1 < p2
    if s1 != s2:
        return s1 < s2
    if w1 != w2:
        return w1 < w2
    return x1 < x2


@njit(cache=True)
def lc_layout(
    a: I64, o: I8, pair: I32, cluster: I32, n_clusters: int, lengths: F64, pi: I64, strong_weight: int
) -> tuple[I64, F64, U64]:  # pragma: no cover - numba
    """Games (rows with a pair) grouped by cluster code, within a cluster sorted by (pair, s2, w, dx).

    Returns (ptr over clusters, records [pair, s2, w, dx, raw difference len_A - len_B] as float64
    rows (one cache line per game for the reordering that follows), cluster hashes); s2 and dx are
    seen from the pair's first model (dx = +-(len_A - len_B))."""
    start = np.zeros(n_clusters + 1, np.int64)
    for r in range(a.size):
        if pair[r] >= 0:
            start[cluster[r] + 1] += 1
    for c in range(n_clusters):
        start[c + 1] += start[c]
    n = start[n_clusters]
    fill = start[:-1].copy()
    gp = np.empty(n, np.int64)
    gs2 = np.empty(n, np.int64)
    gw = np.empty(n, np.int64)
    dx = np.empty(n, np.float64)
    raw = np.empty(n, np.float64)
    for r in range(a.size):
        p = pair[r]
        if p < 0:
            continue
        t = fill[cluster[r]]
        fill[cluster[r]] += 1
        oc = int(o[r])
        w = strong_weight if abs(oc) == 2 else 1
        sign = 1 if oc > 0 else (0 if oc == 0 else -1)
        s2a = (sign + 1) * w
        diff = lengths[r, 0] - lengths[r, 1]
        a_is_i = a[r] == pi[p]
        gp[t] = p
        gw[t] = w
        gs2[t] = s2a if a_is_i else 2 * w - s2a
        dx[t] = diff if a_is_i else -diff
        raw[t] = diff
    for t in range(n):
        dx[t] += 0.0  # -0.0 becomes 0.0: equal differences hash alike
    bits = dx.view(np.uint64)
    hashes = np.empty(n_clusters, np.uint64)
    for c in range(n_clusters):
        lo = start[c]
        for t in range(lo + 1, start[c + 1]):  # insertion sort: clusters hold few games
            p, s, w, x, y = gp[t], gs2[t], gw[t], dx[t], raw[t]
            u = t
            while u > lo and _before(p, s, w, x, gp[u - 1], gs2[u - 1], gw[u - 1], dx[u - 1]):
                gp[u], gs2[u], gw[u], dx[u], raw[u] = gp[u - 1], gs2[u - 1], gw[u - 1], dx[u - 1], raw[u - 1]
                u -= 1
            gp[u], gs2[u], gw[u], dx[u], raw[u] = p, s, w, x, y
        h = np.uint64(start[c + 1] - lo)
        for t in range(lo, start[c + 1]):
            h = _mix(h, np.uint64(gp[t]))
            h = _mix(h, np.uint64(gs2[t]))
            h = _mix(h, np.uint64(gw[t]))
            h = _mix(h, bits[t])
        hashes[c] = h
    rec = np.empty((n, 5))
    for t in range(n):
        rec[t, 0] = gp[t]
        rec[t, 1] = gs2[t]
        rec[t, 2] = gw[t]
        rec[t, 3] = dx[t]
        rec[t, 4] = raw[t]
    return start, rec, hashes


@njit(cache=True)
def _in_content_order(
    ptr: I64, position: I64, rec: F64, n_pairs: int
) -> tuple[I64, I64, I64, I64, F64, float, F64, F64]:  # pragma: no cover - numba
    n = rec.shape[0]
    new_ptr = np.zeros(position.size + 1, np.int64)
    ogp = np.empty(n, np.int64)
    os2 = np.empty(n, np.int64)
    ow = np.empty(n, np.int64)
    odx = np.empty(n)
    oraw = np.empty(n)
    win = np.zeros(n_pairs)
    games = np.zeros(n_pairs)
    u = 0
    for c in range(position.size):
        src = position[c]
        for t in range(ptr[src], ptr[src + 1]):
            p = int(rec[t, 0])
            ogp[u] = p
            os2[u] = int(rec[t, 1])
            ow[u] = int(rec[t, 2])
            odx[u] = rec[t, 3]
            oraw[u] = rec[t, 4]
            win[p] += 0.5 * rec[t, 1]
            games[p] += rec[t, 2]
            u += 1
        new_ptr[c + 1] = u
    total = 0.0
    for t in range(n):
        total += oraw[t]
    mean = total / n if n else 0.0
    ss = 0.0
    for t in range(n):
        ss += (oraw[t] - mean) * (oraw[t] - mean)
    spread = math.sqrt(ss / n) if n else 0.0
    return new_ptr, ogp, os2, ow, odx, spread, win, games


def in_content_order(ptr: I64, position: I64, rec: F64, n_pairs: int) -> tuple[I64, I64, I64, I64, F64, F64, F64]:
    """Clusters laid out in `position` order (position -> cluster), the length feature
    x = tanh(dx / sd(raw)) (sd over the games in that order: the same bits in any row order), and
    pair totals. Returns (ptr, pair, s2, w, x, wins per pair, weighted games per pair)."""
    new_ptr, ogp, os2, ow, odx, spread, win, games = _in_content_order(ptr, position, rec, n_pairs)
    gx = np.tanh(odx / spread) if spread > 0 else np.zeros(odx.size)
    return new_ptr, ogp, os2, ow, gx, win, games
