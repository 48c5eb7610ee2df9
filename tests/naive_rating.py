"""Slow, obviously-correct references for the rating kernels: plain Python loops and numpy.

Nothing here is shared with `arena_engine.rating` except the conventions (SPEC.md section 3):
a strong verdict counts `strong_weight` times, a tie half a win for each side, strengths on the Elo
scale with the baseline at 1000, models whose MLE does not exist get one virtual tied game against
the baseline.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

TO_ELO = 400.0 / math.log(10.0)


def pair_table(a, b, o, *, strong_weight: int = 3) -> dict[tuple[int, int], list[float]]:
    """{(x, y): [wins of x over y (ties half), games]} with x < y, weighted, self-games dropped."""
    table: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for x, y, v in zip(a.tolist(), b.tolist(), o.tolist(), strict=True):
        if x == y:
            continue
        weight = strong_weight if abs(v) == 2 else 1
        score_x = 1.0 if v > 0 else (0.5 if v == 0 else 0.0)
        if x > y:
            x, y, score_x = y, x, 1.0 - score_x
        table[(x, y)][0] += weight * score_x
        table[(x, y)][1] += weight
    return dict(table)


def _strongly_connected_to(base: int, k: int, table: dict[tuple[int, int], list[float]]) -> set[int]:
    beats = {(x, y) for (x, y), (win, n) in table.items() if win > 0} | {
        (y, x) for (x, y), (win, n) in table.items() if n - win > 0
    }

    def closure(edges: set[tuple[int, int]]) -> set[int]:
        seen = {base}
        while True:
            grown = seen | {y for (x, y) in edges if x in seen}
            if grown == seen:
                return seen
            seen = grown

    return closure(beats) & closure({(y, x) for (x, y) in beats})


def bradley_terry(table: dict[tuple[int, int], list[float]], k: int, base: int) -> np.ndarray:
    """BT MLE by Hunter's MM iteration (pi_i <- W_i / sum_j n_ij / (pi_i + pi_j)), Elo scale, base = 1000."""
    table = {key: list(v) for key, v in table.items()}
    inside = _strongly_connected_to(base, k, table)
    for m in range(k):
        if m not in inside:
            key = (min(m, base), max(m, base))
            entry = table.setdefault(key, [0.0, 0.0])
            entry[0] += 0.5
            entry[1] += 1.0
    xs = np.array([x for x, _ in table])
    ys = np.array([y for _, y in table])
    win = np.array([v[0] for v in table.values()])
    n = np.array([v[1] for v in table.values()])
    wins = np.bincount(xs, weights=win, minlength=k) + np.bincount(ys, weights=n - win, minlength=k)
    strength = np.ones(k)
    for _ in range(200_000):
        inv = n / (strength[xs] + strength[ys])
        denom = np.bincount(xs, weights=inv, minlength=k) + np.bincount(ys, weights=inv, minlength=k)
        new = np.where(denom > 0, wins / np.where(denom > 0, denom, 1.0), 1.0)
        new /= new[base]
        done = np.max(np.abs(np.log(new) - np.log(strength))) < 1e-14
        strength = new
        if done:
            break
    return 1000.0 + TO_ELO * np.log(strength)


def star_winrates(a, b, o, *, base: int, k: int, strong_weight: int = 3) -> np.ndarray:
    """Win rate of each candidate against the baseline: (W + T/2) / N over weighted games."""
    table = pair_table(a, b, o, strong_weight=strong_weight)
    out = np.full(k, 0.5)
    for (x, y), (win, n) in table.items():
        assert base in (x, y), "not a star design"
        cand_win = win if y == base else n - win
        out[x if y == base else y] = cand_win / n
    return out


def elo(order_a, order_b, score_a, k: int, base: int, k_factor: float = 4.0) -> np.ndarray:
    """Online Elo over games in the given order; score_a is 1, 0.5 or 0."""
    r = [1000.0] * k
    for x, y, s in zip(order_a, order_b, score_a, strict=True):
        e = 1.0 / (1.0 + 10.0 ** ((r[y] - r[x]) / 400.0))
        r[x] += k_factor * (s - e)
        r[y] -= k_factor * (s - e)
    shift = 1000.0 - r[base]
    return np.array([v + shift for v in r])


