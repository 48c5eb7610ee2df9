"""Rating kernels against the slow reference, degenerate data, determinism and validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arena_engine.errors import ArenaError
from arena_engine.rating import Ratings, evalscope_overall, rate_battles, winrate_from_rating
from tests import naive_rating as naive

TO_ELO = 400.0 / math.log(10.0)


def star_battles(rng: np.random.Generator, k: int, queries: int, quality: np.ndarray, base: int = 0):
    """Every candidate answers every query; two games per query (candidate as A, then as B)."""
    a, b, o, q = [], [], [], []
    for qid in range(queries):
        difficulty = rng.normal()
        for m in range(k):
            if m == base:
                continue
            for cand_is_a in (True, False):
                u = quality[m] + difficulty + rng.logistic()
                v = 2 if u > 2 else 1 if u > 0.5 else 0 if u > -0.5 else -1 if u > -2 else -2
                a.append(m if cand_is_a else base)
                b.append(base if cand_is_a else m)
                o.append(v if cand_is_a else -v)
                q.append(qid)
    return np.array(a), np.array(b), np.array(o, dtype=np.int8), np.array(q)


def all_pairs_battles(rng: np.random.Generator, k: int, games: int, quality: np.ndarray):
    a = rng.integers(0, k, games)
    b = (a + rng.integers(1, k, games)) % k
    u = quality[a] - quality[b] + rng.logistic(size=games)
    o = np.select([u > 2, u > 0.4, u > -0.4, u > -2], [2, 1, 0, -1], -2).astype(np.int8)
    q = rng.integers(0, games // 3, games)
    return a, b, o, q


def names(k: int) -> list[str]:
    return [f"m{m}" for m in range(k)]


def test_star_winrate_is_weighted_share_of_wins():
    rng = np.random.default_rng(1)
    k = 6
    a, b, o, q = star_battles(rng, k, 80, np.linspace(-1.5, 1.5, k))
    r = rate_battles(a, b, o, q, models=names(k), baseline="m0", rounds=50)
    expected = naive.star_winrates(a, b, o, base=0, k=k)
    got = np.array([m.winrate for m in r.per_model])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert r["m0"].winrate == 0.5 and r["m0"].rating == 1000.0
    assert r["m0"].winrate_lower == r["m0"].winrate_upper == 0.5
    for m in r.per_model[1:]:
        assert m.rating == pytest.approx(1000 + 400 * math.log10(m.winrate / (1 - m.winrate)), abs=1e-9)
        assert m.n_battles == 160
    assert r["m0"].n_battles == 160 * (k - 1)


def test_strong_weight_counts_strong_verdicts_more():
    a = np.array([1, 0, 1, 0])
    b = np.array([0, 1, 0, 1])
    o = np.array([2, 1, -1, 1], dtype=np.int8)  # m1: strong win, loss, loss, loss
    q = np.array([0, 0, 1, 1])
    for weight, share in ((1, 1 / 4), (3, 3 / 6), (5, 5 / 8)):
        r = rate_battles(a, b, o, q, models=["base", "cand"], baseline="base", rounds=0, strong_weight=weight)
        assert r["cand"].winrate == pytest.approx(share, abs=1e-12)


def test_all_pairs_bt_matches_reference_mm():
    rng = np.random.default_rng(2)
    k = 7
    a, b, o, q = all_pairs_battles(rng, k, 3000, rng.normal(0, 1, k))
    r = rate_battles(a, b, o, q, models=names(k), baseline=3, rounds=0)
    ref = naive.bradley_terry(naive.pair_table(a, b, o), k, 3)
    got = np.array([m.rating for m in r.per_model])
    np.testing.assert_allclose(got / TO_ELO, ref / TO_ELO, rtol=0, atol=1e-8)
    assert r.baseline == "m3" and r["m3"].rating == 1000.0


def test_general_fit_reproduces_star_closed_form():
    """The Newton fitter used for all-pairs data gives (W + T/2) / N on a one-baseline design."""
    from arena_engine.rating import _bradley_terry as bt
    from arena_engine.rating._aggregate import aggregate, pair_totals

    rng = np.random.default_rng(3)
    k = 5
    a, b, o, q = star_battles(rng, k, 60, np.array([0, -1, 0.3, 1, 2.0]))
    games = aggregate(a, b, o, q, k=k, base=0, strong_weight=3)
    s2, w = pair_totals(games)
    beta = bt.fit(games.pi, games.pj, 0.5 * s2, w.astype(float), k, 0, np.zeros(k), np.zeros((0, 0)))
    expected = naive.star_winrates(a, b, o, base=0, k=k)
    np.testing.assert_allclose(1 / (1 + np.exp(-beta)), expected, atol=1e-12)


def _rows_permuted(rng, *arrays):
    perm = rng.permutation(arrays[0].size)
    return [x[perm] for x in arrays]


@pytest.mark.parametrize(
    ("design", "method", "interval"),
    [
        ("star", "bt", "bootstrap"),
        ("star", "bt", "sandwich"),
        ("star", "evalscope", "bootstrap"),
        ("star", "elo", "bootstrap"),
        ("star", "elo-online", "bootstrap"),
        ("pairs", "elo-online", "bootstrap"),
        ("pairs", "bt", "score"),
        ("pairs", "bt", "bootstrap"),
        ("pairs", "bt", "sandwich"),
        ("pairs", "evalscope", "bootstrap"),
    ],
)
def test_same_rows_in_any_order_give_identical_ratings(design, method, interval):
    rng = np.random.default_rng(4)
    k = 5
    quality = np.linspace(-1, 1, k)
    data = star_battles(rng, k, 40, quality) if design == "star" else all_pairs_battles(rng, k, 800, quality)
    kwargs = dict(models=names(k), baseline="m0", rounds=60, seed=7, method=method, interval=interval)
    first = rate_battles(*data, **kwargs)
    again = rate_battles(*_rows_permuted(rng, *data), **kwargs)
    assert first == again
    other_seed = rate_battles(*data, **{**kwargs, "seed": 8})
    assert [m.rating for m in other_seed.per_model] == [m.rating for m in first.per_model] or method == "elo-online"
    if interval == "bootstrap":
        assert [m.rating_lower for m in other_seed.per_model] != [m.rating_lower for m in first.per_model]


def test_degenerate_models_are_finite_and_flagged():
    # m1 only wins, m2 only loses, m3 and m4 only play each other, m5 never plays, m6 is normal
    a = np.array([1, 0, 2, 0, 3, 4, 6, 0, 6])
    b = np.array([0, 1, 0, 2, 4, 3, 0, 6, 0])
    o = np.array([1, -2, -1, 2, 1, 0, 1, 0, -1], dtype=np.int8)
    q = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4])
    models = names(7)
    for method, interval in (
        ("bt", "bootstrap"), ("bt", "sandwich"), ("bt", "score"), ("evalscope", "bootstrap"), ("elo", "bootstrap"),
        ("elo-online", "bootstrap"),
    ):
        r = rate_battles(a, b, o, q, models=models, baseline="m0", rounds=40, method=method, interval=interval)
        for m in r.per_model:
            values = (m.rating, m.rating_lower, m.rating_upper, m.winrate, m.winrate_lower, m.winrate_upper)
            if m.name == "m5":  # issue 19: a model without battles gets no rating, not a made-up one
                assert all(math.isnan(v) for v in values), (method, m)
                continue
            assert all(math.isfinite(v) for v in values), (method, m)
            assert m.rating_lower <= m.rating_upper and 0.0 <= m.winrate_lower <= m.winrate_upper <= 1.0
        assert r["m1"].flags == ("only_wins",)
        assert r["m2"].flags == ("only_losses",)
        assert r["m3"].flags == r["m4"].flags == ("disconnected",)
        assert r["m5"].flags == ("no_battles",) and r["m5"].n_battles == 0
        assert r["m6"].flags == () and r["m0"].flags == ()
        if method != "elo-online":
            # only wins: the estimate of one extra tied game, (W + 1/2) / (N + 1)
            assert r["m1"].winrate == pytest.approx((4 + 0.5) / (4 + 1))
            assert r["m2"].winrate == pytest.approx(0.5 / (4 + 1))
            assert math.isnan(r["m5"].winrate)
            assert r.sorted()[0].name == "m1"


def test_disconnected_group_keeps_its_internal_order():
    a = np.array([1, 2, 2, 3, 3, 1, 4])
    b = np.array([2, 1, 3, 2, 1, 3, 0])
    o = np.array([1, -1, 1, 0, -1, 1, 1], dtype=np.int8)
    q = np.arange(7)
    r = rate_battles(a, b, o, q, models=names(5), baseline="m0", rounds=0)
    assert r["m1"].rating > r["m2"].rating > r["m3"].rating
    assert {m.name for m in r.per_model if m.flags == ("disconnected",)} == {"m1", "m2", "m3"}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from([-2, -1, 0, 1, 2]), st.integers(0, 5)),
        min_size=0,
        max_size=30,
    ),
    st.sampled_from(["bt", "evalscope", "elo", "elo-online"]),
)
def test_any_small_input_gives_finite_ordered_results(rows, method):
    a = np.array([r[0] for r in rows], dtype=np.int64)
    b = np.array([r[1] for r in rows], dtype=np.int64)
    o = np.array([r[2] for r in rows], dtype=np.int8)
    q = np.array([r[3] for r in rows], dtype=np.int64)
    r = rate_battles(a, b, o, q, models=names(4), baseline="m0", rounds=20, method=method)
    for m in r.per_model:
        if m.flags == ("no_battles",):  # issue 19: no rating rather than a made-up one
            assert math.isnan(m.rating) and math.isnan(m.winrate)
            continue
        assert all(math.isfinite(v) for v in (m.rating, m.rating_lower, m.rating_upper))
        assert m.rating_lower <= m.rating_upper
        assert 0.0 <= m.winrate_lower <= m.winrate_upper <= 1.0
        assert m.winrate == pytest.approx(winrate_from_rating(m.rating), abs=1e-12)
    assert r["m0"].winrate == 0.5


def test_sandwich_matches_dense_reference():
    rng = np.random.default_rng(5)
    k = 5
    a, b, o, q = all_pairs_battles(rng, k, 1500, rng.normal(0, 1, k))
    r = rate_battles(a, b, o, q, models=names(k), baseline="m2", interval="sandwich", ci=0.9)
    point = np.array([m.rating for m in r.per_model])
    se = naive.sandwich_se(a, b, o, q, point, base=2)
    z = 1.6448536269514722
    np.testing.assert_allclose([m.rating_upper for m in r.per_model], point + z * se, atol=1e-7)
    np.testing.assert_allclose([m.rating_lower for m in r.per_model], point - z * se, atol=1e-7)
    # star design: the per-candidate shortcut equals the dense formula
    a, b, o, q = star_battles(rng, k, 50, np.linspace(-1, 1, k))
    r = rate_battles(a, b, o, q, models=names(k), baseline="m0", interval="sandwich")
    point = np.array([m.rating for m in r.per_model])
    se = naive.sandwich_se(a, b, o, q, point, base=0)
    np.testing.assert_allclose([m.rating_upper for m in r.per_model], point + 1.959963984540054 * se, atol=1e-7)


def test_cluster_bootstrap_agrees_with_reference_in_distribution():
    rng = np.random.default_rng(6)
    k = 4
    a, b, o, q = all_pairs_battles(rng, k, 240, np.array([0.0, 0.8, -0.5, 0.3]))
    r = rate_battles(a, b, o, q, models=names(k), baseline="m0", rounds=1000, seed=1, interval="bootstrap")
    ref = naive.cluster_bootstrap(a, b, o, q, k=k, base=0, rounds=300, seed=1)
    ref_sd = ref.std(axis=0)[1:]
    ours_halfwidth = np.array([(m.rating_upper - m.rating_lower) / 2 for m in r.per_model])[1:]
    # 95% half-width is about 1.96 sd; 300 reference rounds leave ~10% noise on the sd
    np.testing.assert_allclose(ours_halfwidth / (1.96 * ref_sd), 1.0, atol=0.2)


def test_elo_kernel_matches_reference_on_a_fixed_order():
    from arena_engine.rating._elo import _run

    rng = np.random.default_rng(7)
    k = 4
    i = rng.integers(0, k - 1, 500)
    j = i + 1
    s2 = rng.integers(0, 3, 500)
    w = np.ones(500, dtype=np.int64)
    order = rng.permutation(500)
    got = _run(order, i, j, s2, w, k, 2, 4.0)
    ref = naive.elo(i[order].tolist(), j[order].tolist(), (s2[order] / 2).tolist(), k, 2)
    np.testing.assert_allclose(got, ref, atol=1e-9)


def test_elo_ranks_like_bradley_terry_on_clear_data():
    rng = np.random.default_rng(8)
    k = 4
    a, b, o, q = star_battles(rng, k, 150, np.array([0.0, -1.5, 0.0, 1.5]))
    r = rate_battles(a, b, o, q, models=names(k), baseline="m0", rounds=30, method="elo-online")
    order = [m.name for m in r.sorted()]
    assert order[0] == "m3" and order[-1] == "m1"
    assert r["m0"].rating == 1000.0


def test_evalscope_mode_has_same_points_and_narrower_intervals():
    rng = np.random.default_rng(9)
    k = 4
    a, b, o, q = star_battles(rng, k, 100, np.array([0.0, -0.5, 0.5, 1.0]))
    ours = rate_battles(a, b, o, q, models=names(k), baseline="m0", rounds=400)
    es = rate_battles(a, b, o, q, models=names(k), baseline="m0", rounds=400, method="evalscope")
    assert [m.rating for m in es.per_model] == [m.rating for m in ours.per_model]
    width = [(m.winrate_upper - m.winrate_lower) for m in ours.per_model[1:]]
    es_width = [(m.winrate_upper - m.winrate_lower) for m in es.per_model[1:]]
    assert np.mean(es_width) < 0.85 * np.mean(width)


def test_evalscope_overall_is_the_mean_of_subset_rows():
    rng = np.random.default_rng(10)
    k = 3
    subsets = []
    for s in range(3):
        a, b, o, q = star_battles(rng, k, 30 + 10 * s, np.array([0.0, 0.5 * s, -0.3]))
        subsets.append(rate_battles(a, b, o, q, models=names(k), baseline="m0", rounds=100, method="evalscope"))
    overall = evalscope_overall(subsets)
    for m in ("m1", "m2"):
        assert overall[m].winrate == pytest.approx(np.mean([s[m].winrate for s in subsets]))
        assert overall[m].winrate_lower == pytest.approx(np.mean([s[m].winrate_lower for s in subsets]))
        assert overall[m].winrate_upper == pytest.approx(np.mean([s[m].winrate_upper for s in subsets]))
        assert overall[m].n_battles == sum(s[m].n_battles for s in subsets)
        assert winrate_from_rating(overall[m].rating) == pytest.approx(overall[m].winrate)
    assert overall["m0"].winrate == 0.5
    with pytest.raises(ArenaError):
        evalscope_overall([])


def test_ratings_lookup_and_sorting():
    rng = np.random.default_rng(11)
    a, b, o, q = star_battles(rng, 4, 60, np.array([0.0, 1.0, -1.0, 0.2]))
    r = rate_battles(a, b, o, q, models=["base", "good", "bad", "meh"], baseline="base", rounds=10)
    assert isinstance(r, Ratings) and r.models == ("base", "good", "bad", "meh")
    assert [m.name for m in r.sorted()] == ["good", "meh", "base", "bad"]
    assert r["bad"] is r.per_model[2]
    with pytest.raises(KeyError):
        r["nobody"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_b": np.array([1, 0])}, "model_a has 3 rows but model_b has 2"),
        ({"model_a": np.array([0, 5, 1])}, r"model_a\[1\] = 5 is not an index"),
        ({"model_b": np.array([1, -1, 0])}, r"model_b\[1\] = -1"),
        ({"outcome": np.array([1, 3, 0])}, r"outcome\[1\] = 3"),
        ({"outcome": np.array([1.0, 0.5, 0.0])}, "outcome must be a 1-D integer array"),
        ({"query": np.array([0, 1])}, "query has 2"),
        ({"baseline": "zed"}, "baseline 'zed' is not one of models"),
        ({"baseline": 4}, "baseline index 4"),
        ({"models": ["x", "x"]}, "twice"),
        ({"method": "glicko"}, "method must be"),
        ({"interval": "jackknife"}, "interval must be"),
        ({"interval": "sandwich", "method": "elo-online"}, "sandwich"),
        ({"ci": 1.5}, "ci must be"),
        ({"rounds": -1}, "rounds must be"),
        ({"strong_weight": 0}, "strong_weight"),
        ({"lengths": np.ones((3, 3))}, "lengths must have shape"),
    ],
)
def test_invalid_input_raises_arena_error(change, message):
    args = {
        "model_a": np.array([0, 1, 0]),
        "model_b": np.array([1, 0, 1]),
        "outcome": np.array([1, -1, 0], dtype=np.int8),
        "query": np.array([0, 0, 1]),
        "models": ["x", "y"],
        "baseline": "x",
    }
    args.update(change)
    positional = [args.pop(name) for name in ("model_a", "model_b", "outcome", "query")]
    with pytest.raises(ArenaError, match=message):
        rate_battles(*positional, **args)


def test_empty_input_rates_everyone_at_the_baseline():
    empty = np.zeros(0, dtype=np.int64)
    r = rate_battles(empty, empty, empty.astype(np.int8), empty, models=["x", "y"], baseline="x", rounds=10)
    assert math.isnan(r["y"].winrate) and r["y"].flags == ("no_battles",) and r["y"].n_battles == 0
    assert r["x"].winrate == 0.5


def test_self_games_are_ignored():
    a = np.array([0, 1, 1, 0])
    b = np.array([0, 0, 1, 1])
    o = np.array([2, 1, -2, 1], dtype=np.int8)
    q = np.array([0, 0, 1, 1])
    r = rate_battles(a, b, o, q, models=["x", "y"], baseline="x", rounds=0)
    assert r["y"].winrate == pytest.approx(0.5) and r["y"].n_battles == 2 and r["x"].n_battles == 2


def length_battles(rng: np.random.Generator, queries: int, quality: np.ndarray, verbosity: np.ndarray, bias: float):
    """Star design; the judge adds `bias` * tanh(length difference / 300) to the better-answer logit."""
    a, b, o, q, lens = [], [], [], [], []
    k = quality.size
    for qid in range(queries):
        for m in range(1, k):
            for cand_is_a in (True, False):
                len_c = rng.normal(400 * verbosity[m], 80)
                len_0 = rng.normal(400 * verbosity[0], 80)
                u = quality[m] - quality[0] + bias * math.tanh((len_c - len_0) / 300) + rng.logistic()
                v = 2 if u > 2 else 1 if u > 0.5 else 0 if u > -0.5 else -1 if u > -2 else -2
                a.append(m if cand_is_a else 0)
                b.append(0 if cand_is_a else m)
                o.append(v if cand_is_a else -v)
                q.append(qid)
                lens.append((len_c, len_0) if cand_is_a else (len_0, len_c))
    return np.array(a), np.array(b), np.array(o, dtype=np.int8), np.array(q), np.array(lens)


def test_length_control_matches_reference_and_removes_length_bias():
    rng = np.random.default_rng(12)
    quality = np.array([0.0, 0.0, 0.0, 0.6])
    verbosity = np.array([1.0, 2.0, 1.0, 1.0])  # m1 is as good as the baseline but twice as long
    a, b, o, q, lens = length_battles(rng, 300, quality, verbosity, bias=1.5)
    models = names(4)
    raw = rate_battles(a, b, o, q, models=models, baseline="m0", rounds=0)
    lc = rate_battles(a, b, o, q, models=models, baseline="m0", rounds=200, lengths=lens)
    ref, _ = naive.length_controlled(a, b, o, lens, k=4, base=0)
    np.testing.assert_allclose([m.rating / TO_ELO for m in lc.per_model], ref / TO_ELO, atol=1e-8)
    assert raw["m1"].winrate > 0.6  # the length bias, uncorrected
    assert lc["m1"].winrate_lower < 0.5 < lc["m1"].winrate_upper  # corrected: as good as the baseline
    assert abs(lc["m2"].winrate - raw["m2"].winrate) < 0.05  # same length as the baseline: little change
    assert lc["m3"].winrate_lower > 0.5
    sandwich = rate_battles(a, b, o, q, models=models, baseline="m0", interval="sandwich", lengths=lens)
    assert [m.rating for m in sandwich.per_model] == [m.rating for m in lc.per_model]
    for m in ("m1", "m2", "m3"):
        boot_width = lc[m].rating_upper - lc[m].rating_lower
        assert sandwich[m].rating_upper - sandwich[m].rating_lower == pytest.approx(boot_width, rel=0.3)


def test_length_control_with_equal_lengths_is_plain_bradley_terry():
    rng = np.random.default_rng(13)
    k = 5
    a, b, o, q = all_pairs_battles(rng, k, 1200, rng.normal(0, 1, k))
    lens = np.full((a.size, 2), 250.0)
    plain = rate_battles(a, b, o, q, models=names(k), baseline="m1", rounds=0)
    lc = rate_battles(a, b, o, q, models=names(k), baseline="m1", rounds=0, lengths=lens)
    np.testing.assert_allclose([m.rating for m in lc.per_model], [m.rating for m in plain.per_model], atol=1e-7)
    # and degenerate data stays finite
    lc_small = rate_battles(a[:3], b[:3], o[:3], q[:3], models=names(k), baseline="m1", rounds=20, lengths=lens[:3])
    assert all(
        math.isfinite(m.rating_lower) and math.isfinite(m.rating_upper)
        for m in lc_small.per_model
        if m.flags != ("no_battles",)
    )


@pytest.mark.parametrize("design", ["star", "pairs"])
def test_results_do_not_depend_on_the_number_of_threads(design, monkeypatch):
    from arena_engine.rating import _threads

    rng = np.random.default_rng(14)
    k = 6
    quality = np.linspace(-1, 1, k)
    data = star_battles(rng, k, 50, quality) if design == "star" else all_pairs_battles(rng, k, 900, quality)
    lens = rng.uniform(100, 900, (data[0].size, 2))
    runs = []
    for cpus in (1, 3):
        monkeypatch.setattr(_threads.os, "cpu_count", lambda cpus=cpus: cpus)
        monkeypatch.setattr(_threads, "MIN_THREAD_WORK", 0)
        runs.append(
            [
                rate_battles(
                    *data, models=names(k), baseline="m0", rounds=30, seed=3, method=method, lengths=lengths,
                    interval="bootstrap",
                )
                for method, lengths in (("bt", None), ("evalscope", None), ("elo-online", None), ("bt", lens))
            ]
        )
    assert runs[0] == runs[1]


def test_length_controlled_ratings_ignore_row_order():
    rng = np.random.default_rng(15)
    a, b, o, q, lens = length_battles(rng, 40, np.array([0.0, 0.3, -0.2]), np.array([1.0, 1.5, 0.8]), bias=1.0)
    kwargs = dict(models=names(3), baseline="m0", rounds=40, seed=2, interval="bootstrap")
    first = rate_battles(a, b, o, q, lengths=lens, **kwargs)
    perm = rng.permutation(a.size)
    again = rate_battles(a[perm], b[perm], o[perm], q[perm], lengths=lens[perm], **kwargs)
    assert first == again and first.length_controlled and first.interval == "bootstrap"
