"""Battles into sufficient statistics: per (query cluster, pair) sums, and cells per pair.

Everything here is integer arithmetic, so the result does not depend on the order of the rows.
A game between models i < j is counted from i's side: `s2` = 2 x (weighted wins of i, ties as
half), `w` = its weight (`strong_weight` for a strong verdict, else 1). Rows where a model meets
itself carry no information and are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from arena_engine.rating._aggregate_scans import (
    DENSE_ENTRY_LIMIT,
    DENSE_PAIR_LIMIT,
    DENSE_SPAN_LIMIT,
    cluster_codes,
    codes_of_rows,
    entries_from_tables,
    entries_sorted,
    game_value,
    pair_codes,
    scan_tables,
)

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]

# Rows up to which the statistics come from numpy (sorts and bincounts) rather than the compiled scans:
# as fast at this size, and nothing to compile, which is most of what a first run after an install spent
# (5 of its 6 s of rating CPU). Integer arithmetic either way, so both paths give identical statistics.
NUMPY_ROWS = 1 << 17


@dataclass(frozen=True)
class Battles:
    """Sufficient statistics of a set of battles.

    Pairs (pi[p] < pj[p]) are sorted. Entry e is the sum over one query cluster of the games of one
    pair: `e_pair`, `e_s2`, `e_w`; the entries of cluster c are ptr[c]:ptr[c+1], in pair order.
    Clusters without games are dropped. `cluster` and `pair` give each input row's codes (-1 for
    self-games) for the per-game paths (Elo, length control).
    """

    k: int
    base: int
    pi: I64
    pj: I64
    ptr: I64
    e_pair: I64
    e_s2: I64
    e_w: I64
    n_battles: I64
    cluster: I32
    pair: I32

    @property
    def n_clusters(self) -> int:
        return int(self.ptr.size - 1)

    @property
    def is_star(self) -> bool:
        """Every pair involves the baseline: each candidate's rating depends on its own games only."""
        return bool(np.all((self.pi == self.base) | (self.pj == self.base)))


def aggregate(
    a: I64, b: I64, o: I8, q: I64, *, k: int, base: int, strong_weight: int, row_codes: bool = False
) -> Battles:
    """Sufficient statistics; with `row_codes`, also each row's cluster and pair codes."""
    n = a.size
    if n <= NUMPY_ROWS:
        return aggregate_numpy(a, b, o, q, k=k, base=base, strong_weight=strong_weight, row_codes=row_codes)
    return aggregate_compiled(a, b, o, q, k=k, base=base, strong_weight=strong_weight, row_codes=row_codes)


def aggregate_compiled(
    a: I64, b: I64, o: I8, q: I64, *, k: int, base: int, strong_weight: int, row_codes: bool = False
) -> Battles:
    """:func:`aggregate` by the compiled scans (the path for large inputs)."""
    n = a.size
    qmin = int(q.min()) if n else 0
    qspan = int(q.max()) - qmin + 1 if n else 1
    tables_fit = qspan <= min(DENSE_SPAN_LIMIT, 2 * n + (1 << 20)) and k * k <= DENSE_PAIR_LIMIT
    if tables_fit:
        qtable, n_clusters, ptable, pi, pj, n_battles = scan_tables(a, b, q, qmin, qspan, k)
        if n_clusters * pi.size <= min(DENSE_ENTRY_LIMIT, 4 * n + (1 << 16)):
            ptr, e_pair, e_s2, e_w = entries_from_tables(
                a, b, o, q, qmin, qtable, ptable, k, pi, n_clusters, strong_weight
            )
            cluster = pair = np.zeros(0, np.int32)
            if row_codes:
                cluster, pair = codes_of_rows(a, b, q, qmin, qtable, ptable, k)
            return _battles(k, base, pi, pj, ptr, e_pair, e_s2, e_w, n_battles, cluster, pair)
        cluster, pair = codes_of_rows(a, b, q, qmin, qtable, ptable, k)
    else:
        cluster, n_clusters = cluster_codes(q)
        pair, pi, pj, n_battles = pair_codes(a, b, k)
    ptr, e_pair, e_s2, e_w = entries_sorted(a, o, cluster, pair, pi, n_clusters, strong_weight)
    return _battles(k, base, pi, pj, ptr, e_pair, e_s2, e_w, n_battles, cluster, pair)


