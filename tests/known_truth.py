"""Battles of known truth, for measuring whether nominal 95% intervals cover (tests and benchmarks).

Model: for a game of A against B on query q, a latent u = theta_A + e_qA - theta_B - e_qB + bias_A +
gamma * tanh((len_A - len_B) / 300) + logistic noise, cut into 5 verdicts (A>>B, A>B, tie, B>A, B>>A);
e_qm ~ N(0, EFFECT) is a per-(query, model) random effect, so the games of one query are correlated;
bias_A = +BIAS favours whichever answer is shown first. Every pair that meets on a query plays two
games, one in each order. Strong verdicts weigh 3 (the rating default).

The truth a rating should cover is what it estimates on infinitely many queries: for plain BT the BT
fit to the expected pair totals (per query, by Gauss-Hermite over the random effects; for a star
design this is E[W + T/2] / E[N] per candidate); for length control, the length-controlled fit on a
very large sample (`truth_by_fit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from arena_engine.rating import rate_battles

CUTS = (2.0, 0.5, -0.5, -2.0)
BIAS = 0.4
EFFECT = 0.7
STRONG = 3


@dataclass(frozen=True)
class Scenario:
    name: str
    theta: tuple[float, ...]  # model 0 is the baseline
    queries: int
    all_pairs: bool = False
    length_effect: float | None = None  # None: no lengths; else gamma (0.0: lengths given, no effect)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        k = len(self.theta)
        if self.all_pairs:
            return [(i, j) for i in range(k) for j in range(i + 1, k)]
        return [(0, m) for m in range(1, k)]


def _verdict_probs(mu: np.ndarray) -> list[np.ndarray]:
    up = [1.0 / (1.0 + np.exp(-(mu - c))) for c in CUTS]
    return [up[0], up[1] - up[0], up[2] - up[1], up[3] - up[2], 1.0 - up[3]]


def expected_pair(delta: float) -> tuple[float, float]:
    """E[weighted wins of i (ties half)], E[weighted games] per query for a pair with theta_i - theta_j =
    delta: both orders, integrated over the random-effect difference ~ N(0, sqrt(2) EFFECT)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    weights = weights / weights.sum()
    d = delta + math.sqrt(2.0) * EFFECT * nodes
    win = games = 0.0
    for bias in (BIAS, -BIAS):
        p = _verdict_probs(d + bias)
        win += float(np.sum(weights * (STRONG * p[0] + p[1] + 0.5 * p[2])))
        games += float(np.sum(weights * (STRONG * (p[0] + p[4]) + p[1] + p[2] + p[3])))
    return win, games


def true_winrates(sc: Scenario) -> np.ndarray:
    """Win rate against the baseline of each non-baseline model, as BT on infinitely many queries."""
    k = len(sc.theta)
    pairs = sc.pairs
    tot = [expected_pair(sc.theta[i] - sc.theta[j]) for i, j in pairs]
    beta = np.zeros(k)
    for _ in range(100):  # Newton on the expected totals, baseline fixed at 0
        grad = np.zeros(k)
        hess = np.zeros((k, k))
        for (i, j), (win, n) in zip(pairs, tot, strict=True):
            p = 1.0 / (1.0 + math.exp(beta[j] - beta[i]))
            grad[i] += win - n * p
            grad[j] -= win - n * p
            h = n * p * (1 - p)
            hess[i, i] += h
            hess[j, j] += h
            hess[i, j] -= h
            hess[j, i] -= h
        step = np.linalg.solve(hess[1:, 1:], grad[1:])
        beta[1:] += step
        if np.max(np.abs(step)) < 1e-13:
            break
    return 1.0 / (1.0 + np.exp(-beta[1:]))


def theta_for_winrates(targets: list[float]) -> tuple[float, ...]:
    """Strengths whose star-design true win rates against a baseline of strength 0 are `targets`."""
    out = [0.0]
    for t in targets:
        lo, hi = -12.0, 12.0
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            win, n = expected_pair(mid)
            lo, hi = (mid, hi) if win / n < t else (lo, mid)
        out.append(0.5 * (lo + hi))
    return tuple(out)


def simulate(sc: Scenario, rng: np.random.Generator, queries: int | None = None):
    """(model_a, model_b, outcome, query[, lengths]) for one replication."""
    nq = sc.queries if queries is None else queries
    k = len(sc.theta)
    theta = np.asarray(sc.theta)
    pairs = np.array(sc.pairs)
    first = np.concatenate([pairs[:, 0], pairs[:, 1]])  # order 1: i shown first; order 2: j first
    second = np.concatenate([pairs[:, 1], pairs[:, 0]])
    effect = rng.normal(0.0, EFFECT, (nq, k))
    mu = theta[first] - theta[second] + effect[:, first] - effect[:, second] + BIAS
    lengths = None
    if sc.length_effect is not None:
        verbosity = 1.0 + 0.25 * np.arange(k)  # longer answers for the later models
        length = np.exp(rng.normal(np.log(400.0 * verbosity), 0.35, (nq, k)))
        diff = length[:, first] - length[:, second]
        mu = mu + sc.length_effect * np.tanh(diff / 300.0)
        lengths = np.stack([length[:, first].ravel(), length[:, second].ravel()], axis=1)
    u = mu + rng.logistic(size=mu.shape)
    v = np.select([u > CUTS[0], u > CUTS[1], u > CUTS[2], u > CUTS[3]], [2, 1, 0, -1], -2).astype(np.int8)
    shape = u.shape
    a = np.broadcast_to(first, shape).ravel()
    b = np.broadcast_to(second, shape).ravel()
    q = np.repeat(np.arange(nq), shape[1])
    data = (a.copy(), b.copy(), v.ravel(), q)
    return data if lengths is None else (*data, lengths)


