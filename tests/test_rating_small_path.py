"""The numpy path small inputs take (nothing to compile on a first run) gives the statistics and the
intervals of the compiled path: the same ratings whichever path a run's size selects."""

from __future__ import annotations

import numpy as np
import pytest

from arena_engine.rating import _aggregate as agg
from arena_engine.rating._sandwich import star_sandwich_se, star_sandwich_se_numpy


def _rows(rng: np.random.Generator, n: int, k: int, star: bool, sparse_ids: bool):
    a = rng.integers(0, k, n).astype(np.int64)
    b = np.zeros(n, np.int64) if star else rng.integers(0, k, n).astype(np.int64)
    o = rng.integers(-2, 3, n).astype(np.int8)
    ids = rng.integers(0, max(1, n // 3), n).astype(np.int64)
    q = ids * 7919 + 10**9 if sparse_ids else ids
    return a, b, o, q


@pytest.mark.parametrize("seed", range(12))
def test_numpy_statistics_equal_the_compiled_ones(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 3000))
    k = int(rng.integers(1, 9))
    a, b, o, q = _rows(rng, n, k, star=seed % 3 == 0, sparse_ids=seed % 2 == 1)
    sw = int(rng.integers(1, 4))
    fast = agg.aggregate_numpy(a, b, o, q, k=k, base=0, strong_weight=sw, row_codes=True)
    compiled = agg.aggregate_compiled(a, b, o, q, k=k, base=0, strong_weight=sw, row_codes=True)
    for field in ("pi", "pj", "ptr", "e_pair", "e_s2", "e_w", "n_battles", "cluster", "pair"):
        got, want = getattr(fast, field), getattr(compiled, field)
        assert got.dtype == want.dtype, field
        if field in ("cluster", "pair"):  # the compiled sort path (sparse ids) numbers self-games' rows too
            valid = a != b
            assert (got[~valid] == -1).all()
            got, want = got[valid], want[valid]
            if field == "cluster":  # the same grouping of the games into queries
                assert len(set(zip(got.tolist(), want.tolist(), strict=True))) == len(set(got.tolist())) == len(set(want.tolist()))
                continue
        np.testing.assert_array_equal(got, want, err_msg=field)
    n_pairs = compiled.pi.size
    s2p, wp = agg.pair_totals(fast)
    want_s2p, want_wp = agg._pair_totals(compiled.e_pair, compiled.e_s2, compiled.e_w, n_pairs)
    np.testing.assert_array_equal(s2p, want_s2p)
    np.testing.assert_array_equal(wp, want_wp)
    np.testing.assert_array_equal(
        agg.queries_per_model(fast),
        agg._queries_per_model(compiled.ptr, compiled.e_pair, compiled.pi, compiled.pj, compiled.k),
    )
    cells = agg.pair_cells(n_pairs, fast.e_pair, fast.e_s2, fast.e_w)
    wmax = int(compiled.e_w.max()) if compiled.e_w.size else 0
    dense = agg._cells_dense(compiled.e_pair, compiled.e_s2, compiled.e_w, n_pairs, wmax)
    for got, want in zip((cells.ptr, cells.s2, cells.w, cells.count), dense, strict=True):
        np.testing.assert_array_equal(got, want)
    logit = rng.normal(0, 2, n_pairs)
    np.testing.assert_allclose(
        star_sandwich_se_numpy(cells.ptr, cells.s2, cells.w, cells.count, logit),
        star_sandwich_se(*dense[:1], dense[1], dense[2], dense[3], logit),
        rtol=1e-12, atol=0,
    )


def test_a_run_just_above_the_threshold_rates_like_one_just_below() -> None:
    """Crossing NUMPY_ROWS switches path, not answers: the same games rated once through each path."""
    from arena_engine.rating import rate_battles

    rng = np.random.default_rng(5)
    n = agg.NUMPY_ROWS + 1
    a = rng.integers(1, 4, n).astype(np.int64)
    b = np.zeros(n, np.int64)
    o = rng.choice(np.array([-2, -1, 0, 1, 2], np.int8), n, p=[0.1, 0.3, 0.2, 0.3, 0.1])
    q = rng.integers(0, 20000, n).astype(np.int64)
    models = ["base", "x", "y", "z"]
    big = rate_battles(a, b, o, q, models=models, baseline="base", rounds=10, seed=1)
    small = rate_battles(a[:-1], b[:-1], o[:-1], q[:-1], models=models, baseline="base", rounds=10, seed=1)
    for m in models[1:]:
        assert abs(big[m].rating - small[m].rating) < 0.05  # one game of 131,073 moves a rating this little
        assert abs(big[m].rating_upper - small[m].rating_upper) < 0.1
