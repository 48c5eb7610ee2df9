"""Rating pipeline: aggregate battles, fit, resample, summarise (numpy first version)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from arena_engine.rating.results import ELO_BASE, ELO_SCALE

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
TO_ELO = ELO_SCALE / math.log(10.0)


@dataclass(frozen=True)
class Fit:
    rating: F64
    lower: F64
    upper: F64
    n_battles: I64
    flags: list[tuple[str, ...]]


@dataclass(frozen=True)
class Games:
    """Battles in canonical form: i < j, i's score doubled and weighted, sorted by cluster."""

    i: I64
    j: I64
    s2: I64  # 2 * (weighted wins of i, ties as half)
    w: I64  # weight of the game (strong verdicts count strong_weight times)
    cluster: I64  # dense cluster code 0..n_clusters-1, ordered like the query ids
    n_clusters: int


def canonical_games(a: I64, b: I64, o: I64, q: I64, strong_weight: int) -> Games:
    keep = a != b
    a, b, o, q = a[keep], b[keep], o[keep], q[keep]
    i = np.minimum(a, b)
    j = np.maximum(a, b)
    w = np.where(np.abs(o) == 2, strong_weight, 1).astype(np.int64)
    s2a = (np.sign(o) + 1) * w
    s2 = np.where(a == i, s2a, 2 * w - s2a).astype(np.int64)
    uq, cluster = np.unique(q, return_inverse=True)
    return Games(i=i, j=j, s2=s2, w=w, cluster=cluster.astype(np.int64), n_clusters=int(uq.size))


def pair_totals(g: Games, k: int, cluster_weight: F64 | None = None) -> tuple[I64, I64, F64, F64]:
    """Sum (2 * wins of i, games) per pair (i < j), optionally weighting each cluster."""
    key = g.i * k + g.j
    s2 = g.s2.astype(np.float64)
    w = g.w.astype(np.float64)
    if cluster_weight is not None:
        cw = cluster_weight[g.cluster]
        s2 = s2 * cw
        w = w * cw
    pairs, inv = np.unique(key, return_inverse=True)
    s2p = np.bincount(inv, weights=s2, minlength=pairs.size)
    wp = np.bincount(inv, weights=w, minlength=pairs.size)
    return pairs // k, pairs % k, s2p, wp


def outside_baseline_component(pi: I64, pj: I64, s2: F64, n: F64, k: int, base: int) -> npt.NDArray[np.bool_]:
    """Models not strongly connected to the baseline in the 'has beaten' graph (their MLE does not exist)."""
    win_i = s2 > 0  # i has (part of) a win over j
    win_j = s2 < 2 * n  # j has (part of) a win over i

    def reach(forward: bool) -> npt.NDArray[np.bool_]:
        seen = np.zeros(k, dtype=bool)
        seen[base] = True
        changed = True
        while changed:
            changed = False
            for x, y, e_xy, e_yx in ((pi, pj, win_i, win_j), (pj, pi, win_j, win_i)):
                edge = e_xy if forward else e_yx
                new = edge & seen[x] & ~seen[y]
                if new.any():
                    seen[y[new]] = True
                    changed = True
        return seen

    return ~(reach(True) & reach(False))


