"""Issue 19: the default (score) interval, content-keyed resampling, warnings, Elo, option validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from arena_engine.errors import ArenaError
from arena_engine.rating import rate_battles
from tests import naive_rating as naive
from tests.test_rating import all_pairs_battles, length_battles, names, star_battles


def no_wins(queries: int = 40):
    """A candidate that loses every one of 2 x `queries` games (weak losses) to the baseline."""
    q = np.repeat(np.arange(queries), 2)
    a = np.tile([1, 0], queries)
    b = np.tile([0, 1], queries)
    o = np.where(a == 1, -1, 1).astype(np.int8)
    return a, b, o, q


def test_wilson_bounds_match_the_bisection_reference():
    from arena_engine.rating._score import wilson_lower

    rng = np.random.default_rng(0)
    p = np.concatenate([[0.0, 1.0, 1e-6, 1 - 1e-6, 0.5], rng.uniform(0, 1, 40)])
    n = np.concatenate([[80, 80, 5, 5, 1], rng.uniform(1, 5000, 40)])
    for z in (1.0, 1.959963984540054, 2.6):
        lo = wilson_lower(p, 1 - p, n, z)
        hi = 1 - wilson_lower(1 - p, p, n, z)
        ref = np.array([naive.wilson(float(x), float(m), z) for x, m in zip(p, n, strict=True)])
        np.testing.assert_allclose(lo, ref[:, 0], atol=1e-12)
        np.testing.assert_allclose(hi, ref[:, 1], atol=1e-12)


def test_t_quantile_matches_scipy():
    from arena_engine.rating._score import t_quantile

    for df in (1, 2, 3, 4, 7, 29, 100, 5000):
        for prob in (0.9, 0.95, 0.975, 0.995):
            assert t_quantile(prob, df) == pytest.approx(stats.t.ppf(prob, df), rel=1e-9), (df, prob)


def test_no_wins_in_80_games_still_gives_an_interval_that_reaches_the_truth():
    """Issue 19: 80 games with no wins gave [0.22%, 0.25%] when the truth was 1.48%."""
    r = rate_battles(*no_wins(40), models=["base", "c"], baseline="base")
    c = r["c"]
    assert r.interval == "score" and c.flags == ("only_losses",) and c.warnings == ()
    assert c.winrate_lower < 0.001 and 0.03 < c.winrate_upper < 0.06  # Wilson for 0 of 80: up to 4.6%
    assert c.winrate_lower <= c.winrate <= c.winrate_upper
    # the percentile bootstrap cannot do this: every resample has no wins; it says so
    boot = rate_battles(*no_wins(40), models=["base", "c"], baseline="base", interval="bootstrap")
    assert boot["c"].winrate_upper - boot["c"].winrate_lower < 1e-3 and "zero_width" in boot["c"].warnings


def _shrunk_reference(a, b, o, q, k: int, ci: float, base: int = 0):
    """The score interval from scratch: BT by MM, dense sandwich SE, design effects shrunk to the pooled
    one, Wilson (bisection) with Student-t(queries - 1) quantiles. Per non-baseline model (lo, hi)."""
    table = naive.pair_table(a, b, o)
    ratings = naive.bradley_terry(table, k, base)
    se = naive.sandwich_se(a, b, o, q, ratings, base=base) / naive.TO_ELO
    beta = (ratings - 1000.0) / naive.TO_ELO
    games = np.zeros(k)
    wins = np.zeros(k)
    for (x, y), (win, n) in table.items():
        games[[x, y]] += n
        wins[x] += win
        wins[y] += n - win
    others = [m for m in range(k) if m != base]
    p = 1 / (1 + np.exp(-beta[others]))
    d_hat = p * (1 - p) * se[others] ** 2 * games[others]
    minority = np.minimum(wins, games - wins)[others]
    prior = max(1.0, float(np.sum(minority * d_hat) / np.sum(minority)))
    d = (minority * d_hat + 4.0 * prior) / (minority + 4.0)
    queries = naive.queries_per_model(a, b, q, k)[others]
    out = []
    for t_, m in enumerate(others):
        t = stats.t.ppf(0.5 + ci / 2, queries[t_] - 1)
        out.append(naive.wilson(float(p[t_]), float(games[m] / d[t_]), float(t)))
    return np.array(out)


def test_score_interval_is_wilson_on_the_shrunk_cluster_robust_effective_games():
    rng = np.random.default_rng(1)
    k = 5
    a, b, o, q = star_battles(rng, k, 60, np.array([0.0, -1.0, 0.2, 0.9, 2.0]))
    r = rate_battles(a, b, o, q, models=names(k), baseline="m0", ci=0.9)
    ref = _shrunk_reference(a, b, o, q, k, 0.9)
    np.testing.assert_allclose([m.winrate_lower for m in r.per_model[1:]], ref[:, 0], atol=2e-5)
    np.testing.assert_allclose([m.winrate_upper for m in r.per_model[1:]], ref[:, 1], atol=2e-5)
    assert r.rounds == 0 and r.interval == "score"
    assert rate_battles(a, b, o, q, models=names(k), baseline="m0", ci=0.9, seed=5) == rate_battles(
        a, b, o, q, models=names(k), baseline="m0", ci=0.9, seed=5
    )


def test_score_interval_on_all_pairs_data_matches_the_reference():
    rng = np.random.default_rng(11)
    k = 5
    a, b, o, q = all_pairs_battles(rng, k, 1200, rng.normal(0, 1, k))
    r = rate_battles(a, b, o, q, models=names(k), baseline="m2")
    ref = _shrunk_reference(a, b, o, q, k, 0.95, base=2)
    others = [m for m in r.per_model if m.name != "m2"]
    np.testing.assert_allclose([m.winrate_lower for m in others], ref[:, 0], atol=2e-6)
    np.testing.assert_allclose([m.winrate_upper for m in others], ref[:, 1], atol=2e-6)


def _relabelled(rng: np.random.Generator, q: np.ndarray) -> np.ndarray:
    ids = np.unique(q)
    new = rng.choice(10 * ids.size + 7, size=ids.size, replace=False) * 3 + 11  # other integers, other order
    return new[np.searchsorted(ids, q)]


@pytest.mark.parametrize(
    ("design", "method", "interval"),
    [
        ("star", "bt", "bootstrap"),
        ("star", "bt", "score"),
        ("pairs", "bt", "bootstrap"),
        ("multi", "bt", "bootstrap"),
        ("multi", "bt", "score"),
        ("multi", "evalscope", "bootstrap"),
        ("multi", "elo-online", "bootstrap"),
        ("length", "bt", "bootstrap"),
        ("length", "bt", "score"),
    ],
)
def test_renumbered_queries_and_shuffled_rows_give_bit_identical_results(design, method, interval):
    """Issue 19: relabelling query ids moved bounds by up to 0.9 pp (the resampling followed id order)."""
    rng = np.random.default_rng(2)
    k = 5
    quality = np.linspace(-1, 1, k)
    lens = None
    if design == "star":
        a, b, o, q = star_battles(rng, k, 40, quality)
    elif design == "pairs":
        a, b, o, q = all_pairs_battles(rng, k, 900, quality)
    elif design == "multi":  # every query judges two different pairs in both orders
        a, b, o, q = all_pairs_battles(rng, k, 1200, quality)
        q = np.arange(a.size) // 4
    else:
        a, b, o, q, lens = length_battles(rng, 40, np.array([0.0, 0.3, -0.2]), np.array([1.0, 1.5, 0.8]), 1.0)
        k = 3
    kwargs = dict(models=names(k), baseline="m0", rounds=50, seed=3, method=method, interval=interval)
    first = rate_battles(a, b, o, q, lengths=lens, **kwargs)
    perm = rng.permutation(a.size)
    again = rate_battles(
        a[perm], b[perm], o[perm], _relabelled(rng, q)[perm], lengths=None if lens is None else lens[perm], **kwargs
    )
    assert first == again
    if interval == "bootstrap":  # and the bounds do depend on the seed, so the test could fail
        other = rate_battles(a, b, o, q, lengths=lens, **{**kwargs, "seed": 4})
        assert [m.rating_lower for m in other.per_model] != [m.rating_lower for m in first.per_model]


def test_elo_is_the_bradley_terry_fit_on_the_elo_scale():
    rng = np.random.default_rng(3)
    k = 5
    a, b, o, q = all_pairs_battles(rng, k, 1500, rng.normal(0, 1, k))
    bt = rate_battles(a, b, o, q, models=names(k), baseline="m0")
    elo = rate_battles(a, b, o, q, models=names(k), baseline="m0", method="elo")
    assert elo.method == "elo" and elo.per_model == bt.per_model
    legacy = rate_battles(a, b, o, q, models=names(k), baseline="m0", method="elo-online", rounds=20)
    assert legacy.interval == "spread"  # labelled: its bounds are not a confidence interval
    assert [m.name for m in legacy.sorted()] == [m.name for m in bt.sorted()]


def test_online_elo_point_is_the_mean_over_many_orderings():
    from arena_engine.rating._elo import elo_mean, elo_point
    from arena_engine.rating._pipeline import _seeds

    rng = np.random.default_rng(4)
    k = 4
    a, b, o, q = star_battles(rng, k, 30, np.array([0.0, -1.0, 0.3, 1.0]))
    points = [rate_battles(a, b, o, q, models=names(k), baseline="m0", method="elo-online", rounds=0, seed=s)
              for s in range(12)]
    sd = np.std([[m.rating for m in p.per_model] for p in points], axis=0)
    assert sd.max() < 1.5  # a single shuffled order: seed-to-seed SD 7.5-8.1 points on these data
    i = rng.integers(0, 3, 300)
    j = i + 1
    s2 = rng.integers(0, 3, 300)
    w = np.ones(300, np.int64)
    canon = np.arange(300, dtype=np.int64)
    seeds = _seeds(9, 2, 5)
    # elo_mean reshuffles one array in place: the t-th order is the t-th shuffle of the previous one;
    # check the mean of its orders against elo_point on the same orders, replayed one by one
    mean = elo_mean(canon, i, j, s2, w, 4, 0, 4.0, seeds)
    assert np.all(np.isfinite(mean)) and mean[0] == pytest.approx(1000.0)
    single = elo_mean(canon, i, j, s2, w, 4, 0, 4.0, seeds[:1])
    np.testing.assert_allclose(single, elo_point(canon, i, j, s2, w, 4, 0, 4.0, seeds[0]), atol=1e-9)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"elo_k": math.nan}, "elo_k must be a finite number"),
        ({"elo_k": 1e6}, "elo_k must be a finite number"),
        ({"elo_k": 0.0}, "elo_k"),
        ({"elo_k": "4"}, "elo_k must be a number"),
        ({"rounds": 1.5}, "rounds must be an integer"),
        ({"rounds": True}, "rounds must be an integer"),
        ({"rounds": 10**8}, r"rounds must be in \[0, 1000000\]"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"ci": math.nan}, "ci must be a number"),
        ({"ci": "0.9"}, "ci must be a number"),
        ({"strong_weight": 2.5}, "strong_weight must be an integer"),
        ({"interval": "score", "method": "evalscope"}, "only resamples"),
        ({"lengths": np.ones((3, 2)), "method": "elo-online"}, "lengths"),
    ],
)
def test_numeric_and_method_options_are_validated(change, message):
    a, b, o, q = np.array([0, 1, 0]), np.array([1, 0, 1]), np.array([1, -1, 0], dtype=np.int8), np.array([0, 0, 1])
    kwargs = {"models": ["x", "y"], "baseline": "x", **change}
    with pytest.raises(ArenaError, match=message):
        rate_battles(a, b, o, q, **kwargs)


def test_elo_k_large_but_valid_gives_finite_ratings_without_warnings():
    rng = np.random.default_rng(5)
    a, b, o, q = star_battles(rng, 3, 30, np.array([0.0, 1.0, -1.0]))
    with np.errstate(all="raise"):
        r = rate_battles(a, b, o, q, models=names(3), baseline="m0", method="elo-online", elo_k=64, rounds=10)
    assert all(math.isfinite(m.rating) for m in r.per_model)


def test_few_queries_and_zero_width_are_flagged():
    rng = np.random.default_rng(6)
    k = 3
    a, b, o, q = star_battles(rng, k, 29, np.array([0.0, 0.5, -0.5]))
    few = rate_battles(a, b, o, q, models=names(k), baseline="m0")
    assert all(m.warnings == ("few_queries",) for m in few.per_model[1:]) and few["m0"].warnings == ()
    a, b, o, q = star_battles(rng, k, 30, np.array([0.0, 0.5, -0.5]))
    enough = rate_battles(a, b, o, q, models=names(k), baseline="m0")
    assert all(m.warnings == () for m in enough.per_model)
    bare = rate_battles(a, b, o, q, models=names(k), baseline="m0", interval="bootstrap", rounds=0)
    assert all(m.warnings == ("zero_width",) for m in bare.per_model[1:])
    one = rate_battles(a[:2], b[:2], o[:2], q[:2], models=names(k), baseline="m0")  # a single query
    assert one["m1"].warnings == ("few_queries",) and one["m1"].winrate_lower < one["m1"].winrate_upper
    assert math.isnan(one["m2"].rating) and one["m2"].flags == ("no_battles",)


def test_queries_per_model_matches_reference():
    from arena_engine.rating._aggregate import aggregate, queries_per_model

    rng = np.random.default_rng(7)
    k = 6
    a, b, o, q = all_pairs_battles(rng, k, 700, rng.normal(0, 1, k))
    a[:20] = b[:20]  # self-games do not count
    battles = aggregate(a, b, o, q, k=k, base=0, strong_weight=3)
    np.testing.assert_array_equal(queries_per_model(battles), naive.queries_per_model(a, b, q, k))


def test_cluster_hashes_match_reference():
    from arena_engine.rating._canonical import cluster_hashes

    rng = np.random.default_rng(8)
    sizes = rng.integers(0, 5, 50)
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    ints = rng.integers(-5, 1000, ptr[-1])
    floats = rng.normal(size=ptr[-1])
    got = cluster_hashes(ptr, ints, floats)
    bits = floats.view(np.int64)
    for c in range(50):
        rows = [[int(ints[r]), int(bits[r])] for r in range(ptr[c], ptr[c + 1])]
        assert int(got[c]) == naive.splitmix_hash(rows)


@pytest.mark.parametrize("ci", [0.2, 0.5, 0.95, 0.999])
def test_score_interval_holds_the_point_at_any_level(ci):
    r = rate_battles(*no_wins(40), models=["base", "c"], baseline="base", ci=ci)
    assert r["c"].winrate_lower <= r["c"].winrate <= r["c"].winrate_upper
    rng = np.random.default_rng(12)
    a, b, o, q = star_battles(rng, 4, 35, np.array([0.0, -3.0, 0.5, 3.0]))
    for m in rate_battles(a, b, o, q, models=names(4), baseline="m0", ci=ci).per_model:
        assert m.winrate_lower <= m.winrate <= m.winrate_upper


def test_a_model_without_a_path_to_the_baseline_gets_an_interval_over_everything():
    a = np.array([1, 2, 2, 1, 3, 0])
    b = np.array([2, 1, 1, 2, 0, 3])
    o = np.array([1, -1, 1, 0, 1, -2], dtype=np.int8)
    q = np.array([0, 0, 1, 1, 2, 2])
    r = rate_battles(a, b, o, q, models=names(4), baseline="m0")
    for m in ("m1", "m2"):
        assert r[m].flags == ("disconnected",)
        assert r[m].winrate_lower < 1e-20 and r[m].winrate_upper > 1 - 1e-12
    assert r["m3"].flags == ("only_wins",) and 0.0 < r["m3"].winrate_lower < r["m3"].winrate  # Wilson for 2 of 2


def test_rating_config_defaults_to_the_score_interval_and_labels_legacy_elo(tmp_path):
    from arena_engine.config import load_config
    from arena_engine.errors import ConfigError
    from tests.test_config import GOOD

    path = tmp_path / "arena.toml"
    path.write_text(GOOD)
    cfg = load_config(path)
    assert cfg.rating.interval == "score" and cfg.rating.method == "bt"
    path.write_text(GOOD + 'method = "elo-online"\n')
    assert load_config(path).rating.interval == "bootstrap"  # legacy online Elo only resamples
    path.write_text(GOOD + 'method = "elo-online"\ninterval = "sandwich"\n')
    with pytest.raises(ConfigError, match=r"rating\.interval"):
        load_config(path)
    path.write_text(GOOD + 'method = "elo"\ninterval = "sandwich"\n')  # elo is the BT fit: allowed
    assert load_config(path).rating.interval == "sandwich"