def sandwich_se(a, b, o, q, ratings: np.ndarray, *, base: int, strong_weight: int = 3) -> np.ndarray:
    """Cluster-robust standard errors of the Elo-scale ratings, dense numpy: H^-1 B H^-1, B scaled G/(G-1)."""
    k = ratings.size
    beta = (ratings - 1000.0) / TO_ELO
    clusters = {c: idx for idx, c in enumerate(sorted(set(q.tolist())))}
    score = np.zeros((len(clusters), k))
    info = np.zeros((k, k))
    for x, y, v, c in zip(a.tolist(), b.tolist(), o.tolist(), q.tolist(), strict=True):
        if x == y:
            continue
        weight = strong_weight if abs(v) == 2 else 1
        s = 1.0 if v > 0 else (0.5 if v == 0 else 0.0)
        p = 1.0 / (1.0 + math.exp(-(beta[x] - beta[y])))
        score[clusters[c], x] += weight * (s - p)
        score[clusters[c], y] -= weight * (s - p)
        h = weight * p * (1 - p)
        info[x, x] += h
        info[y, y] += h
        info[x, y] -= h
        info[y, x] -= h
    free = np.arange(k) != base
    g = len(clusters)
    meat = score[:, free].T @ score[:, free] * g / (g - 1)
    hinv = np.linalg.inv(info[np.ix_(free, free)])
    se = np.zeros(k)
    se[free] = np.sqrt(np.diag(hinv @ meat @ hinv))
    return se * TO_ELO


def cluster_bootstrap(a, b, o, q, *, k: int, base: int, rounds: int, seed: int, strong_weight: int = 3) -> np.ndarray:
    """Ratings (rounds x k) from BT fits on queries drawn with replacement."""
    rng = np.random.default_rng(seed)
    ids = np.unique(q)
    rows_of = {c: np.flatnonzero(q == c) for c in ids.tolist()}
    out = np.empty((rounds, k))
    for r in range(rounds):
        pick = rng.choice(ids, size=ids.size, replace=True)
        rows = np.concatenate([rows_of[c] for c in pick.tolist()])
        out[r] = bradley_terry(pair_table(a[rows], b[rows], o[rows], strong_weight=strong_weight), k, base)
    return out


def length_controlled(a, b, o, lengths, *, k: int, base: int, strong_weight: int = 3, ridge: float = 1e-3):
    """Length-controlled BT by IRLS on a dense design matrix: logit P(A wins) = b_A - b_B + phi x,
    x = tanh((len_A - len_B) / sd); ties as half wins; ridge * phi^2 / 2 penalty. Returns (Elo, phi)."""
    keep = a != b
    a, b, o, lengths = a[keep], b[keep], o[keep], lengths[keep]
    diff = lengths[:, 0] - lengths[:, 1]
    x = np.tanh(diff / diff.std()) if diff.std() > 0 else np.zeros(diff.size)
    weight = np.where(np.abs(o) == 2, strong_weight, 1).astype(float)
    score = np.where(o > 0, 1.0, np.where(o == 0, 0.5, 0.0))
    design = np.zeros((a.size, k + 1))
    design[np.arange(a.size), a] += 1.0
    design[np.arange(a.size), b] -= 1.0
    design[:, k] = x
    free = [c for c in range(k + 1) if c != base]
    design = design[:, free]
    theta = np.zeros(len(free))
    penalty = np.zeros(len(free))
    penalty[-1] = ridge
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        grad = design.T @ (weight * (score - p)) - penalty * theta
        hess = design.T @ (design * (weight * p * (1 - p))[:, None]) + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        theta += step
        if np.max(np.abs(step)) < 1e-13:
            break
    strengths = np.zeros(k)
    strengths[[m for m in range(k) if m != base]] = theta[:-1]
    return 1000.0 + TO_ELO * strengths, theta[-1]


def wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson's score interval by bisection on |p - x| = z sqrt(x (1 - x) / n), one side at a time."""

    def outside(x: float) -> bool:
        return (p - x) ** 2 > z * z * x * (1 - x) / n

    def edge(lo: float, hi: float) -> float:  # lo inside, hi outside (or the other way round)
        inside_lo = not outside(lo)
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if (not outside(mid)) == inside_lo:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    lower = 0.0 if not outside(0.0) else edge(p, 0.0)
    upper = 1.0 if not outside(1.0) else edge(p, 1.0)
    return lower, upper


def queries_per_model(a, b, q, k: int) -> np.ndarray:
    """Distinct queries in which each model plays a game against another model."""
    seen: list[set[int]] = [set() for _ in range(k)]
    for x, y, c in zip(a.tolist(), b.tolist(), q.tolist(), strict=True):
        if x != y:
            seen[x].add(c)
            seen[y].add(c)
    return np.array([len(s) for s in seen])


def splitmix_hash(rows: list[list[int]]) -> int:
    """The content hash of one cluster (its rows in order), in plain Python integers."""
    mask = (1 << 64) - 1

    def mix(h: int, v: int) -> int:
        z = ((h ^ (v & mask)) + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    h = len(rows)
    for row in rows:
        for v in row:
            h = mix(h, v)
    return h