def truth_by_fit(sc: Scenario, queries: int, seed: int = 12345) -> np.ndarray:
    """Length-controlled truth: the length-controlled fit on `queries` simulated queries."""
    a, b, o, q, lens = simulate(sc, np.random.default_rng(seed), queries)
    k = len(sc.theta)
    r = rate_battles(a, b, o, q, models=[f"m{m}" for m in range(k)], baseline="m0", lengths=lens,
                     interval="bootstrap", rounds=0)
    return np.array([m.winrate for m in r.per_model[1:]])


STAR_THETA = (0.0, -1.2, -0.4, 0.3, 1.0, 1.8)

SCENARIOS = (
    Scenario("star, 250 queries", STAR_THETA, 250),
    Scenario("star, 30 queries", STAR_THETA, 30),
    Scenario("star, true win rates 1.5-4%, 40 queries", theta_for_winrates([0.015, 0.02, 0.025, 0.03, 0.04]), 40),
    Scenario("star, true win rates 95-99%, 40 queries", theta_for_winrates([0.95, 0.96, 0.97, 0.98, 0.99]), 40),
    Scenario("all pairs K6, 150 queries", STAR_THETA, 150, all_pairs=True),
    Scenario("all pairs K6, 30 queries", STAR_THETA, 30, all_pairs=True),
    Scenario("length-controlled, length effect, 100 queries", (0.0, -0.5, 0.0, 0.5), 100, length_effect=1.0),
    Scenario("length-controlled, no length effect, 100 queries", (0.0, -0.5, 0.0, 0.5), 100, length_effect=0.0),
)


@dataclass(frozen=True)
class Cell:
    hits: int
    above: int
    below: int
    total: int
    width: float  # median width in pp

    @property
    def coverage(self) -> float:
        return self.hits / self.total

    @property
    def se(self) -> float:
        c = self.coverage
        return float(np.sqrt(c * (1 - c) / self.total))

    def text(self) -> str:
        return f"{100 * self.coverage:5.1f} ± {100 * self.se:.1f}"


def truth_of(sc: Scenario, lc_queries: int) -> np.ndarray:
    return truth_by_fit(sc, lc_queries) if sc.length_effect is not None else true_winrates(sc)


def coverage(sc: Scenario, truth: np.ndarray, interval: str, reps: int, rounds: int, seed: int = 1) -> Cell | None:
    """Coverage of one interval kind over `reps` replications (None where it does not apply)."""
    if interval == "elo-online" and sc.length_effect is not None:
        return None
    if interval == "bootstrap-refit" and sc.length_effect is None:
        return None  # the exact-refit reference of the one-step length-controlled bootstrap
    k = len(sc.theta)
    models = [f"m{m}" for m in range(k)]
    method = "elo-online" if interval == "elo-online" else "bt"
    kind = "bootstrap" if interval == "elo-online" else interval
    rng = np.random.default_rng(seed)
    hits = above = below = total = 0
    widths = []
    for rep in range(reps):
        data = simulate(sc, rng)
        lengths = data[4] if len(data) == 5 else None
        if interval == "bootstrap-refit":
            lo, hi = _refit_bounds(data, k, rounds, rep)
        else:
            r = rate_battles(*data[:4], models=models, baseline="m0", method=method, interval=kind, rounds=rounds,
                             seed=rep, lengths=lengths)
            lo = np.array([m.winrate_lower for m in r.per_model[1:]])
            hi = np.array([m.winrate_upper for m in r.per_model[1:]])
        hits += int(np.sum((lo <= truth) & (truth <= hi)))
        above += int(np.sum(truth > hi))
        below += int(np.sum(truth < lo))
        total += truth.size
        widths.extend((hi - lo).tolist())
    return Cell(hits, above, below, total, 100 * float(np.median(widths)))


def _refit_bounds(data: tuple, k: int, rounds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Win-rate bounds of the length-controlled percentile bootstrap with an exact refit per round
    (the same clusters drawn per round as rate_battles' one-step bootstrap with this seed)."""
    from arena_engine.rating._aggregate import aggregate
    from arena_engine.rating._length import rate_length_controlled_refit
    from arena_engine.rating._pipeline import _STREAM_BOOTSTRAP, _seeds

    a, b, o, q, lengths = data
    battles = aggregate(np.asarray(a), np.asarray(b), np.asarray(o, np.int8), np.asarray(q), k=k, base=0,
                        strong_weight=3, row_codes=True)
    _, samples = rate_length_controlled_refit(
        np.asarray(a), np.asarray(o, np.int8), battles, np.asarray(lengths, np.float64), strong_weight=3,
        rounds=rounds, seeds=_seeds(seed, _STREAM_BOOTSTRAP, rounds),
    )
    lo, hi = np.quantile(samples[:, 1:], [0.025, 0.975], axis=0)
    return 1.0 / (1.0 + np.exp(-lo)), 1.0 / (1.0 + np.exp(-hi))