def aggregate_numpy(
    a: I64, b: I64, o: I8, q: I64, *, k: int, base: int, strong_weight: int, row_codes: bool = False
) -> Battles:
    """:func:`aggregate` by sorts and bincounts (the path for small inputs; the same statistics)."""
    valid = a != b
    x, y = a[valid], b[valid]
    keys = np.minimum(x, y) * k + np.maximum(x, y)
    pairs, pair_of = np.unique(keys, return_inverse=True)  # sorted by (i, j), like the compiled table
    clusters, cluster_of = np.unique(q[valid], return_inverse=True)  # ordered like the query ids
    pi, pj = pairs // k, pairs % k
    oc = o[valid].astype(np.int64)
    w = np.where((oc == 2) | (oc == -2), strong_weight, 1).astype(np.int64)
    s2a = (np.sign(oc) + 1) * w
    s2 = np.where(x == pi[pair_of], s2a, 2 * w - s2a)
    n_pairs = pairs.size
    entry_keys, entry_of = np.unique(cluster_of.astype(np.int64) * n_pairs + pair_of, return_inverse=True)
    e_s2 = _int_sums(entry_of, s2, entry_keys.size)
    e_w = _int_sums(entry_of, w, entry_keys.size)
    e_pair = entry_keys % n_pairs if n_pairs else entry_keys
    ptr = np.zeros(clusters.size + 1, np.int64)
    ptr[1:] = np.cumsum(np.bincount(entry_keys // max(n_pairs, 1), minlength=clusters.size))
    n_battles = (np.bincount(x, minlength=k) + np.bincount(y, minlength=k)).astype(np.int64)
    cluster = pair = np.zeros(0, np.int32)
    if row_codes:
        cluster = np.full(a.size, -1, np.int32)
        pair = np.full(a.size, -1, np.int32)
        cluster[valid] = cluster_of
        pair[valid] = pair_of
    return _battles(k, base, pi.astype(np.int64), pj.astype(np.int64), ptr, e_pair.astype(np.int64), e_s2, e_w,
                    n_battles, cluster, pair)


def _int_sums(index: npt.NDArray[np.intp], values: I64, n: int) -> I64:
    """Exact integer sums of `values` by `index` (bincount adds in float64: exact below 2**53, which
    inputs of NUMPY_ROWS rows with small weights stay far below)."""
    return np.bincount(index, weights=values, minlength=n).astype(np.int64)


def _battles(
    k: int, base: int, pi: I64, pj: I64, ptr: I64, e_pair: I64, e_s2: I64, e_w: I64, n_battles: I64,
    cluster: I32, pair: I32,
) -> Battles:
    keep = np.ones(ptr.size, dtype=bool)
    keep[1:] = ptr[1:] != ptr[:-1]  # drop clusters without games (only self-games)
    return Battles(
        k=k, base=base, pi=pi, pj=pj, ptr=ptr[keep], e_pair=e_pair, e_s2=e_s2, e_w=e_w,
        n_battles=n_battles, cluster=cluster, pair=pair,
    )


@njit(cache=True)
def _pair_totals(e_pair: I64, e_s2: I64, e_w: I64, n_pairs: int) -> tuple[I64, I64]:  # pragma: no cover
    s2p = np.zeros(n_pairs, np.int64)
    wp = np.zeros(n_pairs, np.int64)
    for e in range(e_pair.size):
        s2p[e_pair[e]] += e_s2[e]
        wp[e_pair[e]] += e_w[e]
    return s2p, wp


def pair_totals(battles: Battles) -> tuple[I64, I64]:
    """(2 x weighted wins of i, weighted games) per pair."""
    n_pairs = battles.pi.size
    if battles.e_pair.size <= NUMPY_ROWS:
        return (_int_sums(battles.e_pair, battles.e_s2, n_pairs)[:n_pairs],
                _int_sums(battles.e_pair, battles.e_w, n_pairs)[:n_pairs])
    return _pair_totals(battles.e_pair, battles.e_s2, battles.e_w, n_pairs)


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
    """Per pair, the distinct (s2, w) sums one cluster contributes, and how many clusters do."""

    ptr: I64  # cells of pair p are ptr[p]:ptr[p+1], sorted by (s2, w)
    s2: I64
    w: I64
    count: I64


def pair_cells(n_pairs: int, e_pair: I64, e_s2: I64, e_w: I64) -> Cells:
    """Cluster contributions per pair, histogrammed: a bootstrap round is a multinomial over these."""
    wmax = int(e_w.max()) if e_w.size else 0
    if e_pair.size > NUMPY_ROWS and n_pairs * (2 * wmax + 1) * (wmax + 1) <= DENSE_SPAN_LIMIT:
        ptr, cs2, cw, cc = _cells_dense(e_pair, e_s2, e_w, n_pairs, wmax)
        return Cells(ptr=ptr, s2=cs2, w=cw, count=cc)
    order = np.lexsort((e_w, e_s2, e_pair))
    keys = np.stack([e_pair[order], e_s2[order], e_w[order]])
    new = np.ones(order.size, dtype=bool)
    new[1:] = np.any(keys[:, 1:] != keys[:, :-1], axis=0)
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, order.size))
    ptr = np.zeros(n_pairs + 1, np.int64)
    np.add.at(ptr, keys[0, starts] + 1, 1)
    return Cells(ptr=np.cumsum(ptr), s2=keys[1, starts].copy(), w=keys[2, starts].copy(), count=counts)


