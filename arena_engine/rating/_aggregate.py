"""Battles into sufficient statistics: canonical games grouped by query cluster, cells per pair.

Everything here is integer arithmetic, so the result does not depend on the order of the rows.
A game between models i < j is stored from i's side: `s2` = 2 x (weighted wins of i, ties as half),
`w` = its weight (`strong_weight` for a strong verdict, else 1). Rows where a model meets itself
carry no information and are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

I64 = npt.NDArray[np.int64]

DENSE_SPAN_LIMIT = 1 << 26  # id span up to which codes come from a lookup table instead of a sort
DENSE_PAIR_LIMIT = 1 << 24  # k * k up to which pair codes come from a lookup table


@njit(cache=True)
def _dense_codes(values: I64, vmin: int, span: int) -> tuple[I64, int]:  # pragma: no cover - numba
    table = np.zeros(span, np.int32)
    for idx in range(values.size):
        table[values[idx] - vmin] = 1
    code = 0
    for t in range(span):
        if table[t] != 0:
            table[t] = code
            code += 1
        else:
            table[t] = -1
    out = np.empty(values.size, np.int64)
    for idx in range(values.size):
        out[idx] = table[values[idx] - vmin]
    return out, code


def dense_codes(values: I64) -> tuple[I64, I64]:
    """Codes 0..n-1 ordered like the distinct values, and the distinct values."""
    if values.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    vmin = int(values.min())
    vmax = int(values.max())
    span = vmax - vmin + 1
    if span <= min(DENSE_SPAN_LIMIT, 2 * values.size + (1 << 20)):
        codes, n = _dense_codes(values, vmin, span)
        uniq = np.empty(n, np.int64)
        uniq[codes] = values
        return codes, uniq
    uniq, inv = np.unique(values, return_inverse=True)
    return inv.astype(np.int64), uniq.astype(np.int64)


@njit(cache=True)
def _canonical_by_cluster(
    a: I64, b: I64, o: npt.NDArray[np.int8], cluster: I64, n_clusters: int, strong_weight: int
) -> tuple[I64, I64, I64, I64, I64, I64]:  # pragma: no cover - numba
    """Games sorted by cluster (counting sort), self-games dropped: (ptr, i, j, s2, w, row)."""
    n = a.size
    ptr = np.zeros(n_clusters + 1, np.int64)
    for r in range(n):
        if a[r] != b[r]:
            ptr[cluster[r] + 1] += 1
    for c in range(n_clusters):
        ptr[c + 1] += ptr[c]
    m = ptr[n_clusters]
    fill = ptr[:-1].copy()
    gi = np.empty(m, np.int64)
    gj = np.empty(m, np.int64)
    gs2 = np.empty(m, np.int64)
    gw = np.empty(m, np.int64)
    grow = np.empty(m, np.int64)
    for r in range(n):
        x = a[r]
        y = b[r]
        if x == y:
            continue
        oc = o[r]
        w = strong_weight if (oc == 2 or oc == -2) else 1
        sign = 1 if oc > 0 else (-1 if oc < 0 else 0)
        s2a = (sign + 1) * w
        pos = fill[cluster[r]]
        fill[cluster[r]] += 1
        if x < y:
            gi[pos] = x
            gj[pos] = y
            gs2[pos] = s2a
        else:
            gi[pos] = y
            gj[pos] = x
            gs2[pos] = 2 * w - s2a
        gw[pos] = w
        grow[pos] = r
    return ptr, gi, gj, gs2, gw, grow


@njit(cache=True)
def _dense_pair_codes(gi: I64, gj: I64, k: int) -> tuple[I64, I64, I64]:  # pragma: no cover - numba
    table = np.full(k * k, -1, np.int64)
    for idx in range(gi.size):
        table[gi[idx] * k + gj[idx]] = 0
    n = 0
    for t in range(k * k):
        if table[t] == 0:
            table[t] = n
            n += 1
    pi = np.empty(n, np.int64)
    pj = np.empty(n, np.int64)
    for t in range(k * k):
        if table[t] >= 0:
            pi[table[t]] = t // k
            pj[table[t]] = t % k
    code = np.empty(gi.size, np.int64)
    for idx in range(gi.size):
        code[idx] = table[gi[idx] * k + gj[idx]]
    return code, pi, pj


@dataclass(frozen=True)
class Games:
    """Canonical games grouped by cluster. `pair[g]` indexes (`pi`, `pj`), sorted by (i, j)."""

    k: int
    base: int
    ptr: I64  # games of cluster c are ptr[c]:ptr[c+1]
    i: I64
    j: I64
    s2: I64
    w: I64
    row: I64  # input row of each game (for per-row covariates)
    pair: I64
    pi: I64
    pj: I64

    @property
    def n_clusters(self) -> int:
        return int(self.ptr.size - 1)

    @property
    def is_star(self) -> bool:
        """Every pair involves the baseline: each candidate's rating depends on its own games only."""
        return bool(np.all((self.pi == self.base) | (self.pj == self.base)))


