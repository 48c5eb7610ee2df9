"""Length control's fast kernels against the slow references (issue 19: LC within 3x of plain BT)."""

from __future__ import annotations

import numpy as np

import tests.naive_rating as naive
from arena_engine.rating import _length as lc
from arena_engine.rating import rate_battles
from arena_engine.rating._aggregate import aggregate
from tests.test_rating import all_pairs_battles, length_battles, names

TO_ELO = 400 / np.log(10)


def test_grouped_newton_matches_dense_irls_on_all_pairs():
    rng = np.random.default_rng(11)
    k = 5
    a, b, o, q = all_pairs_battles(rng, k, 3000, np.array([0.0, 0.4, -0.3, 0.8, 0.1]))
    lens = rng.uniform(100, 900, (a.size, 2))
    r = rate_battles(a, b, o, q, models=names(k), baseline="m2", rounds=0, lengths=lens)
    ref, _ = naive.length_controlled(a, b, o, lens, k=k, base=2)
    np.testing.assert_allclose([m.rating for m in r.per_model], ref, atol=1e-8)


def _both(nq: int, seed: int, rounds: int = 400):
    rng = np.random.default_rng(seed)
    a, b, o, q, lens = length_battles(rng, nq, np.array([0.0, 0.5, -0.3, 0.2]), np.array([1.0, 1.5, 1.0, 0.7]), 1.0)
    battles = aggregate(a, b, o, q, k=4, base=0, strong_weight=3, row_codes=True)
    seeds = np.arange(rounds, dtype=np.uint32)
    beta, one_step, _ = lc.rate_length_controlled(
        a, o, battles, lens, strong_weight=3, rounds=rounds, seeds=seeds, interval="bootstrap"
    )
    beta_ref, refit = lc.rate_length_controlled_refit(a, o, battles, lens, strong_weight=3, rounds=rounds, seeds=seeds)
    assert one_step is not None
    return beta, beta_ref, one_step, refit


def test_one_step_bootstrap_tracks_the_exact_refit_round_by_round():
    beta, beta_ref, one_step, refit = _both(300, 3)
    np.testing.assert_allclose(beta, beta_ref, atol=1e-12)
    bounds = np.quantile(one_step, [0.025, 0.975], axis=0) * TO_ELO
    ref_bounds = np.quantile(refit, [0.025, 0.975], axis=0) * TO_ELO
    width = ref_bounds[1, 1:] - ref_bounds[0, 1:]
    # same clusters drawn in every round; the one-step error is O(1/n) against a spread O(1/sqrt(n))
    assert np.max(np.abs(bounds - ref_bounds)[:, 1:] / width) < 0.03
    spread = np.std(refit[:, 1:], axis=0)
    assert np.all(np.std(one_step[:, 1:] - refit[:, 1:], axis=0) < 0.05 * spread)


def test_rounds_where_a_model_leaves_the_component_are_refitted_exactly():
    # 12 queries, a strong candidate: some rounds draw no loss for it, where one Newton step is no fit
    rng = np.random.default_rng(5)
    a, b, o, q, lens = length_battles(rng, 12, np.array([0.0, 2.5, -0.3]), np.array([1.0, 1.2, 1.0]), 0.5)
    battles = aggregate(a, b, o, q, k=3, base=0, strong_weight=3, row_codes=True)
    seeds = np.arange(300, dtype=np.uint32)
    _, one_step, _ = lc.rate_length_controlled(
        a, o, battles, lens, strong_weight=3, rounds=300, seeds=seeds, interval="bootstrap"
    )
    _, refit = lc.rate_length_controlled_refit(a, o, battles, lens, strong_weight=3, rounds=300, seeds=seeds)
    assert one_step is not None
    same = np.all(one_step == refit, axis=1)
    assert 0 < same.sum() < 300  # some rounds needed the refit and got exactly it, the rest one step