def bt_fit(pi: I64, pj: I64, s2: F64, n: F64, k: int, base: int) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Bradley-Terry MLE (natural-log strengths, baseline = 0), ties as half wins.

    Models whose MLE does not exist get one virtual tied game against the baseline.
    """
    virtual = outside_baseline_component(pi, pj, s2, n, k, base)
    if virtual.any():
        extra = np.flatnonzero(virtual)
        vi = np.minimum(extra, base)
        vj = np.maximum(extra, base)
        pi = np.concatenate([pi, vi])
        pj = np.concatenate([pj, vj])
        s2 = np.concatenate([s2, np.ones(extra.size)])
        n = np.concatenate([n, np.ones(extra.size)])
    win = s2 / 2.0
    free = np.arange(k) != base
    beta = np.zeros(k)

    def loglik(beta: F64) -> float:
        d = beta[pi] - beta[pj]
        return float(np.sum(-win * np.logaddexp(0.0, -d) - (n - win) * np.logaddexp(0.0, d)))

    ll = loglik(beta)
    for _ in range(200):
        d = beta[pi] - beta[pj]
        p = 1.0 / (1.0 + np.exp(-d))
        r = win - n * p
        grad = np.bincount(pi, weights=r, minlength=k) - np.bincount(pj, weights=r, minlength=k)
        h = n * p * (1.0 - p)
        hess = np.zeros((k, k))
        np.add.at(hess, (pi, pi), h)
        np.add.at(hess, (pj, pj), h)
        np.add.at(hess, (pi, pj), -h)
        np.add.at(hess, (pj, pi), -h)
        step = np.zeros(k)
        step[free] = np.linalg.solve(hess[np.ix_(free, free)], grad[free])
        t = 1.0
        while True:
            cand = beta + t * step
            ll_new = loglik(cand)
            if ll_new >= ll - 1e-12 * abs(ll) or t < 1e-6:
                break
            t *= 0.5
        beta, ll = cand, ll_new
        if np.max(np.abs(t * step)) < 1e-13:
            break
    return beta, virtual


def _flags(g: Games, k: int, base: int) -> list[tuple[str, ...]]:
    pi, pj, s2, n = pair_totals(g, k)
    wins = np.bincount(pi, weights=s2, minlength=k) + np.bincount(pj, weights=2 * n - s2, minlength=k)
    games = np.bincount(pi, weights=n, minlength=k) + np.bincount(pj, weights=n, minlength=k)
    # undirected component of the baseline
    seen = np.zeros(k, dtype=bool)
    seen[base] = True
    changed = True
    while changed:
        before = int(seen.sum())
        seen[pj[seen[pi]]] = True
        seen[pi[seen[pj]]] = True
        changed = int(seen.sum()) != before
    outside = outside_baseline_component(pi, pj, s2, n, k, base)
    flags: list[tuple[str, ...]] = []
    for m in range(k):
        f: list[str] = []
        if m != base:
            if games[m] == 0:
                f.append("no_battles")
            elif not seen[m]:
                f.append("disconnected")
            elif wins[m] == 2 * games[m]:
                f.append("only_wins")
            elif wins[m] == 0:
                f.append("only_losses")
            elif outside[m]:
                f.append("separated")
        flags.append(tuple(f))
    return flags


def _quantiles(samples: F64, ci: float) -> tuple[F64, F64]:
    lo = (1.0 - ci) / 2.0
    q = np.quantile(samples, [lo, 1.0 - lo], axis=0)
    return q[0], q[1]


def _elo_run(i: I64, j: I64, s2: I64, w: I64, order: I64, k: int, base: int, k_factor: float) -> F64:
    r = np.full(k, ELO_BASE)
    for idx in order:
        a, b = i[idx], j[idx]
        sa = s2[idx] / (2.0 * w[idx])
        for _ in range(w[idx]):
            ea = 1.0 / (1.0 + 10.0 ** ((r[b] - r[a]) / ELO_SCALE))
            r[a] += k_factor * (sa - ea)
            r[b] -= k_factor * (sa - ea)
    return r - r[base] + ELO_BASE


def rate(
    a: I64,
    b: I64,
    o: I64,
    q: I64,
    *,
    k: int,
    base: int,
    rounds: int,
    seed: int,
    ci: float,
    strong_weight: int,
    method: str,
    interval: str,
    lengths: F64 | None,
    elo_k: float,
) -> Fit:
    keep = a != b
    n_battles = np.bincount(a[keep], minlength=k) + np.bincount(b[keep], minlength=k)
    g = canonical_games(a, b, o, q, strong_weight)
    flags = _flags(g, k, base)
    rng = np.random.default_rng(seed)
    if method == "elo":
        order_key = np.lexsort((g.w, g.s2, g.j, g.i, g.cluster))
        point = _elo_run(g.i, g.j, g.s2, g.w, order_key[rng.permutation(order_key.size)], k, base, elo_k)
        samples = np.empty((rounds, k))
        for r in range(rounds):
            counts = rng.multinomial(g.n_clusters, np.full(g.n_clusters, 1.0 / g.n_clusters))
            rows = order_key[np.repeat(np.arange(order_key.size), counts[g.cluster[order_key]])]
            samples[r] = _elo_run(g.i, g.j, g.s2, g.w, rows[rng.permutation(rows.size)], k, base, elo_k)
        lower, upper = _quantiles(samples, ci) if rounds else (point.copy(), point.copy())
        return Fit(point, lower, upper, n_battles, flags)

    pi, pj, s2, n = pair_totals(g, k)
    beta, _ = bt_fit(pi, pj, s2, n, k, base)
    point = ELO_BASE + TO_ELO * beta
    if interval == "sandwich":
        se = _sandwich_se(g, k, base, beta)
        z = NormalDist().inv_cdf(0.5 + ci / 2.0)
        return Fit(point, point - z * TO_ELO * se, point + z * TO_ELO * se, n_battles, flags)
    if rounds == 0:
        return Fit(point, point.copy(), point.copy(), n_battles, flags)
    samples = np.empty((rounds, k))
    if method == "evalscope":
        # resample game rows, each strong copy on its own (EvalScope / Arena-Hard)
        cell_pi = np.concatenate([pi, pi, pi])
        cell_pj = np.concatenate([pj, pj, pj])
        # cells: i wins, tie, j wins; counts of weighted rows
        wins_i, ties, wins_j = _row_cells(g, k, pi, pj)
        counts = np.concatenate([wins_i, ties, wins_j])
        score2 = np.concatenate([np.full(pi.size, 2.0), np.ones(pi.size), np.zeros(pi.size)])
        total = int(counts.sum())
        for r in range(rounds):
            c = rng.multinomial(total, counts / total).astype(np.float64)
            keyp = cell_pi * k + cell_pj
            up, inv = np.unique(keyp, return_inverse=True)
            s2r = np.bincount(inv, weights=c * score2, minlength=up.size)
            nr = np.bincount(inv, weights=c, minlength=up.size)
            used = nr > 0
            br, _ = bt_fit(up[used] // k, up[used] % k, s2r[used], nr[used], k, base)
            samples[r] = ELO_BASE + TO_ELO * br
    else:
        for r in range(rounds):
            cw = rng.multinomial(g.n_clusters, np.full(g.n_clusters, 1.0 / g.n_clusters)).astype(np.float64)
            pir, pjr, s2r, nr = pair_totals(g, k, cw)
            used = nr > 0
            br, _ = bt_fit(pir[used], pjr[used], s2r[used], nr[used], k, base)
            samples[r] = ELO_BASE + TO_ELO * br
    lower, upper = _quantiles(samples, ci)
    return Fit(point, lower, upper, n_battles, flags)


def _row_cells(g: Games, k: int, pi: I64, pj: I64) -> tuple[F64, F64, F64]:
    key = g.i * k + g.j
    pos = np.searchsorted(pi * k + pj, key)
    win_i = np.where(g.s2 == 2 * g.w, g.w, 0)
    tie = np.where(g.s2 == g.w, g.w, 0)
    win_j = np.where(g.s2 == 0, g.w, 0)
    m = pi.size
    return (
        np.bincount(pos, weights=win_i, minlength=m),
        np.bincount(pos, weights=tie, minlength=m),
        np.bincount(pos, weights=win_j, minlength=m),
    )


def _sandwich_se(g: Games, k: int, base: int, beta: F64) -> F64:
    """Cluster-robust standard errors of the BT strengths (natural log), clusters = queries."""
    pi, pj, s2, n = pair_totals(g, k)
    d = beta[pi] - beta[pj]
    p = 1.0 / (1.0 + np.exp(-d))
    h = n * p * (1.0 - p)
    hess = np.zeros((k, k))
    np.add.at(hess, (pi, pi), h)
    np.add.at(hess, (pj, pj), h)
    np.add.at(hess, (pi, pj), -h)
    np.add.at(hess, (pj, pi), -h)
    pg = 1.0 / (1.0 + np.exp(-(beta[g.i] - beta[g.j])))
    r = g.s2 / 2.0 - g.w * pg
    score = np.zeros((g.n_clusters, k))
    np.add.at(score, (g.cluster, g.i), r)
    np.add.at(score, (g.cluster, g.j), -r)
    free = np.arange(k) != base
    meat = score[:, free].T @ score[:, free]
    nc = g.n_clusters
    if nc > 1:
        meat *= nc / (nc - 1)
    hf = hess[np.ix_(free, free)]
    hinv = np.linalg.pinv(hf)
    cov = hinv @ meat @ hinv
    se = np.zeros(k)
    se[free] = np.sqrt(np.maximum(np.diag(cov), 0.0))
    return se
