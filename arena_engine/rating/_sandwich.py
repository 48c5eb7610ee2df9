"""Cluster-robust (sandwich) covariance of Bradley-Terry strengths: no resampling needed.

V = H^-1 B H^-1 with H the observed information and B = G/(G-1) sum_c g_c g_c^T, g_c the score of
cluster c (all games of one query together), G the number of clusters.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from arena_engine.rating._bradley_terry import _sigmoid, hessian

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@njit(cache=True, inline="always")
def _meat(
    ptr: I64, e_pair: I64, e_s2: I64, e_w: I64, pi: I64, pj: I64, beta: F64, k: int, base: int
) -> F64:  # pragma: no cover - numba
    meat = np.zeros((k - 1, k - 1))
    score = np.zeros(k)
    seen = np.full(k, -1, np.int64)
    touched = np.empty(k, np.int64)
    for c in range(ptr.size - 1):
        nt = 0
        for e in range(ptr[c], ptr[c + 1]):
            i = pi[e_pair[e]]
            j = pj[e_pair[e]]
            r = 0.5 * e_s2[e] - e_w[e] * _sigmoid(beta[i] - beta[j])
            for m, v in ((i, r), (j, -r)):
                if seen[m] != c:
                    seen[m] = c
                    score[m] = 0.0
                    if m != base:
                        touched[nt] = m
                        nt += 1
                score[m] += v
        for x in range(nt):
            mx = touched[x]
            fx = mx - (1 if mx > base else 0)
            for y in range(nt):
                my = touched[y]
                fy = my - (1 if my > base else 0)
                meat[fx, fy] += score[mx] * score[my]
    return meat


def sandwich_se(
    ptr: I64, e_pair: I64, e_s2: I64, e_w: I64, pi: I64, pj: I64, n: F64, beta: F64, k: int, base: int
) -> F64:
    """Standard errors of the strengths (natural log; 0 for the baseline)."""
    se = np.zeros(k)
    if k == 1:
        return se
    h = hessian(pi, pj, n, beta, k, base)
    meat = _meat(ptr, e_pair, e_s2, e_w, pi, pj, beta, k, base)
    g = ptr.size - 1
    if g > 1:
        meat *= g / (g - 1.0)
    hinv = np.linalg.pinv(h)
    cov = hinv @ meat @ hinv
    se[np.arange(k) != base] = np.sqrt(np.maximum(np.diag(cov), 0.0))
    return se


@njit(cache=True)
def star_sandwich_se(ptr: I64, cs2: I64, cw: I64, cc: I64, logit: F64) -> F64:  # pragma: no cover
    """Per pair (candidate vs baseline): the information is diagonal, so only B's diagonal matters."""
    n_pairs = ptr.size - 1
    se = np.zeros(n_pairs)
    for p in range(n_pairs):
        prob = _sigmoid(logit[p])
        info = 0.0
        meat = 0.0
        g = 0
        for c in range(ptr[p], ptr[p + 1]):
            info += cc[c] * cw[c] * prob * (1.0 - prob)
            d = 0.5 * cs2[c] - cw[c] * prob
            meat += cc[c] * d * d
            g += cc[c]
        if g > 1:
            meat = meat * g / (g - 1.0)
        se[p] = np.sqrt(meat) / info if info > 0 else 0.0
    return se


def star_sandwich_se_numpy(ptr: I64, cs2: I64, cw: I64, cc: I64, logit: F64) -> F64:
    """:func:`star_sandwich_se` by bincounts, for small inputs (nothing to compile). bincount adds in
    input order, as the loop does, so the two agree to the last bit or within a rounding."""
    n_pairs = ptr.size - 1
    pair_of = np.repeat(np.arange(n_pairs), np.diff(ptr))
    e = np.exp(-np.abs(logit))
    prob = np.where(logit >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))[pair_of]
    info = np.bincount(pair_of, weights=cc * cw * prob * (1.0 - prob), minlength=n_pairs)
    d = 0.5 * cs2 - cw * prob
    meat = np.bincount(pair_of, weights=cc * d * d, minlength=n_pairs)
    g = np.bincount(pair_of, weights=cc, minlength=n_pairs)
    meat = np.where(g > 1, meat * g / np.maximum(g - 1.0, 1.0), meat)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(info > 0, np.sqrt(meat) / np.where(info > 0, info, 1.0), 0.0)

