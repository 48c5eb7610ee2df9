"""Bradley-Terry maximum likelihood over pair totals (numba kernels).

Strengths are natural-log odds with the baseline fixed at 0; a tie counts half a win for each side.
The MLE exists only when every model is strongly connected to the baseline in the "has beaten" graph
(Zermelo's condition, `_connected`). Models outside that component (only wins, only losses, no games,
or a separate group) get one virtual tied game against the baseline, which keeps every estimate
finite; the caller flags them. Pair totals are `win` (wins of i, ties as half) and `n` (games) per
pair (i, j). The bootstraps that refit this per round are `_bt_bootstrap`.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from arena_engine.rating._connected import outside_component, with_virtual_ties

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B1 = npt.NDArray[np.bool_]

NEWTON_TOL = 1e-12  # largest step (natural-log units) at which Newton stops
CHORD_TOL = 1e-8  # bootstrap rounds only: 4e-6 Elo points, far below any percentile's noise
MAX_NEWTON = 100
MAX_CHORD = 60


@njit(cache=True, inline="always")
def _log_sigmoid(d: float) -> float:  # pragma: no cover - numba
    if d >= 0.0:
        return -math.log1p(math.exp(-d))
    return d - math.log1p(math.exp(d))


@njit(cache=True, inline="always")
def _sigmoid(d: float) -> float:  # pragma: no cover - numba
    if d >= 0.0:
        return 1.0 / (1.0 + math.exp(-d))
    e = math.exp(d)
    return e / (1.0 + e)


@njit(cache=True, inline="always")
def loglik(pi: I64, pj: I64, win: F64, n: F64, beta: F64) -> float:  # pragma: no cover - numba
    total = 0.0
    for p in range(pi.size):
        d = beta[pi[p]] - beta[pj[p]]
        total += win[p] * _log_sigmoid(d) + (n[p] - win[p]) * _log_sigmoid(-d)
    return total


@njit(cache=True, inline="always")
def _gradient(pi: I64, pj: I64, win: F64, n: F64, beta: F64, k: int) -> F64:  # pragma: no cover
    grad = np.zeros(k)
    for p in range(pi.size):  # branch-free sigmoid: exp overflow gives 1 / inf = 0, still exact
        r = win[p] - n[p] / (1.0 + math.exp(beta[pj[p]] - beta[pi[p]]))
        grad[pi[p]] += r
        grad[pj[p]] -= r
    return grad


@njit(cache=True)
def hessian(pi: I64, pj: I64, n: F64, beta: F64, k: int, base: int) -> F64:  # pragma: no cover - numba
    """Observed information over the free strengths (baseline row and column removed)."""
    h = np.zeros((k - 1, k - 1))
    for p in range(pi.size):
        s = _sigmoid(beta[pi[p]] - beta[pj[p]])
        v = n[p] * s * (1.0 - s)
        a = pi[p] - (1 if pi[p] > base else 0)
        b = pj[p] - (1 if pj[p] > base else 0)
        if pi[p] != base:
            h[a, a] += v
        if pj[p] != base:
            h[b, b] += v
        if pi[p] != base and pj[p] != base:
            h[a, b] -= v
            h[b, a] -= v
    return h


@njit(cache=True, inline="always")
def _any(flags: B1) -> bool:  # pragma: no cover - numba (no generators in nopython mode)
    count = 0
    for f in flags:
        count += 1 if f else 0
    return count > 0


@njit(cache=True, inline="always")
def _max_abs(vec: F64) -> float:  # pragma: no cover - numba
    biggest = 0.0
    for x in vec:
        biggest = max(biggest, abs(x))
    return biggest


@njit(cache=True, inline="always")
def _free(vec: F64, base: int) -> F64:  # pragma: no cover - numba
    out = np.empty(vec.size - 1)
    for m in range(vec.size):
        if m < base:
            out[m] = vec[m]
        elif m > base:
            out[m - 1] = vec[m]
    return out


@njit(cache=True, inline="always")
def newton(
    pi: I64, pj: I64, win: F64, n: F64, k: int, base: int, beta0: F64
) -> F64:  # pragma: no cover - numba
    """Newton's method with step halving; the data must satisfy Zermelo's condition."""
    beta = beta0.copy()
    beta[base] = 0.0
    if k == 1:
        return beta
    ll = loglik(pi, pj, win, n, beta)
    for _ in range(MAX_NEWTON):
        grad = _free(_gradient(pi, pj, win, n, beta, k), base)
        h = hessian(pi, pj, n, beta, k, base)
        step = cholesky_solve(cholesky(h), grad)
        biggest = _max_abs(step)
        t = 1.0
        cand = beta.copy()
        ll_new = ll
        while True:
            for m in range(k):
                if m < base:
                    cand[m] = beta[m] + t * step[m]
                elif m > base:
                    cand[m] = beta[m] + t * step[m - 1]
            ll_new = loglik(pi, pj, win, n, cand)
            if ll_new >= ll - 1e-12 * abs(ll) or t < 1e-8:
                break
            t *= 0.5
        for m in range(k):
            beta[m] = cand[m]
        ll = ll_new
        if biggest * t < NEWTON_TOL:
            break
    return beta


@njit(cache=True)
def cholesky(h: F64) -> F64:  # pragma: no cover - numba
    """Lower factor L of h = L L^T (h symmetric positive definite; tiny pivots are floored)."""
    m = h.shape[0]
    chol = np.zeros((m, m))
    floor = 0.0
    for r in range(m):
        floor = max(floor, abs(h[r, r]))
    floor = max(floor * 1e-14, 1e-300)
    for c in range(m):
        s = h[c, c]
        for t in range(c):
            s -= chol[c, t] * chol[c, t]
        d = math.sqrt(max(s, floor))
        chol[c, c] = d
        for r in range(c + 1, m):
            s = h[r, c]
            for t in range(c):
                s -= chol[r, t] * chol[c, t]
            chol[r, c] = s / d
    return chol


@njit(cache=True, inline="always")
def cholesky_solve(chol: F64, rhs: F64) -> F64:  # pragma: no cover - numba
    """Solve L L^T x = rhs."""
    m = rhs.size
    y = np.empty(m)
    for r in range(m):
        s = rhs[r]
        for c in range(r):
            s -= chol[r, c] * y[c]
        y[r] = s / chol[r, r]
    x = np.empty(m)
    for r in range(m - 1, -1, -1):
        s = y[r]
        for c in range(r + 1, m):
            s -= chol[c, r] * x[c]
        x[r] = s / chol[r, r]
    return x


@njit(cache=True)
def fit(
    pi: I64, pj: I64, win: F64, n: F64, k: int, base: int, beta0: F64, chol: F64
) -> F64:  # pragma: no cover - numba
    """MLE with virtual ties where needed. With a Cholesky factor `chol` of a nearby information
    matrix (shape (k-1, k-1)), tries the cheap chord iteration first; else, or if it stalls, Newton."""
    outside = outside_component(pi, pj, win, n, k, base)
    if _any(outside):
        qi, qj, qw, qn = with_virtual_ties(pi, pj, win, n, outside, base)
        return newton(qi, qj, qw, qn, k, base, beta0)
    if chol.shape[0] == k - 1 and k > 1:
        beta = beta0.copy()
        beta[base] = 0.0
        prev = np.inf
        for _ in range(MAX_CHORD):
            step = cholesky_solve(chol, _free(_gradient(pi, pj, win, n, beta, k), base))
            biggest = _max_abs(step)
            if not biggest < 0.9 * prev and biggest > CHORD_TOL:
                break  # not contracting: fall back to Newton
            for m in range(k):
                if m < base:
                    beta[m] += step[m]
                elif m > base:
                    beta[m] += step[m - 1]
            if biggest < CHORD_TOL:
                return beta
            prev = biggest
    return newton(pi, pj, win, n, k, base, beta0)
