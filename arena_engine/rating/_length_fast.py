"""Fast kernels of length-controlled Bradley-Terry (see _length for the model): the fit.

The games come laid out by `_length_layout`; the linearised bootstrap around this fit is
`_length_one_step`.

- `by_pair`: the games regrouped by pair, with a virtual tie for each model outside the baseline's
  component.
- `grouped_fit`: Newton's method over games grouped by pair. Within a pair d = beta_a - beta_b +
  phi x, so one pass gives log-likelihood, gradient and information from five sums per pair; the
  line search reuses the pass at the accepted point, so an iteration costs one pass over the games.
- `lc_meat`: the clusters' score outer products for the sandwich interval.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from arena_engine.rating._bradley_terry import cholesky, cholesky_solve

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]
U64 = npt.NDArray[np.uint64]

RIDGE = 1e-3  # penalty phi^2 * RIDGE / 2 on the length slope (shared with _length's refit)
NEWTON_TOL = 1e-12
MAX_ITER = 100
THIRD_DERIVATIVE = 1.0 / (6.0 * math.sqrt(3.0))  # max over d of |sigma (1 - sigma) (1 - 2 sigma)|


@njit(cache=True)
def by_pair(
    gp: I64, gx: F64, gs2: I64, gw: I64, pi: I64, pj: I64, outside: npt.NDArray[np.bool_], base: int
) -> tuple[I64, I64, I64, F64, F64, F64, I64]:  # pragma: no cover - numba
    """Games regrouped by pair (stable), then one virtual tie (x = 0) against the baseline per model in
    `outside`, each as its own group. Returns (group model a, model b, ptr, x, win, n, position of
    each input game in the regrouped arrays)."""
    n_pairs = pi.size
    extra = 0
    for m in range(outside.size):
        if outside[m]:
            extra += 1
    ga = np.empty(n_pairs + extra, np.int64)
    gb = np.empty(n_pairs + extra, np.int64)
    ptr = np.zeros(n_pairs + extra + 1, np.int64)
    for t in range(gp.size):
        ptr[gp[t] + 1] += 1
    for p in range(n_pairs):
        ptr[p + 1] += ptr[p]
        ga[p] = pi[p]
        gb[p] = pj[p]
    size = gp.size + extra
    x = np.zeros(size)
    win = np.empty(size)
    n = np.empty(size)
    fill = ptr[:n_pairs].copy()
    where = np.empty(gp.size, np.int64)
    for t in range(gp.size):
        u = fill[gp[t]]
        fill[gp[t]] += 1
        where[t] = u
        x[u] = gx[t]
        win[u] = 0.5 * gs2[t]
        n[u] = gw[t]
    g = n_pairs
    for m in range(outside.size):
        if outside[m]:
            ga[g] = min(m, base)
            gb[g] = max(m, base)
            win[ptr[g]] = 0.5
            n[ptr[g]] = 1.0
            ptr[g + 1] = ptr[g] + 1
            g += 1
    return ga, gb, ptr, x, win, n, where


@njit(cache=True, inline="always")
def free_index(m: int, base: int) -> int:  # pragma: no cover - numba
    if m == base:
        return -1
    return m - 1 if m > base else m


@njit(cache=True)
def grouped_pass(
    ga: I64, gb: I64, ptr: I64, x: F64, win: F64, n: F64, theta: F64, k: int, base: int, resid: F64,
    want_ll: bool,
) -> tuple[float, F64, F64]:  # pragma: no cover - numba
    """Penalised log-likelihood (if `want_ll`, else 0), gradient and information at theta = (free
    strengths, phi); each game's residual win - n p into `resid`."""
    phi = theta[k - 1]
    grad = np.zeros(k)
    hess = np.zeros((k, k))
    ll = -0.5 * RIDGE * phi * phi
    grad[k - 1] = -RIDGE * phi
    hess[k - 1, k - 1] = RIDGE
    for g in range(ga.size):
        ia = free_index(ga[g], base)
        ib = free_index(gb[g], base)
        d0 = 0.0
        if ia >= 0:
            d0 += theta[ia]
        if ib >= 0:
            d0 -= theta[ib]
        sr = srx = sh = shx = shxx = 0.0
        for t in range(ptr[g], ptr[g + 1]):
            xv = x[t]
            d = d0 + phi * xv
            e = math.exp(-abs(d))
            p = 1.0 / (1.0 + e) if d >= 0.0 else e / (1.0 + e)
            wv = win[t]
            nv = n[t]
            if want_ll:  # log sigma(d) and log sigma(-d)
                l1 = math.log1p(e)
                ls, lsn = (-l1, -d - l1) if d >= 0.0 else (d - l1, -l1)
                ll += wv * ls + (nv - wv) * lsn
            r = wv - nv * p
            resid[t] = r
            h = nv * p * (1.0 - p)
            sr += r
            srx += r * xv
            sh += h
            shx += h * xv
            shxx += h * xv * xv
        grad[k - 1] += srx
        hess[k - 1, k - 1] += shxx
        if ia >= 0:
            grad[ia] += sr
            hess[ia, ia] += sh
            hess[ia, k - 1] += shx
            hess[k - 1, ia] += shx
        if ib >= 0:
            grad[ib] -= sr
            hess[ib, ib] += sh
            hess[ib, k - 1] -= shx
            hess[k - 1, ib] -= shx
        if ia >= 0 and ib >= 0:
            hess[ia, ib] -= sh
            hess[ib, ia] -= sh
    return ll, grad, hess


