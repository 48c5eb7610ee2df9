"""Bradley-Terry maximum likelihood over pair totals (numba kernels).

Strengths are natural-log odds with the baseline fixed at 0; a tie counts half a win for each side.
The MLE exists only when every model is strongly connected to the baseline in the "has beaten" graph
(Zermelo's condition). Models outside that component (only wins, only losses, no games, or a separate
group) get one virtual tied game against the baseline, which keeps every estimate finite; the caller
flags them. Pair totals are `win` (wins of i, ties as half) and `n` (games) per pair (i, j).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from arena_engine.rating._random import below, new_state

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B1 = npt.NDArray[np.bool_]

NEWTON_TOL = 1e-12  # largest step (natural-log units) at which Newton stops
CHORD_TOL = 1e-8  # bootstrap rounds only: 4e-6 Elo points, far below any percentile's noise
MAX_NEWTON = 100
MAX_CHORD = 60


@njit(cache=True, inline="always")
def _reach(
    pi: I64, pj: I64, win: F64, n: F64, k: int, base: int, forward: bool
) -> B1:  # pragma: no cover - numba
    """Models reachable from the baseline along 'x has beaten y' edges (or against them)."""
    deg = np.zeros(k + 1, np.int64)
    for p in range(pi.size):
        i_beats = win[p] > 0.0
        j_beats = n[p] - win[p] > 0.0
        if (i_beats if forward else j_beats):
            deg[pi[p] + 1] += 1
        if (j_beats if forward else i_beats):
            deg[pj[p] + 1] += 1
    for m in range(k):
        deg[m + 1] += deg[m]
    adj = np.empty(deg[k], np.int64)
    fill = deg[:-1].copy()
    for p in range(pi.size):
        i_beats = win[p] > 0.0
        j_beats = n[p] - win[p] > 0.0
        if (i_beats if forward else j_beats):
            adj[fill[pi[p]]] = pj[p]
            fill[pi[p]] += 1
        if (j_beats if forward else i_beats):
            adj[fill[pj[p]]] = pi[p]
            fill[pj[p]] += 1
    seen = np.zeros(k, np.bool_)
    stack = np.empty(k, np.int64)
    seen[base] = True
    stack[0] = base
    top = 1
    while top > 0:
        top -= 1
        x = stack[top]
        for e in range(deg[x], deg[x + 1]):
            y = adj[e]
            if not seen[y]:
                seen[y] = True
                stack[top] = y
                top += 1
    return seen


@njit(cache=True, inline="always")
def _two_way_connected(pi: I64, pj: I64, win: F64, n: F64, k: int) -> bool:  # pragma: no cover - numba
    """Cheap sufficient test: pairs where each side has won (part of) a game connect everyone.
    Such edges go both ways, so connectivity over them implies strong connectivity (union-find)."""
    parent = np.arange(k)
    groups = k
    for p in range(pi.size):
        if win[p] > 0.0 and n[p] - win[p] > 0.0:
            x = pi[p]
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            y = pj[p]
            while parent[y] != y:
                parent[y] = parent[parent[y]]
                y = parent[y]
            if x != y:
                parent[x] = y
                groups -= 1
                if groups == 1:
                    return True
    return groups == 1


@njit(cache=True)
def outside_component(pi: I64, pj: I64, win: F64, n: F64, k: int, base: int) -> B1:  # pragma: no cover
    """Models whose MLE does not exist: not strongly connected to the baseline."""
    if _two_way_connected(pi, pj, win, n, k):
        return np.zeros(k, np.bool_)
    fwd = _reach(pi, pj, win, n, k, base, True)
    bwd = _reach(pi, pj, win, n, k, base, False)
    out = np.empty(k, np.bool_)
    for m in range(k):
        out[m] = not (fwd[m] and bwd[m])
    return out


@njit(cache=True, inline="always")
def with_virtual_ties(
    pi: I64, pj: I64, win: F64, n: F64, outside: B1, base: int
) -> tuple[I64, I64, F64, F64]:  # pragma: no cover - numba
    """Append one tied game against the baseline for every model outside the baseline's component."""
    extra = 0
    for m in range(outside.size):
        if outside[m]:
            extra += 1
    size = pi.size + extra
    qi = np.empty(size, np.int64)
    qj = np.empty(size, np.int64)
    qw = np.empty(size, np.float64)
    qn = np.empty(size, np.float64)
    for p in range(pi.size):
        qi[p] = pi[p]
        qj[p] = pj[p]
        qw[p] = win[p]
        qn[p] = n[p]
    pos = pi.size
    for m in range(outside.size):
        if outside[m]:
            qi[pos] = min(m, base)
            qj[pos] = max(m, base)
            qw[pos] = 0.5
            qn[pos] = 1.0
            pos += 1
    return qi, qj, qw, qn


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
