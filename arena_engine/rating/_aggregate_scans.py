"""The compiled scans behind `_aggregate.aggregate_compiled` (numba kernels): codes for the query
clusters and the pairs (by lookup tables where the id spans allow, else by sorts), and the
per (cluster, pair) sums of the games, through a clusters x pairs table or a counting sort.

Integer arithmetic throughout, so the sums do not depend on the order of the rows (see `_aggregate`
for what `s2` and `w` count).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]

DENSE_SPAN_LIMIT = 1 << 26  # id span up to which codes come from a lookup table instead of a sort
DENSE_PAIR_LIMIT = 1 << 24  # k * k up to which pair codes come from a lookup table
DENSE_ENTRY_LIMIT = 1 << 24  # clusters x pairs up to which sums go to a table instead of a sort


@njit(cache=True)
def _dense_codes(values: I64, vmin: int, span: int) -> tuple[I32, int]:  # pragma: no cover - numba
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
    out = np.empty(values.size, np.int32)
    for idx in range(values.size):
        out[idx] = table[values[idx] - vmin]
    return out, code


def cluster_codes(values: I64) -> tuple[I32, int]:
    """Codes 0..n-1 ordered like the distinct values, and n."""
    if values.size == 0:
        return np.zeros(0, np.int32), 0
    vmin = int(values.min())
    span = int(values.max()) - vmin + 1
    if span <= min(DENSE_SPAN_LIMIT, 2 * values.size + (1 << 20)):
        return _dense_codes(values, vmin, span)
    uniq, inv = np.unique(values, return_inverse=True)
    return inv.astype(np.int32), int(uniq.size)


@njit(cache=True)
def _pair_codes(a: I64, b: I64, k: int) -> tuple[I32, I64, I64, I64]:  # pragma: no cover - numba
    """Per row the code of its pair (i < j; -1 for self-games), the pairs, and games per model."""
    table = np.full(k * k, -1, np.int32)
    n_battles = np.zeros(k, np.int64)
    for r in range(a.size):
        x = a[r]
        y = b[r]
        if x != y:
            table[min(x, y) * k + max(x, y)] = 0
            n_battles[x] += 1
            n_battles[y] += 1
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
    code = np.empty(a.size, np.int32)
    for r in range(a.size):
        x = a[r]
        y = b[r]
        code[r] = -1 if x == y else table[min(x, y) * k + max(x, y)]
    return code, pi, pj, n_battles


def pair_codes(a: I64, b: I64, k: int) -> tuple[I32, I64, I64, I64]:
    if k * k <= DENSE_PAIR_LIMIT:
        return _pair_codes(a, b, k)
    self_game = a == b
    keys = np.minimum(a, b) * k + np.maximum(a, b)
    uniq, inv = np.unique(keys[~self_game], return_inverse=True)
    code = np.full(a.size, -1, np.int32)
    code[~self_game] = inv
    n_battles = np.bincount(a[~self_game], minlength=k) + np.bincount(b[~self_game], minlength=k)
    return code, uniq // k, uniq % k, n_battles.astype(np.int64)


@njit(cache=True, inline="always")
def game_value(x: int, oc: int, pi_x: int, strong_weight: int) -> tuple[int, int]:  # pragma: no cover
    """(s2, w) of one game from the side of the pair's first model; x is model A of the row."""
    w = strong_weight if (oc == 2 or oc == -2) else 1
    sign = 1 if oc > 0 else (-1 if oc < 0 else 0)
    s2a = (sign + 1) * w
    return (s2a if x == pi_x else 2 * w - s2a), w


@njit(cache=True)
def entries_sorted(
    a: I64, o: I8, cluster: I32, pair: I32, pi: I64, n_clusters: int, strong_weight: int
) -> tuple[I64, I64, I64, I64]:  # pragma: no cover - numba
    """(cluster, pair) sums by a counting sort on the cluster, then a scratch table per cluster."""
    n_pairs = pi.size
    start = np.zeros(n_clusters + 1, np.int64)
    for r in range(a.size):
        if pair[r] >= 0:
            start[cluster[r] + 1] += 1
    for c in range(n_clusters):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    rows = np.empty(start[n_clusters], np.int64)
    for r in range(a.size):
        if pair[r] >= 0:
            rows[fill[cluster[r]]] = r
            fill[cluster[r]] += 1
    acc_s2 = np.zeros(n_pairs, np.int64)
    acc_w = np.zeros(n_pairs, np.int64)
    seen = np.full(n_pairs, -1, np.int64)
    touched = np.empty(n_pairs, np.int64)
    ptr = np.zeros(n_clusters + 1, np.int64)
    e_pair = np.empty(rows.size, np.int64)
    e_s2 = np.empty(rows.size, np.int64)
    e_w = np.empty(rows.size, np.int64)
    m = 0
    for c in range(n_clusters):
        nt = 0
        for t in range(start[c], start[c + 1]):
            r = rows[t]
            p = pair[r]
            if seen[p] != c:
                seen[p] = c
                acc_s2[p] = 0
                acc_w[p] = 0
                touched[nt] = p
                nt += 1
            s2, w = game_value(a[r], o[r], pi[p], strong_weight)
            acc_s2[p] += s2
            acc_w[p] += w
        for t in range(1, nt):  # insertion sort: clusters touch few pairs
            x = touched[t]
            u = t - 1
            while u >= 0 and touched[u] > x:
                touched[u + 1] = touched[u]
                u -= 1
            touched[u + 1] = x
        for t in range(nt):
            p = touched[t]
            e_pair[m] = p
            e_s2[m] = acc_s2[p]
            e_w[m] = acc_w[p]
            m += 1
        ptr[c + 1] = m
    return ptr, e_pair[:m], e_s2[:m], e_w[:m]


