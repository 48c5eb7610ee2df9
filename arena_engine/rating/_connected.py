"""Zermelo's condition: which models are strongly connected to the baseline (numba kernels).

The Bradley-Terry MLE exists only when every model is strongly connected to the baseline in the
"has beaten" graph. `outside_component` names the models that are not; `with_virtual_ties` gives
each of them one tied game against the baseline, which keeps every estimate finite. Used by the
plain fit (`_bradley_terry.fit`), the length-controlled fit and the rating pipeline alike.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B1 = npt.NDArray[np.bool_]


@njit(cache=True, inline="always")
def _reach(
    pi: I64, pj: I64, win: F64, n: F64, k: int, base: int, forward: bool
) -> B1:  # pragma: no cover - numba
    """Models reachable from the baseline along 'x has beaten y' edges (or against them)."""
    deg = np.zeros(k + 1, np.int64)
    for p in range(pi.size):
        i_beats = win[p] > 0.0
        j_beats = n[p] - win[p] > 0.0
        if (i_beats if forward else j_beats):
            deg[pi[p] + 1] += 1
        if (j_beats if forward else i_beats):
            deg[pj[p] + 1] += 1
    for m in range(k):
        deg[m + 1] += deg[m]
    adj = np.empty(deg[k], np.int64)
    fill = deg[:-1].copy()
    for p in range(pi.size):
        i_beats = win[p] > 0.0
        j_beats = n[p] - win[p] > 0.0
        if (i_beats if forward else j_beats):
            adj[fill[pi[p]]] = pj[p]
            fill[pi[p]] += 1
        if (j_beats if forward else i_beats):
            adj[fill[pj[p]]] = pi[p]
            fill[pj[p]] += 1
    seen = np.zeros(k, np.bool_)
    stack = np.empty(k, np.int64)
    seen[base] = True
    stack[0] = base
    top = 1
    while top > 0:
        top -= 1
        x = stack[top]
        for e in range(deg[x], deg[x + 1]):
            y = adj[e]
            if not seen[y]:
                seen[y] = True
                stack[top] = y
                top += 1
    return seen


@njit(cache=True, inline="always")
def _two_way_connected(pi: I64, pj: I64, win: F64, n: F64, k: int) -> bool:  # pragma: no cover - numba
    """Cheap sufficient test: pairs where each side has won (part of) a game connect everyone.
    Such edges go both ways, so connectivity over them implies strong connectivity (union-find)."""
    parent = np.arange(k)
    groups = k
    for p in range(pi.size):
        if win[p] > 0.0 and n[p] - win[p] > 0.0:
            x = pi[p]
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            y = pj[p]
            while parent[y] != y:
                parent[y] = parent[parent[y]]
                y = parent[y]
            if x != y:
                parent[x] = y
                groups -= 1
                if groups == 1:
                    return True
    return groups == 1


@njit(cache=True)
def outside_component(pi: I64, pj: I64, win: F64, n: F64, k: int, base: int) -> B1:  # pragma: no cover
    """Models whose MLE does not exist: not strongly connected to the baseline."""
    if _two_way_connected(pi, pj, win, n, k):
        return np.zeros(k, np.bool_)
    fwd = _reach(pi, pj, win, n, k, base, True)
    bwd = _reach(pi, pj, win, n, k, base, False)
    out = np.empty(k, np.bool_)
    for m in range(k):
        out[m] = not (fwd[m] and bwd[m])
    return out


@njit(cache=True, inline="always")
def with_virtual_ties(
    pi: I64, pj: I64, win: F64, n: F64, outside: B1, base: int
) -> tuple[I64, I64, F64, F64]:  # pragma: no cover - numba
    """Append one tied game against the baseline for every model outside the baseline's component."""
    extra = 0
    for m in range(outside.size):
        if outside[m]:
            extra += 1
    size = pi.size + extra
    qi = np.empty(size, np.int64)
    qj = np.empty(size, np.int64)
    qw = np.empty(size, np.float64)
    qn = np.empty(size, np.float64)
    for p in range(pi.size):
        qi[p] = pi[p]
        qj[p] = pj[p]
        qw[p] = win[p]
        qn[p] = n[p]
    pos = pi.size
    for m in range(outside.size):
        if outside[m]:
            qi[pos] = min(m, base)
            qj[pos] = max(m, base)
            qw[pos] = 0.5
            qn[pos] = 1.0
            pos += 1
    return qi, qj, qw, qn
