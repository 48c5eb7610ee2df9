"""Fast kernels of length-controlled Bradley-Terry (see _length for the model).

- `lc_layout`: games of the scope grouped by cluster, clusters in content order (the content hash of
  _canonical over (pair, s2, w, length difference seen from the pair's first model)), all in one
  numba pass plus one argsort of the cluster hashes (instead of a five-key lexsort of the rows).
- `grouped_fit`: Newton's method over games grouped by pair. Within a pair d = beta_a - beta_b +
  phi x, so one pass gives log-likelihood, gradient and information from five sums per pair; the
  line search reuses the pass at the accepted point, so an iteration costs one pass over the games.
- `one_step_bootstrap`: the linearised cluster bootstrap. A round reweights the clusters with
  multinomial counts and takes one Newton step from the full-data fit, with the resampled gradient
  and information built from per-(cluster, pair) sums fixed at the full-data fit. The error against
  a refit is O(1/n) where the spread of the rounds is O(1/sqrt(n)) (see docs/rating.md). A round
  in which some model leaves the baseline's strongly connected component (the refit would need a
  virtual tie) is refitted exactly instead.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from arena_engine.rating._bradley_terry import cholesky, cholesky_solve
from arena_engine.rating._canonical import _mix
from arena_engine.rating._connected import outside_component
from arena_engine.rating._random import below, new_state

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]
U64 = npt.NDArray[np.uint64]

RIDGE = 1e-3  # penalty phi^2 * RIDGE / 2 on the length slope (shared with _length's refit)
NEWTON_TOL = 1e-12
MAX_ITER = 100
THIRD_DERIVATIVE = 1.0 / (6.0 * math.sqrt(3.0))  # max over d of |sigma (1 - sigma) (1 - 2 sigma)|


@njit(cache=True, inline="always")
def _before(p1: int, s1: int, w1: int, x1: float, p2: int, s2: int, w2: int, x2: float) -> bool:  # pragma: no cover
    if p1 != p2:
        return p1 < p2
    if s1 != s2:
        return s1 < s2
    if w1 != w2:
        return w1 < w2
    return x1 < x2


@njit(cache=True)
def lc_layout(
    a: I64, o: I8, pair: I32, cluster: I32, n_clusters: int, lengths: F64, pi: I64, strong_weight: int
) -> tuple[I64, F64, U64]:  # pragma: no cover - numba
    """Games (rows with a pair) grouped by cluster code, within a cluster sorted by (pair, s2, w, dx).

    Returns (ptr over clusters, records [pair, s2, w, dx, raw difference len_A - len_B] as float64
    rows (one cache line per game for the reordering that follows), cluster hashes); s2 and dx are
    seen from the pair's first model (dx = +-(len_A - len_B))."""
    start = np.zeros(n_clusters + 1, np.int64)
    for r in range(a.size):
        if pair[r] >= 0:
            start[cluster[r] + 1] += 1
    for c in range(n_clusters):
        start[c + 1] += start[c]
    n = start[n_clusters]
    fill = start[:-1].copy()
    gp = np.empty(n, np.int64)
    gs2 = np.empty(n, np.int64)
    gw = np.empty(n, np.int64)
    dx = np.empty(n, np.float64)
    raw = np.empty(n, np.float64)
    for r in range(a.size):
        p = pair[r]
        if p < 0:
            continue
        t = fill[cluster[r]]
        fill[cluster[r]] += 1
        oc = int(o[r])
        w = strong_weight if abs(oc) == 2 else 1
        sign = 1 if oc > 0 else (0 if oc == 0 else -1)
        s2a = (sign + 1) * w
        diff = lengths[r, 0] - lengths[r, 1]
        a_is_i = a[r] == pi[p]
        gp[t] = p
        gw[t] = w
        gs2[t] = s2a if a_is_i else 2 * w - s2a
        dx[t] = diff if a_is_i else -diff
        raw[t] = diff
    for t in range(n):
        dx[t] += 0.0  # -0.0 becomes 0.0: equal differences hash alike
    bits = dx.view(np.uint64)
    hashes = np.empty(n_clusters, np.uint64)
    for c in range(n_clusters):
        lo = start[c]
        for t in range(lo + 1, start[c + 1]):  # insertion sort: clusters hold few games
            p, s, w, x, y = gp[t], gs2[t], gw[t], dx[t], raw[t]
            u = t
            while u > lo and _before(p, s, w, x, gp[u - 1], gs2[u - 1], gw[u - 1], dx[u - 1]):
                gp[u], gs2[u], gw[u], dx[u], raw[u] = gp[u - 1], gs2[u - 1], gw[u - 1], dx[u - 1], raw[u - 1]
                u -= 1
            gp[u], gs2[u], gw[u], dx[u], raw[u] = p, s, w, x, y
        h = np.uint64(start[c + 1] - lo)
        for t in range(lo, start[c + 1]):
            h = _mix(h, np.uint64(gp[t]))
            h = _mix(h, np.uint64(gs2[t]))
            h = _mix(h, np.uint64(gw[t]))
            h = _mix(h, bits[t])
        hashes[c] = h
    rec = np.empty((n, 5))
    for t in range(n):
        rec[t, 0] = gp[t]
        rec[t, 1] = gs2[t]
        rec[t, 2] = gw[t]
        rec[t, 3] = dx[t]
        rec[t, 4] = raw[t]
    return start, rec, hashes