@njit(cache=True)
def grouped_fit(
    ga: I64, gb: I64, ptr: I64, x: F64, win: F64, n: F64, k: int, base: int, theta0: F64
) -> tuple[F64, F64, F64]:  # pragma: no cover - numba
    """Penalised MLE by damped Newton from theta0; returns (theta, information at theta, residuals
    win - n p of the games at theta)."""
    theta = theta0.copy()
    resid = np.empty(x.size)
    total_n = 0.0
    for g in range(n.size):
        total_n += n[g]
    ll, grad, hess = grouped_pass(ga, gb, ptr, x, win, n, theta, k, base, resid, False)
    ll_known = False
    cand = np.empty(k)
    prev, prev_t = np.inf, 0.0
    for _ in range(MAX_ITER):
        step = cholesky_solve(cholesky(hess), grad)
        biggest = 0.0
        gain = 0.0  # g's - s'H s / 2: the quadratic model's rise (s'H s / 2 when s solves H s = g)
        for m in range(k):
            biggest = max(biggest, abs(step[m]))
            gain += step[m] * grad[m]
            for u in range(k):
                gain -= 0.5 * step[m] * hess[m, u] * step[u]
        # Along the step s, f(1) - f(0) = g's - s'H s / 2 + R, |R| <= (max third derivative) / 6,
        # and the third derivative is at most sum over games of n * THIRD_DERIVATIVE * |change of d|^3
        # with the change of d at most 3 * biggest (|x| <= 1). When the gain beats that bound the full
        # step surely raises the likelihood, the check below would accept it unhalved, and the
        # log-likelihood (a log per game, 60% of a pass) need not be computed.
        sure = gain > THIRD_DERIVATIVE * total_n * (3.0 * biggest) ** 3 / 6.0
        t = 1.0
        if sure:
            for m in range(k):
                cand[m] = theta[m] + step[m]
            ll_new, grad_new, hess_new = grouped_pass(ga, gb, ptr, x, win, n, cand, k, base, resid, False)
        else:
            if not ll_known:
                ll = grouped_pass(ga, gb, ptr, x, win, n, theta, k, base, resid, True)[0]
            while True:
                for m in range(k):
                    cand[m] = theta[m] + t * step[m]
                ll_new, grad_new, hess_new = grouped_pass(ga, gb, ptr, x, win, n, cand, k, base, resid, True)
                if ll_new >= ll - 1e-12 * abs(ll) or t < 1e-8:
                    break
                t *= 0.5
        theta = cand.copy()
        ll, grad, hess = ll_new, grad_new, hess_new
        ll_known = not sure
        if biggest * t < NEWTON_TOL:
            break
        # quadratic convergence: the next step would be about c * biggest^2, c = biggest / prev^2;
        # stop when that is below the tolerance too (saves the last pass, which moves < 1e-12)
        quadratic = t == 1.0 and prev_t == 1.0 and biggest < 1e-4 and biggest < prev
        if quadratic and biggest * biggest * biggest / (prev * prev) < NEWTON_TOL:
            break
        prev, prev_t = biggest, t
    return theta, hess, resid


@njit(cache=True)
def lc_meat(
    ptr: I64, gp: I64, gx: F64, resid: F64, where: I64, pi: I64, pj: I64, k: int, base: int
) -> F64:  # pragma: no cover - numba
    """Sum over clusters of the outer product of the cluster's score (free strengths, phi), from the
    games' residuals at the fit (`resid[where[g]]` for game g in cluster order)."""
    meat = np.zeros((k, k))
    score = np.zeros(k)
    touched = np.empty(k, np.int64)
    for c in range(ptr.size - 1):
        for m in range(k):
            score[m] = 0.0
        for g in range(ptr[c], ptr[c + 1]):
            ia = free_index(pi[gp[g]], base)
            ib = free_index(pj[gp[g]], base)
            r = resid[where[g]]
            score[k - 1] += r * gx[g]
            if ia >= 0:
                score[ia] += r
            if ib >= 0:
                score[ib] -= r
        used = 0
        for u in range(k):
            if score[u] != 0.0:
                touched[used] = u
                used += 1
        for s1 in range(used):
            u = touched[s1]
            for s2 in range(used):
                v = touched[s2]
                meat[u, v] += score[u] * score[v]
    return meat
