"""Rating pipeline: aggregate battles, fit the point estimate, resample or sandwich, summarise."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from arena_engine.rating import _bradley_terry as bt
from arena_engine.rating._aggregate import Cells, Games, canonical_games, pair_cells, pair_totals
from arena_engine.rating._elo import elo_bootstrap, elo_point
from arena_engine.rating._sandwich import sandwich_se, star_sandwich_se
from arena_engine.rating.results import ELO_BASE, ELO_SCALE

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
TO_ELO = ELO_SCALE / math.log(10.0)

# purposes that seed independent random streams from the one user seed
_STREAM_BOOTSTRAP = 1
_STREAM_ELO_ORDER = 2


@dataclass(frozen=True)
class Fit:
    rating: F64
    lower: F64
    upper: F64
    n_battles: I64
    flags: list[tuple[str, ...]]


def _seeds(seed: int, purpose: int, n: int) -> npt.NDArray[np.uint32]:
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, purpose]).generate_state(max(n, 1))
    return state[:n].astype(np.uint32)


def _flags(games: Games, s2p: I64, wp: I64) -> list[tuple[str, ...]]:
    k, base, pi, pj = games.k, games.base, games.pi, games.pj
    wins2 = np.bincount(pi, weights=s2p, minlength=k) + np.bincount(pj, weights=2 * wp - s2p, minlength=k)
    played = np.bincount(pi, weights=wp, minlength=k) + np.bincount(pj, weights=wp, minlength=k)
    linked = np.zeros(k, dtype=bool)  # undirected component of the baseline
    linked[base] = True
    while True:
        before = int(linked.sum())
        linked[pj[linked[pi]]] = True
        linked[pi[linked[pj]]] = True
        if int(linked.sum()) == before:
            break
    outside = bt.outside_component(pi, pj, 0.5 * s2p.astype(np.float64), wp.astype(np.float64), k, base)
    flags: list[tuple[str, ...]] = []
    for m in range(k):
        if m == base:
            flags.append(())
        elif played[m] == 0:
            flags.append(("no_battles",))
        elif not linked[m]:
            flags.append(("disconnected",))
        elif wins2[m] == 2 * played[m]:
            flags.append(("only_wins",))
        elif wins2[m] == 0:
            flags.append(("only_losses",))
        elif outside[m]:
            flags.append(("separated",))
        else:
            flags.append(())
    return flags


def _star_candidates(games: Games) -> tuple[I64, npt.NDArray[np.bool_]]:
    """Candidate of each pair, and whether the pair is stored from the candidate's side (i)."""
    cand_is_i = games.pj == games.base
    return np.where(cand_is_i, games.pi, games.pj), cand_is_i


def _star_point(games: Games, s2p: I64, wp: I64) -> F64:
    beta = np.zeros(games.k)
    cand, cand_is_i = _star_candidates(games)
    for p in range(cand.size):
        logit = bt.star_logit(int(s2p[p]), int(wp[p]))
        beta[cand[p]] = logit if cand_is_i[p] else -logit
    return beta


def _general_point(games: Games, s2p: I64, wp: I64) -> tuple[F64, F64]:
    """BT MLE from zero, and the Cholesky factor of its information (empty if virtual ties were needed)."""
    k, base = games.k, games.base
    win = 0.5 * s2p.astype(np.float64)
    n = wp.astype(np.float64)
    beta = bt.fit(games.pi, games.pj, win, n, k, base, np.zeros(k), np.zeros((0, 0)))
    outside = bt.outside_component(games.pi, games.pj, win, n, k, base)
    chol = np.zeros((0, 0))
    if k > 1 and not outside.any():
        chol = bt.cholesky(bt.hessian(games.pi, games.pj, n, beta, k, base))
    return beta, chol


def _unit_rows(games: Games) -> Games:
    """Every weighted copy of every game as its own cluster: EvalScope's game-row bootstrap."""
    canon = _canonical_order(games)
    units = np.repeat(canon, games.w[canon])
    s2 = games.s2[units] // games.w[units]
    return Games(
        k=games.k, base=games.base, ptr=np.arange(units.size + 1, dtype=np.int64), i=games.i[units],
        j=games.j[units], s2=s2, w=np.ones(units.size, np.int64), row=games.row[units],
        pair=games.pair[units], pi=games.pi, pj=games.pj,
    )