@njit(cache=True)
def _unit_counts(a: I64, o: I8, pair: I32, pi: I64, strong_weight: int) -> I64:  # pragma: no cover
    """Weighted game copies per pair won by i, tied, won by j (columns 0, 1, 2)."""
    counts = np.zeros((pi.size, 3), np.int64)
    for r in range(a.size):
        p = pair[r]
        if p < 0:
            continue
        s2, w = game_value(a[r], o[r], pi[p], strong_weight)
        counts[p, 2 - s2 // w] += w
    return counts


def unit_cells(a: I64, o: I8, battles: Battles, strong_weight: int) -> Cells:
    """Every weighted copy of every game as its own cluster (EvalScope's game-row bootstrap): per pair
    three cells, copies won by i (s2 = 2), tied (1), won by j (0), each of weight 1."""
    counts = _unit_counts(a, o, battles.pair, battles.pi, strong_weight)
    n_pairs = battles.pi.size
    pair = np.repeat(np.arange(n_pairs), 3)
    s2 = np.tile(np.array([2, 1, 0], np.int64), n_pairs)
    flat = counts.ravel()
    used = flat > 0
    ptr = np.zeros(n_pairs + 1, np.int64)
    np.add.at(ptr, pair[used] + 1, 1)
    order = np.lexsort((s2[used], pair[used]))  # (s2, w) ascending within a pair, like pair_cells
    return Cells(
        ptr=np.cumsum(ptr), s2=s2[used][order], w=np.ones(int(used.sum()), np.int64), count=flat[used][order]
    )


@njit(cache=True)
def _queries_per_model(ptr: I64, e_pair: I64, pi: I64, pj: I64, k: int) -> I64:  # pragma: no cover - numba
    seen = np.full(k, -1, np.int64)
    out = np.zeros(k, np.int64)
    for c in range(ptr.size - 1):
        for e in range(ptr[c], ptr[c + 1]):
            for m in (pi[e_pair[e]], pj[e_pair[e]]):
                if seen[m] != c:
                    seen[m] = c
                    out[m] += 1
    return out


def queries_per_model(battles: Battles) -> I64:
    """Number of query clusters in which each model plays at least one game."""
    if battles.e_pair.size <= NUMPY_ROWS:
        cluster = np.repeat(np.arange(battles.n_clusters, dtype=np.int64), np.diff(battles.ptr))
        k = battles.k
        seen = np.unique(np.concatenate([cluster * k + battles.pi[battles.e_pair], cluster * k + battles.pj[battles.e_pair]]))
        return np.bincount(seen % k, minlength=k).astype(np.int64) if k else np.zeros(0, np.int64)
    return _queries_per_model(battles.ptr, battles.e_pair, battles.pi, battles.pj, battles.k)
