"""Seeded simulation: do nominal 95% intervals cover the true win rate about 95% of the time?

Queries differ in difficulty (shared by both games and every copy of a strong verdict) and the judge
favours position A, so the games of one query are correlated: resampling queries should cover the
truth about 95% of the time, resampling game rows (EvalScope) much less.
"""

from __future__ import annotations

import numpy as np
import pytest

from arena_engine.rating import rate_battles
from tests.known_truth import SCENARIOS, coverage, truth_of

CUTS = (2.0, 0.5, -0.5, -2.0)  # latent thresholds for A>>B, A>B, A=B, B>A (else B>>A)
BIAS = 0.5  # position-A bias on the logit scale
SPREAD = 1.0  # sd of per-query difficulty
QUALITY = np.array([0.0, -1.2, -0.4, 0.3, 1.0, 1.8])  # model 0 is the baseline
QUERIES = 100
REPS = 160


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def true_winrate(theta: float, strong_weight: int = 3) -> float:
    """E[weighted wins + ties/2] / E[weighted games] over queries and both orders (Gauss-Hermite)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()
    num = den = 0.0
    for bias in (BIAS, -BIAS):
        mu = theta + SPREAD * nodes + bias
        up = [_sigmoid(mu - c) for c in CUTS]  # P(latent > cut)
        p = [up[0], up[1] - up[0], up[2] - up[1], up[3] - up[2], 1 - up[3]]  # >>, >, =, <, <<
        num += np.sum(weights * (strong_weight * p[0] + p[1] + 0.5 * p[2]))
        den += np.sum(weights * (strong_weight * (p[0] + p[4]) + p[1] + p[2] + p[3]))
    return float(num / den)


def simulate(rng: np.random.Generator):
    k = QUALITY.size
    cand = np.repeat(np.arange(1, k), 2)  # each candidate: once as A, once as B
    cand_is_a = np.tile([True, False], k - 1)
    difficulty = rng.normal(0, SPREAD, QUERIES)
    mu = QUALITY[cand][None, :] + difficulty[:, None] + np.where(cand_is_a, BIAS, -BIAS)[None, :]
    u = mu + rng.logistic(size=mu.shape)
    v = np.select([u > CUTS[0], u > CUTS[1], u > CUTS[2], u > CUTS[3]], [2, 1, 0, -1], -2)
    a = np.where(cand_is_a, cand, 0)
    b = np.where(cand_is_a, 0, cand)
    shape = u.shape
    return (
        np.broadcast_to(a, shape).ravel(),
        np.broadcast_to(b, shape).ravel(),
        np.where(cand_is_a[None, :], v, -v).astype(np.int8).ravel(),
        np.repeat(np.arange(QUERIES), shape[1]),
    )


def test_cluster_intervals_cover_the_truth_evalscope_rows_do_not():
    truth = np.array([true_winrate(t) for t in QUALITY[1:]])
    models = [f"m{m}" for m in range(QUALITY.size)]
    rng = np.random.default_rng(2024)
    hits = {"bootstrap": 0, "sandwich": 0, "evalscope": 0}
    for rep in range(REPS):
        data = simulate(rng)
        runs = {
            "bootstrap": rate_battles(*data, models=models, baseline="m0", rounds=1000, seed=rep, interval="bootstrap"),
            "sandwich": rate_battles(*data, models=models, baseline="m0", interval="sandwich"),
            "evalscope": rate_battles(*data, models=models, baseline="m0", rounds=1000, seed=rep, method="evalscope"),
        }
        for name, r in runs.items():
            lo = np.array([m.winrate_lower for m in r.per_model[1:]])
            hi = np.array([m.winrate_upper for m in r.per_model[1:]])
            hits[name] += int(np.sum((lo <= truth) & (truth <= hi)))
    total = REPS * truth.size
    coverage = {name: h / total for name, h in hits.items()}
    print(f"\ncoverage of nominal 95% intervals over {total} intervals: {coverage}")
    assert 0.90 <= coverage["bootstrap"] <= 0.98
    assert 0.90 <= coverage["sandwich"] <= 0.98
    assert coverage["evalscope"] < 0.88


# ---------------------------------------------------------------- issue 19: every row of the table
# benchmarks/bench_coverage.py prints the full table (400+ replications per row); here fewer
# replications (SE about 1.1 pp on 400 intervals) keep the suite inside a minute, so the band is the
# bar [93%, 97%] widened by two SE.

COVERAGE_REPS = 80


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[sc.name for sc in SCENARIOS])
def test_default_interval_covers_in_every_scenario(scenario):
    truth = truth_of(scenario, lc_queries=50_000)
    cell = coverage(scenario, truth, "score", COVERAGE_REPS, rounds=0)
    assert cell is not None
    print(f"\n{scenario.name}: {cell.text()} (misses above/below {cell.above}/{cell.below})")
    assert 0.905 <= cell.coverage <= 0.99, cell


@pytest.mark.slow
def test_percentile_bootstrap_misses_at_the_boundary_the_default_does_not():
    """The row that the default interval was built for: the old default covers far less there."""
    sc = next(s for s in SCENARIOS if "1.5-4%" in s.name)
    truth = truth_of(sc, lc_queries=0)
    boot = coverage(sc, truth, "bootstrap", COVERAGE_REPS, rounds=300)
    score = coverage(sc, truth, "score", COVERAGE_REPS, rounds=0)
    assert boot is not None and score is not None
    assert boot.coverage < 0.91 and boot.above > 3 * score.above


LC_SCENARIOS = [sc for sc in SCENARIOS if sc.length_effect is not None]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", LC_SCENARIOS, ids=[sc.name for sc in LC_SCENARIOS])
def test_one_step_length_controlled_bootstrap_covers(scenario):
    """interval="bootstrap" with length control takes one Newton step per round (docs/rating.md):
    it covers like the exact-refit bootstrap it approximates, on the same draws."""
    truth = truth_of(scenario, lc_queries=50_000)
    one_step = coverage(scenario, truth, "bootstrap", COVERAGE_REPS, rounds=500)
    refit = coverage(scenario, truth, "bootstrap-refit", COVERAGE_REPS, rounds=500)
    assert one_step is not None and refit is not None
    print(f"\n{scenario.name}: one-step {one_step.text()}, exact refit {refit.text()}")
    assert 0.905 <= one_step.coverage <= 0.99, one_step
    assert abs(one_step.hits - refit.hits) <= 0.01 * one_step.total  # the same intervals, but a few