def _canonical_order(games: Games) -> I64:
    """Games sorted by (cluster, i, j, s2, w): an order that does not depend on the input order."""
    cluster = np.repeat(np.arange(games.n_clusters), np.diff(games.ptr))
    return np.lexsort((games.w, games.s2, games.j, games.i, cluster)).astype(np.int64)


def rate(
    a: I64,
    b: I64,
    o: npt.NDArray[np.int8],
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
    games = canonical_games(a, b, o, q, k=k, base=base, strong_weight=strong_weight)
    n_battles = np.bincount(games.i, minlength=k) + np.bincount(games.j, minlength=k)
    s2p, wp = pair_totals(games)
    flags = _flags(games, s2p, wp)

    def summary(point: F64, samples: F64 | None = None, se: F64 | None = None) -> Fit:
        """Point ratings (Elo scale) with percentile bounds of `samples` or normal bounds from `se`."""
        if se is not None:
            z = NormalDist().inv_cdf(0.5 + ci / 2.0)
            return Fit(point, point - z * TO_ELO * se, point + z * TO_ELO * se, n_battles, flags)
        if samples is None or samples.shape[0] == 0:
            return Fit(point, point.copy(), point.copy(), n_battles, flags)
        lo_q = (1.0 - ci) / 2.0
        lower, upper = np.quantile(samples, [lo_q, 1.0 - lo_q], axis=0)
        lower[base] = upper[base] = point[base]
        return Fit(point, lower, upper, n_battles, flags)

    if method == "elo":
        canon = _canonical_order(games)
        order_seed = _seeds(seed, _STREAM_ELO_ORDER, 1)[0]
        point = elo_point(canon, games.i, games.j, games.s2, games.w, k, base, elo_k, order_seed)
        samples = None
        if rounds:
            samples = elo_bootstrap(
                games.ptr, canon, games.i, games.j, games.s2, games.w, k, base, elo_k,
                _seeds(seed, _STREAM_BOOTSTRAP, rounds),
            )
        return summary(point, samples)

    if lengths is not None:
        from arena_engine.rating._length import rate_length_controlled

        beta, beta_samples, se = rate_length_controlled(
            games, lengths, rounds=rounds, seeds=_seeds(seed, _STREAM_BOOTSTRAP, rounds), interval=interval
        )
        point = ELO_BASE + TO_ELO * beta
        return summary(point, None if beta_samples is None else ELO_BASE + TO_ELO * beta_samples, se)

    star = games.is_star
    if star:
        beta = _star_point(games, s2p, wp)
    else:
        beta, chol = _general_point(games, s2p, wp)

    if interval == "sandwich":
        if star:
            cells = pair_cells(games)
            cand, cand_is_i = _star_candidates(games)
            logit = np.where(cand_is_i, beta[cand], -beta[cand])
            se = np.zeros(k)
            se[cand] = star_sandwich_se(cells.ptr, cells.s2, cells.w, cells.count, logit)
        else:
            se = sandwich_se(
                games.ptr, games.i, games.j, games.s2, games.w, games.pi, games.pj,
                wp.astype(np.float64), beta, k, base,
            )
        return summary(ELO_BASE + TO_ELO * beta, se=se)

    if rounds == 0:
        return summary(ELO_BASE + TO_ELO * beta)
    resampled = _unit_rows(games) if method == "evalscope" else games
    if star:
        samples = _star_samples(resampled, pair_cells(resampled), seed, rounds)
    else:
        samples = bt.cluster_bootstrap(
            resampled.ptr, resampled.pair, resampled.s2, resampled.w, games.pi, games.pj, k, base,
            _seeds(seed, _STREAM_BOOTSTRAP, rounds), beta, chol,
        )
    return summary(ELO_BASE + TO_ELO * beta, ELO_BASE + TO_ELO * samples)


def _star_samples(games: Games, cells: Cells, seed: int, rounds: int) -> F64:
    """Bootstrap strengths (rounds x k), each candidate drawn from its own cells and random stream."""
    cand, cand_is_i = _star_candidates(games)
    model_seeds = _seeds(seed, _STREAM_BOOTSTRAP, games.k)
    logits = bt.star_bootstrap(cells.ptr, cells.s2, cells.w, cells.count, model_seeds[cand], rounds)
    samples = np.zeros((rounds, games.k))
    samples[:, cand] = np.where(cand_is_i[:, None], logits, -logits).T
    return samples