@njit(cache=True)
def _in_content_order(
    ptr: I64, position: I64, rec: F64, n_pairs: int
) -> tuple[I64, I64, I64, I64, F64, float, F64, F64]:  # pragma: no cover - numba
    n = rec.shape[0]
    new_ptr = np.zeros(position.size + 1, np.int64)
    ogp = np.empty(n, np.int64)
    os2 = np.empty(n, np.int64)
    ow = np.empty(n, np.int64)
    odx = np.empty(n)
    oraw = np.empty(n)
    win = np.zeros(n_pairs)
    games = np.zeros(n_pairs)
    u = 0
    for c in range(position.size):
        src = position[c]
        for t in range(ptr[src], ptr[src + 1]):
            p = int(rec[t, 0])
            ogp[u] = p
            os2[u] = int(rec[t, 1])
            ow[u] = int(rec[t, 2])
            odx[u] = rec[t, 3]
            oraw[u] = rec[t, 4]
            win[p] += 0.5 * rec[t, 1]
            games[p] += rec[t, 2]
            u += 1
        new_ptr[c + 1] = u
    total = 0.0
    for t in range(n):
        total += oraw[t]
    mean = total / n if n else 0.0
    ss = 0.0
    for t in range(n):
        ss += (oraw[t] - mean) * (oraw[t] - mean)
    spread = math.sqrt(ss / n) if n else 0.0
    return new_ptr, ogp, os2, ow, odx, spread, win, games


def in_content_order(ptr: I64, position: I64, rec: F64, n_pairs: int) -> tuple[I64, I64, I64, I64, F64, F64, F64]:
    """Clusters laid out in `position` order (position -> cluster), the length feature
    x = tanh(dx / sd(raw)) (sd over the games in that order: the same bits in any row order), and
    pair totals. Returns (ptr, pair, s2, w, x, wins per pair, weighted games per pair)."""
    new_ptr, ogp, os2, ow, odx, spread, win, games = _in_content_order(ptr, position, rec, n_pairs)
    gx = np.tanh(odx / spread) if spread > 0 else np.zeros(odx.size)
    return new_ptr, ogp, os2, ow, gx, win, games


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
def _free_index(m: int, base: int) -> int:  # pragma: no cover - numba
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
        ia = _free_index(ga[g], base)
        ib = _free_index(gb[g], base)
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
            ia = _free_index(pi[gp[g]], base)
            ib = _free_index(pj[gp[g]], base)
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
            ia = _free_index(pi[gp[g]], base)
            ib = _free_index(pj[gp[g]], base)
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
            ia = _free_index(pi[p], base)
            ib = _free_index(pj[p], base)
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
