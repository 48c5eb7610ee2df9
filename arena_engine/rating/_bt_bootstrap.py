"""The bootstraps of the Bradley-Terry fit (numba kernels): clusters drawn with replacement, one fit per
round (`cluster_bootstrap`), and the closed form of a star design, where every candidate meets only
the baseline (`star_bootstrap`). Each round or pair seeds its own streams, so callers may split them
across threads (`_threads.in_threads`).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from arena_engine.rating._bradley_terry import fit
from arena_engine.rating._random import below, new_state

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@njit(cache=True, inline="always")
def _fit_totals(
    s2p: I64, wp: I64, pi: I64, pj: I64, k: int, base: int, beta_hat: F64, chol: F64
) -> F64:  # pragma: no cover - numba
    """BT fit on resampled pair totals (pairs without games dropped)."""
    used = 0
    for p in range(pi.size):
        if wp[p] > 0:
            used += 1
    ri = np.empty(used, np.int64)
    rj = np.empty(used, np.int64)
    rw = np.empty(used, np.float64)
    rn = np.empty(used, np.float64)
    u = 0
    for p in range(pi.size):
        if wp[p] > 0:
            ri[u] = pi[p]
            rj[u] = pj[p]
            rw[u] = 0.5 * s2p[p]
            rn[u] = wp[p]
            u += 1
    return fit(ri, rj, rw, rn, k, base, beta_hat, chol)


BLOCK = 4096  # clusters per block of the two-level multinomial draw (block counts fit in L1 cache)


@njit(cache=True, inline="always")
def _draw_cells(
    left: int, mass: int, c_ptr: I64, c_s2: I64, c_w: I64, c_cnt: I64, s2p: I64, wp: I64
) -> None:  # pragma: no cover - numba
    """Add a multinomial draw of `left` clusters over cells (probabilities count / mass) to the totals."""
    for p in range(c_ptr.size - 1):
        for c in range(c_ptr[p], c_ptr[p + 1]):
            if left == 0:
                return
            x = left if c_cnt[c] >= mass else np.random.binomial(left, c_cnt[c] / mass)
            mass -= c_cnt[c]
            left -= x
            s2p[p] += x * c_s2[c]
            wp[p] += x * c_w[c]


@njit(cache=True, inline="always")
def _draw_clusters(
    draws: int, ptr: I64, e_pair: I64, e_s2: I64, e_w: I64, state: npt.NDArray[np.uint64], local: I64,
    s2p: I64, wp: I64,
) -> None:  # pragma: no cover - numba
    """Add a multinomial draw of `draws` clusters (uniform) to the totals, in two levels: counts per
    block of clusters by conditional binomials, then uniform draws inside each block."""
    n_clusters = ptr.size - 1
    n_blocks = (n_clusters + BLOCK - 1) // BLOCK
    left = draws
    unseen = n_clusters
    for blk in range(n_blocks):
        lo = blk * BLOCK
        size = min(BLOCK, n_clusters - lo)
        if blk == n_blocks - 1:
            m = left
        elif left > 0:
            m = np.random.binomial(left, size / unseen)
        else:
            m = 0
        left -= m
        unseen -= size
        if m == 0:
            continue
        for c in range(size):
            local[c] = 0
        for _ in range(m):
            local[below(state, size)] += 1
        for c in range(size):  # no branch on cnt == 0: a third of the counts are 0, unpredictably
            cnt = local[c]
            for e in range(ptr[lo + c], ptr[lo + c + 1]):
                s2p[e_pair[e]] += cnt * e_s2[e]
                wp[e_pair[e]] += cnt * e_w[e]


@njit(cache=True, nogil=True)
def cluster_bootstrap(
    ptr: I64, e_pair: I64, e_s2: I64, e_w: I64,
    c_ptr: I64, c_s2: I64, c_w: I64, c_cnt: I64,
    pi: I64, pj: I64, k: int, base: int,
    seeds: npt.NDArray[np.uint32], beta_hat: F64, chol: F64,
) -> F64:  # pragma: no cover - numba
    """One BT fit per round on clusters drawn with replacement (exact multinomial); rows = rounds.

    Clusters come in two kinds: listed ones (entries `ptr`, `e_*`), and single-entry ones grouped
    into cells per pair (`c_*`: identical clusters are interchangeable, so a draw over them is a
    multinomial over the cells). The split of the draws between the kinds is binomial."""
    n_listed = ptr.size - 1
    n_cells = 0
    for c in range(c_cnt.size):
        n_cells += c_cnt[c]
    total = n_listed + n_cells
    n_pairs = pi.size
    out = np.empty((seeds.size, k))
    for r in range(seeds.size):  # each round seeds its own streams: callers may split rounds across threads
        np.random.seed(seeds[r])
        state = new_state(seeds[r])
        local = np.zeros(BLOCK, np.int64)
        s2p = np.zeros(n_pairs, np.int64)
        wp = np.zeros(n_pairs, np.int64)
        if n_listed == 0:
            to_cells = total
        elif n_cells == 0:
            to_cells = 0
        else:
            to_cells = np.random.binomial(total, n_cells / total)
        if to_cells > 0:
            _draw_cells(to_cells, n_cells, c_ptr, c_s2, c_w, c_cnt, s2p, wp)
        if total - to_cells > 0:
            _draw_clusters(total - to_cells, ptr, e_pair, e_s2, e_w, state, local, s2p, wp)
        beta = _fit_totals(s2p, wp, pi, pj, k, base, beta_hat, chol)
        for m in range(k):
            out[r, m] = beta[m]
    return out


@njit(cache=True, inline="always")
def star_logit(s2: int, w: int) -> float:  # pragma: no cover - numba
    """Closed-form BT strength of a candidate that only meets the baseline: logit((W + T/2) / N).
    With only wins, only losses or no games, one virtual tied game is added (as in `fit`)."""
    if w == 0 or s2 == 0 or s2 == 2 * w:
        return math.log((0.5 * s2 + 0.5) / (w - 0.5 * s2 + 0.5))
    return math.log(s2 / (2.0 * w - s2))


@njit(cache=True, nogil=True)
def star_bootstrap(
    ptr: I64, cs2: I64, cw: I64, cc: I64, order: I64, seeds: npt.NDArray[np.uint32], rounds: int
) -> F64:  # pragma: no cover - numba
    """Per pair (candidate vs baseline), `rounds` multinomial draws over its cells; logits out.

    Cells are drawn by conditional binomials in `order` (within each pair: rarest first, so the
    commonest cell takes the rest)."""
    n_pairs = ptr.size - 1
    out = np.empty((n_pairs, rounds))
    for p in range(n_pairs):  # each pair seeds its own stream: callers may split pairs across threads
        lo = ptr[p]
        hi = ptr[p + 1]
        np.random.seed(seeds[p])
        total = 0
        for c in range(lo, hi):
            total += cc[c]
        for r in range(rounds):
            left = total
            mass = total
            s2 = 0
            w = 0
            for t in range(lo, hi - 1):
                c = order[t]
                if left == 0:
                    break
                x = np.random.binomial(left, cc[c] / mass)
                mass -= cc[c]
                left -= x
                s2 += x * cs2[c]
                w += x * cw[c]
            if hi > lo:
                c = order[hi - 1]
                s2 += left * cs2[c]
                w += left * cw[c]
            out[p, r] = star_logit(s2, w)
    return out
