"""Length-controlled Bradley-Terry (as AlpacaEval 2 does for its length-controlled win rate).

Per game between A and B: logit P(A wins) = beta_A - beta_B + phi * tanh((len_A - len_B) / s), with
s the standard deviation of the length differences over the scope's games, ties as half wins and
strong verdicts weighted. The length-controlled rating is beta: the rating the model would have if
its answers were as long as its opponent's. One slope phi is shared by every model: length bias is a
property of the judge. phi carries a weak ridge penalty (RIDGE) so that data a length rule separates
perfectly still gives a finite fit. Intervals: the cluster-robust sandwich (and the default score
interval on it), or the cluster bootstrap (queries drawn with replacement), one linearised Newton
step per round from the full fit (_length_one_step.one_step_bootstrap; rounds where a model leaves the
baseline's component, and data whose fit needs virtual ties, are refitted exactly by lc_bootstrap).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from arena_engine.rating._aggregate import Battles
from arena_engine.rating._bradley_terry import (
    _log_sigmoid,
    _max_abs,
    _sigmoid,
    cholesky,
    cholesky_solve,
)
from arena_engine.rating._connected import outside_component
from arena_engine.rating._length_fast import RIDGE
from arena_engine.rating._random import below, new_state

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]

NEWTON_TOL = 1e-12
CHORD_TOL = 1e-8
MAX_ITER = 100


@njit(cache=True, inline="always")
def _index(m: int, base: int) -> int:  # pragma: no cover - numba
    return m - 1 if m > base else m


@njit(cache=True, inline="always")
def _virtual_games(
    gp: I64, gi: I64, gj: I64, gx: F64, gs2: I64, gw: I64, cw: F64, n_pairs: int, pi: I64, pj: I64, k: int, base: int
) -> tuple[I64, I64, F64, F64, F64, int]:  # pragma: no cover - numba
    """Games of positive weight `cw` as (i, j, x, wins, n) float weights, then one virtual tie (x = 0) for
    every model not strongly connected to the baseline in the weighted data; and how many were added.
    Games of weight 0 (a third of them in a bootstrap round) are left out: they add exactly 0."""
    win = np.zeros(n_pairs)
    n = np.zeros(n_pairs)
    used = 0
    for g in range(gi.size):
        if cw[g] > 0:
            used += 1
            win[gp[g]] += cw[g] * 0.5 * gs2[g]
            n[gp[g]] += cw[g] * gw[g]
    outside = outside_component(pi, pj, win, n, k, base)
    extra = 0
    for m in range(k):
        if outside[m]:
            extra += 1
    size = used + extra
    ri = np.empty(size, np.int64)
    rj = np.empty(size, np.int64)
    rx = np.zeros(size)
    rwin = np.empty(size)
    rn = np.empty(size)
    pos = 0
    for g in range(gi.size):
        if cw[g] > 0:
            ri[pos] = gi[g]
            rj[pos] = gj[g]
            rx[pos] = gx[g]
            rwin[pos] = cw[g] * 0.5 * gs2[g]
            rn[pos] = cw[g] * gw[g]
            pos += 1
    for m in range(k):
        if outside[m]:
            ri[pos] = min(m, base)
            rj[pos] = max(m, base)
            rwin[pos] = 0.5
            rn[pos] = 1.0
            pos += 1
    return ri, rj, rx, rwin, rn, extra


@njit(cache=True)
def _loglik(gi: I64, gj: I64, gx: F64, win: F64, n: F64, theta: F64, k: int, base: int) -> float:  # pragma: no cover
    phi = theta[k - 1]
    total = -0.5 * RIDGE * phi * phi
    for g in range(gi.size):
        d = phi * gx[g]
        if gi[g] != base:
            d += theta[_index(gi[g], base)]
        if gj[g] != base:
            d -= theta[_index(gj[g], base)]
        total += win[g] * _log_sigmoid(d) + (n[g] - win[g]) * _log_sigmoid(-d)
    return total


@njit(cache=True)
def _grad_hess(
    gi: I64, gj: I64, gx: F64, win: F64, n: F64, theta: F64, k: int, base: int, want_hess: bool
) -> tuple[F64, F64]:  # pragma: no cover - numba
    """Gradient and information over theta = (free strengths in model order, phi)."""
    dim = k
    grad = np.zeros(dim)
    hess = np.zeros((dim, dim)) if want_hess else np.zeros((0, 0))
    phi = theta[dim - 1]
    grad[dim - 1] -= RIDGE * phi
    if want_hess:
        hess[dim - 1, dim - 1] += RIDGE
    for g in range(gi.size):
        a = _index(gi[g], base) if gi[g] != base else -1
        b = _index(gj[g], base) if gj[g] != base else -1
        d = phi * gx[g]
        if a >= 0:
            d += theta[a]
        if b >= 0:
            d -= theta[b]
        p = _sigmoid(d)
        r = win[g] - n[g] * p
        x = gx[g]
        grad[dim - 1] += r * x
        if a >= 0:
            grad[a] += r
        if b >= 0:
            grad[b] -= r
        if want_hess:
            h = n[g] * p * (1.0 - p)
            hess[dim - 1, dim - 1] += h * x * x
            if a >= 0:
                hess[a, a] += h
                hess[a, dim - 1] += h * x
                hess[dim - 1, a] += h * x
            if b >= 0:
                hess[b, b] += h
                hess[b, dim - 1] -= h * x
                hess[dim - 1, b] -= h * x
            if a >= 0 and b >= 0:
                hess[a, b] -= h
                hess[b, a] -= h
    return grad, hess


@njit(cache=True)
def lc_fit(
    gi: I64, gj: I64, gx: F64, win: F64, n: F64, k: int, base: int, theta0: F64, chol: F64
) -> F64:  # pragma: no cover - numba
    """Penalised MLE of theta = (free strengths, phi): chord steps with `chol` if given, else Newton."""
    theta = theta0.copy()
    if chol.shape[0] == k:
        prev = np.inf
        for _ in range(MAX_ITER):
            grad, _ = _grad_hess(gi, gj, gx, win, n, theta, k, base, False)
            step = cholesky_solve(chol, grad)
            biggest = _max_abs(step)
            if not biggest < 0.9 * prev and biggest > CHORD_TOL:
                break
            for m in range(k):
                theta[m] += step[m]
            if biggest < CHORD_TOL:
                return theta
            prev = biggest
        theta = theta0.copy()
    ll = _loglik(gi, gj, gx, win, n, theta, k, base)
    for _ in range(MAX_ITER):
        grad, hess = _grad_hess(gi, gj, gx, win, n, theta, k, base, True)
        step = cholesky_solve(cholesky(hess), grad)
        t = 1.0
        cand = np.empty(k)
        while True:
            for m in range(k):
                cand[m] = theta[m] + t * step[m]
            ll_new = _loglik(gi, gj, gx, win, n, cand, k, base)
            if ll_new >= ll - 1e-12 * abs(ll) or t < 1e-8:
                break
            t *= 0.5
        theta = cand
        ll = ll_new
        if _max_abs(step) * t < NEWTON_TOL:
            break
    return theta


@njit(cache=True, nogil=True)
def lc_bootstrap(
    ptr: I64, gp: I64, gi: I64, gj: I64, gx: F64, gs2: I64, gw: I64, pi: I64, pj: I64, k: int, base: int,
    seeds: npt.NDArray[np.uint32], theta_hat: F64, chol: F64,
) -> F64:  # pragma: no cover - numba
    """Per round: clusters (games ptr[c]:ptr[c+1]) drawn with replacement, one refit; rows = rounds."""
    n_clusters = ptr.size - 1
    out = np.empty((seeds.size, k))
    counts = np.zeros(n_clusters, np.float64)
    cw = np.empty(gi.size)
    for r in range(seeds.size):
        state = new_state(seeds[r])
        for c in range(n_clusters):
            counts[c] = 0.0
        for _ in range(n_clusters):
            counts[below(state, n_clusters)] += 1.0
        for c in range(n_clusters):
            for g in range(ptr[c], ptr[c + 1]):
                cw[g] = counts[c]
        ri, rj, rx, rwin, rn, extra = _virtual_games(gp, gi, gj, gx, gs2, gw, cw, pi.size, pi, pj, k, base)
        use_chol = chol if extra == 0 else np.zeros((0, 0))
        theta = lc_fit(ri, rj, rx, rwin, rn, k, base, theta_hat, use_chol)
        for m in range(k):
            out[r, m] = theta[m]
    return out


def _strengths(theta: F64, k: int, base: int) -> F64:
    beta = np.zeros(k)
    beta[np.arange(k) != base] = theta[: k - 1]
    return beta


def _games(
    a: I64, o: I8, battles: Battles, lengths: F64, strong_weight: int
) -> tuple[I64, I64, I64, I64, F64, F64, F64]:
    """Games with a pair as (ptr over clusters, pair, s2, w, length feature x, wins and weighted games
    per pair): clusters in content order, games within a cluster by (pair, s2, w, x)."""
    from arena_engine.rating import _length_layout as layout

    ptr, rec, hashes = layout.lc_layout(
        a, o, battles.pair, battles.cluster, battles.n_clusters, np.ascontiguousarray(lengths, np.float64),
        battles.pi, strong_weight,
    )
    # clusters in content order; equal hashes mean equal content, so any order among them will do
    position = np.argsort(hashes).astype(np.int64)
    return layout.in_content_order(ptr, position, rec, battles.pi.size)


def rate_length_controlled(
    a: I64,
    o: I8,
    battles: Battles,
    lengths: F64,
    *,
    strong_weight: int,
    rounds: int,
    seeds: npt.NDArray[np.uint32],
    interval: str,
) -> tuple[F64, F64 | None, F64 | None]:
    """(strengths, bootstrap strengths or None, standard errors or None), natural-log units."""
    from arena_engine.rating import _length_fast as fast
    from arena_engine.rating import _length_one_step as one_step
    from arena_engine.rating._bradley_terry import fit as bt_fit

    k, base = battles.k, battles.base
    pi, pj = battles.pi, battles.pj
    ptr, gp, gs2, gw, gx, win_p, n_p = _games(a, o, battles, lengths, strong_weight)
    outside = outside_component(pi, pj, win_p, n_p, k, base)
    ga, gb, gptr, x, win, n, where = fast.by_pair(gp, gx, gs2, gw, pi, pj, outside, base)
    start = np.zeros(k)  # warm start: plain BT on the pair totals, no length slope
    if k > 1:
        beta0 = bt_fit(pi, pj, win_p, n_p, k, base, np.zeros(k), np.zeros((0, 0)))
        start[: k - 1] = beta0[np.arange(k) != base]
    theta, hess, resid = fast.grouped_fit(ga, gb, gptr, x, win, n, k, base, start)
    beta = _strengths(theta, k, base)
    if interval in ("sandwich", "score"):
        meat = fast.lc_meat(ptr, gp, gx, resid, where, pi, pj, k, base)
        g = ptr.size - 1
        if g > 1:
            meat *= g / (g - 1.0)
        hinv = np.linalg.pinv(hess)
        cov = hinv @ meat @ hinv
        se = np.zeros(k)
        se[np.arange(k) != base] = np.sqrt(np.maximum(np.diag(cov)[: k - 1], 0.0))
        return beta, None, se
    if rounds == 0:
        return beta, None, None
    from arena_engine.rating._threads import in_threads

    gi, gj = pi[gp], pj[gp]
    eptr, epair, sums, flags = one_step.entry_sums(ptr, gp, gx, gs2, gw, pi, pj, theta, k, base)
    pptr, ecluster, psums, pflags = one_step.by_pair_entries(eptr, epair, sums, flags, pi.size)
    n_clusters = ptr.size - 1

    def rounds_of(lo: int, hi: int) -> F64:
        if outside.any():  # the fit leans on virtual ties: no one-step expansion around it, refit all
            return lc_bootstrap(ptr, gp, gi, gj, gx, gs2, gw, pi, pj, k, base, seeds[lo:hi], theta, np.zeros((0, 0)))
        out, refit = one_step.one_step_bootstrap(
            n_clusters, pptr, ecluster, psums, pflags, pi, pj, k, base, theta, seeds[lo:hi]
        )
        redo = np.flatnonzero(refit)
        if redo.size:  # a model left the baseline's component in these rounds: refit them exactly
            out[redo] = lc_bootstrap(
                ptr, gp, gi, gj, gx, gs2, gw, pi, pj, k, base, seeds[lo:hi][redo], theta, np.zeros((0, 0))
            )
        return out

    thetas = in_threads(rounds_of, rounds, work=float(epair.size) * 8 * rounds)
    samples = np.zeros((rounds, k))
    samples[:, np.arange(k) != base] = thetas[:, : k - 1]
    return beta, samples, None


def rate_length_controlled_refit(
    a: I64, o: I8, battles: Battles, lengths: F64, *, strong_weight: int, rounds: int,
    seeds: npt.NDArray[np.uint32],
) -> tuple[F64, F64]:
    """Reference: (strengths, bootstrap strengths) with an exact refit per round (the slow path the
    one-step bootstrap approximates; used by tests and benchmarks/bench_coverage.py to compare)."""
    k, base = battles.k, battles.base
    pi, pj = battles.pi, battles.pj
    ptr, gp, gs2, gw, gx, _, _ = _games(a, o, battles, lengths, strong_weight)
    gi, gj = pi[gp], pj[gp]
    ones = np.ones(gi.size)
    ri, rj, rx, rwin, rn, extra = _virtual_games(gp, gi, gj, gx, gs2, gw, ones, pi.size, pi, pj, k, base)
    theta = lc_fit(ri, rj, rx, rwin, rn, k, base, np.zeros(k), np.zeros((0, 0)))
    _, hess = _grad_hess(ri, rj, rx, rwin, rn, theta, k, base, True)
    chol = cholesky(hess) if extra == 0 else np.zeros((0, 0))
    thetas = lc_bootstrap(ptr, gp, gi, gj, gx, gs2, gw, pi, pj, k, base, seeds, theta, chol)
    samples = np.zeros((rounds, k))
    samples[:, np.arange(k) != base] = thetas[:, : k - 1]
    return _strengths(theta, k, base), samples