@njit(cache=True)
def scan_tables(a: I64, b: I64, q: I64, qmin: int, qspan: int, k: int) -> tuple[I32, int, I32, I64, I64, I64]:  # pragma: no cover
    """One pass: lookup tables query id -> cluster code and pair key -> pair code (-1 if absent),
    the pairs, and games per model."""
    qtable = np.zeros(qspan, np.int32)
    ptable = np.zeros(k * k, np.int32)
    n_battles = np.zeros(k, np.int64)
    for r in range(a.size):
        x = a[r]
        y = b[r]
        if x != y:
            qtable[q[r] - qmin] = 1
            ptable[min(x, y) * k + max(x, y)] = 1
            n_battles[x] += 1
            n_battles[y] += 1
    n_clusters = 0
    for t in range(qspan):
        if qtable[t] != 0:
            qtable[t] = n_clusters
            n_clusters += 1
        else:
            qtable[t] = -1
    n_pairs = 0
    for t in range(k * k):
        if ptable[t] != 0:
            n_pairs += 1
    pi = np.empty(n_pairs, np.int64)
    pj = np.empty(n_pairs, np.int64)
    n_pairs = 0
    for t in range(k * k):
        if ptable[t] != 0:
            ptable[t] = n_pairs
            pi[n_pairs] = t // k
            pj[n_pairs] = t % k
            n_pairs += 1
        else:
            ptable[t] = -1
    return qtable, n_clusters, ptable, pi, pj, n_battles


@njit(cache=True)
def entries_from_tables(
    a: I64, b: I64, o: I8, q: I64, qmin: int, qtable: I32, ptable: I32, k: int, pi: I64, n_clusters: int,
    strong_weight: int,
) -> tuple[I64, I64, I64, I64]:  # pragma: no cover - numba
    """(cluster, pair) sums through a clusters x pairs table; one pass over the rows."""
    n_pairs = pi.size
    table = np.zeros(n_clusters * n_pairs, np.int64)  # s2 << 32 | w
    for r in range(a.size):
        x = a[r]
        y = b[r]
        if x == y:
            continue
        p = ptable[min(x, y) * k + max(x, y)]
        s2, w = game_value(x, o[r], pi[p], strong_weight)
        table[qtable[q[r] - qmin] * n_pairs + p] += (s2 << 32) + w
    return _scan_table(table, n_clusters, n_pairs)


@njit(cache=True, inline="always")
def _scan_table(table: I64, n_clusters: int, n_pairs: int) -> tuple[I64, I64, I64, I64]:  # pragma: no cover
    ptr = np.zeros(n_clusters + 1, np.int64)
    m = 0
    for c in range(n_clusters):
        for p in range(n_pairs):
            if table[c * n_pairs + p] != 0:
                m += 1
        ptr[c + 1] = m
    e_pair = np.empty(m, np.int64)
    e_s2 = np.empty(m, np.int64)
    e_w = np.empty(m, np.int64)
    pos = 0
    for c in range(n_clusters):
        row = c * n_pairs
        for p in range(n_pairs):
            v = table[row + p]
            if v != 0:
                e_pair[pos] = p
                e_s2[pos] = v >> 32
                e_w[pos] = v & 0xFFFFFFFF
                pos += 1
    return ptr, e_pair, e_s2, e_w


@njit(cache=True)
def codes_of_rows(a: I64, b: I64, q: I64, qmin: int, qtable: I32, ptable: I32, k: int) -> tuple[I32, I32]:  # pragma: no cover
    cluster = np.empty(a.size, np.int32)
    pair = np.empty(a.size, np.int32)
    for r in range(a.size):
        x = a[r]
        y = b[r]
        if x == y:
            cluster[r] = -1
            pair[r] = -1
        else:
            cluster[r] = qtable[q[r] - qmin]
            pair[r] = ptable[min(x, y) * k + max(x, y)]
    return cluster, pair
