"""The linearised cluster bootstrap of length-controlled Bradley-Terry (numba; see _length for the model).

A round reweights the clusters with multinomial counts and takes one Newton step from the full-data
fit, with the resampled gradient and information built from per-(cluster, pair) sums fixed at the
full-data fit (`entry_sums`, regrouped by pair by `by_pair_entries`). The error against a refit is
O(1/n) where the spread of the rounds is O(1/sqrt(n)) (see docs/rating.md). A round in which some
model leaves the baseline's strongly connected component (the refit would need a virtual tie) is
flagged for an exact refit instead.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from arena_engine.rating._bradley_terry import cholesky, cholesky_solve
from arena_engine.rating._connected import outside_component
from arena_engine.rating._length_fast import RIDGE, free_index
from arena_engine.rating._random import below, new_state

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]



@njit(cache=True)
def entry_sums(
    ptr: I64, gp: I64, gx: F64, gs2: I64, gw: I64, pi: I64, pj: I64, theta: F64, k: int, base: int
) -> tuple[I64, I64, F64, I64]:  # pragma: no cover - numba
    """Per (cluster, pair) entry at theta: (entry ptr over clusters, entry pair, sums rows
    [r, r x, h, h x, h x^2], flags: 1 if the pair's first model won (part of) a game, 2 if its
    second did); games of a cluster are sorted by pair (lc_layout)."""
    n_clusters = ptr.size - 1
    eptr = np.zeros(n_clusters + 1, np.int64)
    for c in range(n_clusters):
        cnt = 0
        for g in range(ptr[c], ptr[c + 1]):
            if g == ptr[c] or gp[g] != gp[g - 1]:
                cnt += 1
        eptr[c + 1] = eptr[c] + cnt
    m = eptr[n_clusters]
    epair = np.empty(m, np.int64)
    sums = np.zeros((m, 5))
    flags = np.zeros(m, np.int64)
    phi = theta[k - 1]
    e = -1
    for c in range(n_clusters):
        for g in range(ptr[c], ptr[c + 1]):
            if g == ptr[c] or gp[g] != gp[g - 1]:
                e += 1
                epair[e] = gp[g]
            ia = free_index(pi[gp[g]], base)
            ib = free_index(pj[gp[g]], base)
            xv = gx[g]
            d = phi * xv
            if ia >= 0:
                d += theta[ia]
            if ib >= 0:
                d -= theta[ib]
            if d >= 0.0:
                p = 1.0 / (1.0 + math.exp(-d))
            else:
                ex = math.exp(d)
                p = ex / (1.0 + ex)
            wv = 0.5 * gs2[g]
            nv = float(gw[g])
            r = wv - nv * p
            h = nv * p * (1.0 - p)
            sums[e, 0] += r
            sums[e, 1] += r * xv
            sums[e, 2] += h
            sums[e, 3] += h * xv
            sums[e, 4] += h * xv * xv
            if gs2[g] > 0:
                flags[e] |= 1
            if gs2[g] < 2 * gw[g]:
                flags[e] |= 2
    return eptr, epair, sums, flags


def by_pair_entries(eptr: I64, epair: I64, sums: F64, flags: I64, n_pairs: int) -> tuple[I64, I64, F64, I64]:
    """Entries regrouped by pair (stable): (ptr over pairs, entry's cluster, sums, flags)."""
    cluster = np.repeat(np.arange(eptr.size - 1, dtype=np.int64), np.diff(eptr))
    order = np.argsort(epair, kind="stable")
    ptr = np.zeros(n_pairs + 1, np.int64)
    np.cumsum(np.bincount(epair, minlength=n_pairs), out=ptr[1:])
    return ptr, cluster[order], np.ascontiguousarray(sums[order]), flags[order]


@njit(cache=True, nogil=True)
def one_step_bootstrap(
    n_clusters: int, pptr: I64, ecluster: I64, sums: F64, flags: I64, pi: I64, pj: I64, k: int, base: int,
    theta_hat: F64, seeds: npt.NDArray[np.uint32],
) -> tuple[F64, npt.NDArray[np.bool_]]:  # pragma: no cover - numba
    """Per round: clusters drawn as in _length.lc_bootstrap (same seeds, same draws), the resampled
    gradient and information at theta_hat from the entry sums (grouped by pair: pptr, ecluster),
    theta_hat + one Newton step. Returns (rows = rounds, whether the round needs an exact refit:
    a model outside the baseline's component)."""
    n_pairs = pi.size
    out = np.empty((seeds.size, k))
    refit = np.zeros(seeds.size, np.bool_)
    tot = np.zeros((n_pairs, 5))
    counts = np.zeros(n_clusters)
    seen = np.zeros(n_pairs, np.int64)
    win = np.empty(n_pairs)
    n = np.empty(n_pairs)
    phi = theta_hat[k - 1]
    for r in range(seeds.size):
        state = new_state(seeds[r])
        counts[:] = 0.0
        for _ in range(n_clusters):
            counts[below(state, n_clusters)] += 1.0
        for p in range(n_pairs):
            t0 = t1 = t2 = t3 = t4 = 0.0
            f = 0
            for e in range(pptr[p], pptr[p + 1]):
                w = counts[ecluster[e]]  # no branch on w > 0: a third are 0, unpredictably
                t0 += w * sums[e, 0]
                t1 += w * sums[e, 1]
                t2 += w * sums[e, 2]
                t3 += w * sums[e, 3]
                t4 += w * sums[e, 4]
            tot[p, 0] = t0
            tot[p, 1] = t1
            tot[p, 2] = t2
            tot[p, 3] = t3
            tot[p, 4] = t4
            # whether each side still has a win: scan the pair's entries with such a win until one
            # was drawn (about 1.6 looks each; or-ing flags inside the loop above costs 4x the loop)
            for bit in (1, 2):
                for e in range(pptr[p], pptr[p + 1]):
                    if flags[e] & bit and counts[ecluster[e]] > 0.0:
                        f |= bit
                        break
            seen[p] = f
        bad = False
        every_pair_both_ways = True
        for p in range(n_pairs):
            if seen[p] != 3:
                every_pair_both_ways = False
        # the full data are strongly connected (the caller checks), so if every pair still has wins
        # both ways the round is too; else ask the component search
        if not every_pair_both_ways:
            for p in range(n_pairs):  # only whether each side has won matters to the component
                win[p] = 1.0 if seen[p] & 1 else 0.0
                n[p] = win[p] + (1.0 if seen[p] & 2 else 0.0)
            outside = outside_component(pi, pj, win, n, k, base)
            for m in range(k):
                if outside[m]:
                    bad = True
        if bad:
            refit[r] = True
            continue
        grad = np.zeros(k)
        hess = np.zeros((k, k))
        grad[k - 1] = -RIDGE * phi
        hess[k - 1, k - 1] = RIDGE
        for p in range(n_pairs):
            ia = free_index(pi[p], base)
            ib = free_index(pj[p], base)
            grad[k - 1] += tot[p, 1]
            hess[k - 1, k - 1] += tot[p, 4]
            if ia >= 0:
                grad[ia] += tot[p, 0]
                hess[ia, ia] += tot[p, 2]
                hess[ia, k - 1] += tot[p, 3]
                hess[k - 1, ia] += tot[p, 3]
            if ib >= 0:
                grad[ib] -= tot[p, 0]
                hess[ib, ib] += tot[p, 2]
                hess[ib, k - 1] -= tot[p, 3]
                hess[k - 1, ib] -= tot[p, 3]
            if ia >= 0 and ib >= 0:
                hess[ia, ib] -= tot[p, 2]
                hess[ib, ia] -= tot[p, 2]
        step = cholesky_solve(cholesky(hess), grad)
        for m in range(k):
            out[r, m] = theta_hat[m] + step[m]
    return out, refit