def canonical_games(
    a: I64, b: I64, o: npt.NDArray[np.int8], q: I64, *, k: int, base: int, strong_weight: int
) -> Games:
    cluster, _ = dense_codes(q)
    n_clusters = int(cluster.max()) + 1 if cluster.size else 0
    ptr, gi, gj, gs2, gw, grow = _canonical_by_cluster(a, b, o, cluster, n_clusters, strong_weight)
    if k * k <= DENSE_PAIR_LIMIT:
        pair, pi, pj = _dense_pair_codes(gi, gj, k)
    else:
        keys, inv = np.unique(gi * k + gj, return_inverse=True)
        pair, pi, pj = inv.astype(np.int64), keys // k, keys % k
    ptr = np.unique(ptr)  # drop clusters left empty (only self-games): they hold no information
    return Games(k=k, base=base, ptr=ptr, i=gi, j=gj, s2=gs2, w=gw, row=grow, pair=pair, pi=pi, pj=pj)


@njit(cache=True)
def _pair_totals(pair: I64, s2: I64, w: I64, n_pairs: int) -> tuple[I64, I64]:  # pragma: no cover
    s2p = np.zeros(n_pairs, np.int64)
    wp = np.zeros(n_pairs, np.int64)
    for g in range(pair.size):
        s2p[pair[g]] += s2[g]
        wp[pair[g]] += w[g]
    return s2p, wp


def pair_totals(games: Games) -> tuple[I64, I64]:
    """(2 x weighted wins of i, weighted games) per pair."""
    return _pair_totals(games.pair, games.s2, games.w, games.pi.size)


@njit(cache=True)
def _cluster_pair_sums(
    ptr: I64, pair: I64, s2: I64, w: I64, n_pairs: int
) -> tuple[I64, I64, I64]:  # pragma: no cover - numba
    """Per (cluster, pair) sums, as (pair, s2, w) entries in cluster order."""
    acc_s2 = np.zeros(n_pairs, np.int64)
    acc_w = np.zeros(n_pairs, np.int64)
    seen = np.full(n_pairs, -1, np.int64)
    touched = np.empty(n_pairs, np.int64)
    out_p = np.empty(pair.size, np.int64)
    out_s2 = np.empty(pair.size, np.int64)
    out_w = np.empty(pair.size, np.int64)
    m = 0
    for c in range(ptr.size - 1):
        nt = 0
        for g in range(ptr[c], ptr[c + 1]):
            p = pair[g]
            if seen[p] != c:
                seen[p] = c
                acc_s2[p] = 0
                acc_w[p] = 0
                touched[nt] = p
                nt += 1
            acc_s2[p] += s2[g]
            acc_w[p] += w[g]
        for t in range(nt):
            p = touched[t]
            out_p[m] = p
            out_s2[m] = acc_s2[p]
            out_w[m] = acc_w[p]
            m += 1
    return out_p[:m], out_s2[:m], out_w[:m]


@njit(cache=True)
def _cells_dense(
    ep: I64, es2: I64, ew: I64, n_pairs: int, wmax: int
) -> tuple[I64, I64, I64, I64]:  # pragma: no cover - numba
    span_w = wmax + 1
    span = (2 * wmax + 1) * span_w
    hist = np.zeros(n_pairs * span, np.int64)
    for e in range(ep.size):
        hist[ep[e] * span + es2[e] * span_w + ew[e]] += 1
    ptr = np.zeros(n_pairs + 1, np.int64)
    for p in range(n_pairs):
        cnt = 0
        for t in range(span):
            if hist[p * span + t] > 0:
                cnt += 1
        ptr[p + 1] = ptr[p] + cnt
    m = ptr[n_pairs]
    cs2 = np.empty(m, np.int64)
    cw = np.empty(m, np.int64)
    cc = np.empty(m, np.int64)
    pos = 0
    for p in range(n_pairs):
        for t in range(span):
            h = hist[p * span + t]
            if h > 0:
                cs2[pos] = t // span_w
                cw[pos] = t % span_w
                cc[pos] = h
                pos += 1
    return ptr, cs2, cw, cc


@dataclass(frozen=True)
class Cells:
    """Per pair, the distinct (s2, w) values one cluster contributes, and how many clusters do."""

    ptr: I64  # cells of pair p are ptr[p]:ptr[p+1], sorted by (s2, w)
    s2: I64
    w: I64
    count: I64


def pair_cells(games: Games) -> Cells:
    """Cluster contributions per pair, histogrammed: a bootstrap round is a multinomial over these."""
    n_pairs = games.pi.size
    ep, es2, ew = _cluster_pair_sums(games.ptr, games.pair, games.s2, games.w, n_pairs)
    wmax = int(ew.max()) if ew.size else 0
    if n_pairs * (2 * wmax + 1) * (wmax + 1) <= DENSE_SPAN_LIMIT:
        ptr, cs2, cw, cc = _cells_dense(ep, es2, ew, n_pairs, wmax)
        return Cells(ptr=ptr, s2=cs2, w=cw, count=cc)
    keys = np.stack([ep, es2, ew])
    uniq, counts = np.unique(keys, axis=1, return_counts=True)
    ptr = np.zeros(n_pairs + 1, np.int64)
    np.add.at(ptr, uniq[0] + 1, 1)
    return Cells(ptr=np.cumsum(ptr), s2=uniq[1].copy(), w=uniq[2].copy(), count=counts.astype(np.int64))
