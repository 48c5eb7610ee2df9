"""Rating pipeline: aggregate battles, fit the point estimate, resample or sandwich, summarise."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from arena_engine.errors import ArgumentError
from arena_engine.rating import _bradley_terry as bt
from arena_engine.rating._aggregate import (
    Battles,
    Cells,
    aggregate,
    pair_cells,
    pair_totals,
    queries_per_model,
    unit_cells,
)
from arena_engine.rating._bt_bootstrap import cluster_bootstrap, star_bootstrap
from arena_engine.rating._canonical import by_content, content_order, reorder
from arena_engine.rating._connected import outside_component
from arena_engine.rating._score import score_bounds, t_quantile
from arena_engine.rating._threads import in_threads
from arena_engine.rating.results import ELO_BASE, ELO_SCALE

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
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
    warnings: list[tuple[str, ...]] | None = None


def _seeds(seed: int, purpose: int, n: int) -> npt.NDArray[np.uint32]:
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, purpose]).generate_state(max(n, 1))
    return state[:n].astype(np.uint32)


def _flags(battles: Battles, s2p: I64, wp: I64) -> tuple[list[tuple[str, ...]], F64, F64]:
    """Per model: flags of its point estimate, its weighted games, and min(weighted wins, losses)."""
    k, base, pi, pj = battles.k, battles.base, battles.pi, battles.pj
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
    if battles.is_star:  # a candidate fails Zermelo's condition only by winning or losing everything
        outside = (wins2 == 0) | (wins2 == 2 * played)
    else:
        outside = outside_component(pi, pj, 0.5 * s2p.astype(np.float64), wp.astype(np.float64), k, base)
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
    return flags, played.astype(np.float64), np.minimum(0.5 * wins2, played - 0.5 * wins2).astype(np.float64)


def _star_candidates(battles: Battles) -> tuple[I64, npt.NDArray[np.bool_]]:
    """Candidate of each pair, and whether the pair is counted from the candidate's side (i)."""
    cand_is_i = battles.pj == battles.base
    return np.where(cand_is_i, battles.pi, battles.pj), cand_is_i


def _star_point(battles: Battles, s2p: I64, wp: I64) -> F64:
    """logit((W + T/2) / N) per candidate; one virtual tie when that share is 0 or 1 (as in bt.fit)."""
    s2 = s2p.astype(np.float64)
    w = wp.astype(np.float64)
    degenerate = (s2 == 0) | (s2 == 2 * w)
    wins = np.where(degenerate, 0.5 * s2 + 0.5, 0.5 * s2)
    losses = np.where(degenerate, w - 0.5 * s2 + 0.5, w - 0.5 * s2)
    logit = np.log(wins) - np.log(losses)
    cand, cand_is_i = _star_candidates(battles)
    beta = np.zeros(battles.k)
    beta[cand] = np.where(cand_is_i, logit, -logit)
    return beta


def _general_point(battles: Battles, s2p: I64, wp: I64) -> tuple[F64, F64]:
    """BT MLE from zero, and the Cholesky factor of its information (empty if virtual ties were needed)."""
    k, base = battles.k, battles.base
    win = 0.5 * s2p.astype(np.float64)
    n = wp.astype(np.float64)
    beta = bt.fit(battles.pi, battles.pj, win, n, k, base, np.zeros(k), np.zeros((0, 0)))
    outside = outside_component(battles.pi, battles.pj, win, n, k, base)
    chol = np.zeros((0, 0))
    if k > 1 and not outside.any():
        chol = bt.cholesky(bt.hessian(battles.pi, battles.pj, n, beta, k, base))
    return beta, chol


def _star_samples(battles: Battles, cells: Cells, seed: int, rounds: int) -> F64:
    """Bootstrap strengths (rounds x k), each candidate drawn from its own cells and random stream."""
    cand, cand_is_i = _star_candidates(battles)
    model_seeds = _seeds(seed, _STREAM_BOOTSTRAP, battles.k)
    # within each pair, cells rarest first (ties by (s2, w) order): the commonest takes the rest
    pair_of_cell = np.repeat(np.arange(cells.ptr.size - 1), np.diff(cells.ptr))
    order = np.lexsort((np.arange(cells.count.size), cells.count, pair_of_cell)).astype(np.int64)
    pair_seeds = model_seeds[cand]
    logits = in_threads(
        lambda lo, hi: star_bootstrap(
            cells.ptr[lo : hi + 1], cells.s2, cells.w, cells.count, order, pair_seeds[lo:hi], rounds
        ),
        cand.size,
        work=float(cells.count.size) * rounds,
    )
    samples = np.zeros((rounds, battles.k))
    samples[:, cand] = np.where(cand_is_i[:, None], logits, -logits).T
    return samples


def _games(a: I64, o: I8, battles: Battles, strong_weight: int) -> tuple[I64, I64, I64, I64, I64]:
    """Games as (ptr over clusters, i, j, s2, w): clusters in content order (see _canonical), games
    within a cluster by (pair, s2, w)."""
    rows = np.flatnonzero(battles.pair >= 0)
    pair = battles.pair[rows].astype(np.int64)
    i = battles.pi[pair]
    j = battles.pj[pair]
    oc = o[rows].astype(np.int64)
    w = np.where(np.abs(oc) == 2, strong_weight, 1).astype(np.int64)
    s2a = (np.sign(oc) + 1) * w
    s2 = np.where(a[rows] == i, s2a, 2 * w - s2a).astype(np.int64)
    ptr, take = by_content(battles.cluster[rows], pair, s2, w)
    return ptr, i[take], j[take], s2[take], w[take]


def _content_ordered(battles: Battles) -> Battles:
    """The same battles with clusters in content order."""
    position = content_order(battles.ptr, battles.e_pair, battles.e_s2, battles.e_w)
    ptr, rows = reorder(battles.ptr, position)
    return dataclasses.replace(
        battles, ptr=ptr, e_pair=battles.e_pair[rows], e_s2=battles.e_s2[rows], e_w=battles.e_w[rows]
    )


MIN_QUERIES = 30  # a model seen in fewer queries gets the warning "few_queries"
UNKNOWN_LOGIT = 50.0  # score bounds of a disconnected model: +-50 logits, i.e. win rates (0, 1) to 1e-21
ELO_ORDERINGS = 100  # legacy online Elo: the point is the mean over this many shuffled orders


def rate(
    a: I64,
    b: I64,
    o: I8,
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
    online_elo = method == "elo-online"
    per_game = online_elo or method == "evalscope" or lengths is not None
    battles = aggregate(a, b, o, q, k=k, base=base, strong_weight=strong_weight, row_codes=per_game)
    n_battles = battles.n_battles
    s2p, wp = pair_totals(battles)
    flags, played, minority = _flags(battles, s2p, wp)
    queries = queries_per_model(battles)
    z = NormalDist().inv_cdf(0.5 + ci / 2.0)

    def summary(point: F64, lower: F64, upper: F64) -> Fit:
        """Elo-scale point and bounds; no rating (NaN) for a model without battles; warnings."""
        lower[base] = upper[base] = point[base]
        warnings: list[tuple[str, ...]] = []
        for m in range(k):
            notes: list[str] = []
            if m != base and played[m] == 0:
                point[m] = lower[m] = upper[m] = math.nan
            elif m != base:
                if queries[m] < MIN_QUERIES:
                    notes.append("few_queries")
                if lower[m] == upper[m]:
                    notes.append("zero_width")
            warnings.append(tuple(notes))
        return Fit(point, lower, upper, n_battles, flags, warnings)

    def percentile(point: F64, samples: F64 | None) -> Fit:
        if samples is None or samples.shape[0] == 0:
            return summary(point, point.copy(), point.copy())
        lo_q = (1.0 - ci) / 2.0
        lower, upper = np.quantile(samples, [lo_q, 1.0 - lo_q], axis=0)
        return summary(point, lower, upper)

    def from_se(beta: F64, se: F64) -> Fit:
        point = ELO_BASE + TO_ELO * beta
        if interval == "sandwich":
            return summary(point, point - z * TO_ELO * se, point + z * TO_ELO * se)
        usable = np.array([not f for f in flags]) & (queries >= 2)
        observed = np.array([0.0 if f == ("only_losses",) else 1.0 if f == ("only_wins",) else math.nan for f in flags])
        zq = np.array([t_quantile(0.5 + ci / 2.0, max(int(g) - 1, 1)) for g in queries])
        lo, hi = score_bounds(beta, se, played, minority, usable, zq, observed)
        # a virtual-tie point of a model with only losses (wins) can lie outside Wilson's interval for
        # an observed 0 (1) at a low confidence level: the interval always holds the point shown
        lo, hi = np.minimum(lo, beta), np.maximum(hi, beta)
        # no path of games to the baseline: the data say nothing about the rating against it
        cut_off = np.array([f == ("disconnected",) for f in flags])
        lo, hi = np.where(cut_off, -UNKNOWN_LOGIT, lo), np.where(cut_off, UNKNOWN_LOGIT, hi)
        return summary(point, ELO_BASE + TO_ELO * lo, ELO_BASE + TO_ELO * hi)

    if online_elo:
        from arena_engine.rating._elo import MAX_MODELS, elo_bootstrap, elo_mean

        if k > MAX_MODELS:
            raise ArgumentError(f"rate_battles: method 'elo-online' takes at most {MAX_MODELS} models, got {k}")
        ptr, gi, gj, gs2, gw = _games(a, o, battles, strong_weight)
        canon = np.arange(gi.size, dtype=np.int64)
        point = elo_mean(canon, gi, gj, gs2, gw, k, base, elo_k, _seeds(seed, _STREAM_ELO_ORDER, ELO_ORDERINGS))
        samples = None
        if rounds:
            seeds = _seeds(seed, _STREAM_BOOTSTRAP, rounds)
            samples = in_threads(
                lambda lo, hi: elo_bootstrap(ptr, canon, gi, gj, gs2, gw, k, base, elo_k, seeds[lo:hi]),
                rounds,
                work=float(gw.sum()) * rounds,
            )
        return percentile(point, samples)

    if lengths is not None:
        from arena_engine.rating._length import rate_length_controlled

        beta, beta_samples, se = rate_length_controlled(
            a, o, battles, lengths, strong_weight=strong_weight, rounds=rounds,
            seeds=_seeds(seed, _STREAM_BOOTSTRAP, rounds), interval=interval,
        )
        if se is not None:
            return from_se(beta, se)
        return percentile(ELO_BASE + TO_ELO * beta, None if beta_samples is None else ELO_BASE + TO_ELO * beta_samples)

    star = battles.is_star
    if star:
        beta, chol = _star_point(battles, s2p, wp), np.zeros((0, 0))
    else:
        beta, chol = _general_point(battles, s2p, wp)
    point = ELO_BASE + TO_ELO * beta

    if interval in ("sandwich", "score"):
        if star:
            from arena_engine.rating._aggregate import NUMPY_ROWS
            from arena_engine.rating._sandwich import star_sandwich_se, star_sandwich_se_numpy

            cells = pair_cells(battles.pi.size, battles.e_pair, battles.e_s2, battles.e_w)
            cand, cand_is_i = _star_candidates(battles)
            logit = np.where(cand_is_i, beta[cand], -beta[cand])
            se = np.zeros(k)
            star_se = star_sandwich_se_numpy if cells.s2.size <= NUMPY_ROWS else star_sandwich_se
            se[cand] = star_se(cells.ptr, cells.s2, cells.w, cells.count, logit)
        else:
            from arena_engine.rating._sandwich import sandwich_se

            ordered = _content_ordered(battles)  # float sums in an order fixed by content
            se = sandwich_se(
                ordered.ptr, ordered.e_pair, ordered.e_s2, ordered.e_w, battles.pi, battles.pj,
                wp.astype(np.float64), beta, k, base,
            )
        return from_se(beta, se)

    if rounds == 0:
        return percentile(point, None)
    seeds = _seeds(seed, _STREAM_BOOTSTRAP, rounds)
    if method == "evalscope":
        cells = unit_cells(a, o, battles, strong_weight)
        if star:
            samples = _star_samples(battles, cells, seed, rounds)
        else:
            empty = np.zeros(1, np.int64), np.zeros(0, np.int64)
            samples = in_threads(
                lambda lo, hi: cluster_bootstrap(
                    empty[0], empty[1], empty[1], empty[1], cells.ptr, cells.s2, cells.w, cells.count,
                    battles.pi, battles.pj, k, base, seeds[lo:hi], beta, chol,
                ),
                rounds,
                work=float(cells.count.size + battles.pi.size) * rounds,
            )
    elif star:
        cells = pair_cells(battles.pi.size, battles.e_pair, battles.e_s2, battles.e_w)
        samples = _star_samples(battles, cells, seed, rounds)
    else:
        listed, cells = _split_single_entry_clusters(_content_ordered(battles))
        samples = in_threads(
            lambda lo, hi: cluster_bootstrap(
                *listed, cells.ptr, cells.s2, cells.w, cells.count, battles.pi, battles.pj, k, base,
                seeds[lo:hi], beta, chol,
            ),
            rounds,
            work=float(listed[1].size + cells.count.size + battles.pi.size) * rounds,
        )
    return percentile(point, ELO_BASE + TO_ELO * samples)


def _split_single_entry_clusters(battles: Battles) -> tuple[tuple[I64, I64, I64, I64], Cells]:
    """Clusters touching one pair, grouped into cells when that makes far fewer draws; the rest listed."""
    sizes = np.diff(battles.ptr)
    single = sizes == 1
    n_pairs = battles.pi.size
    if single.any():
        first = battles.ptr[:-1][single]
        cells = pair_cells(n_pairs, battles.e_pair[first], battles.e_s2[first], battles.e_w[first])
        if cells.count.size * 6 < first.size:
            entry_of_multi = np.repeat(~single, sizes)
            ptr = np.concatenate([[0], np.cumsum(sizes[~single])]).astype(np.int64)
            listed = (
                ptr, battles.e_pair[entry_of_multi], battles.e_s2[entry_of_multi], battles.e_w[entry_of_multi]
            )
            return listed, cells
    none = np.zeros(0, np.int64)
    no_cells = Cells(ptr=np.zeros(n_pairs + 1, np.int64), s2=none, w=none, count=none)
    return (battles.ptr, battles.e_pair, battles.e_s2, battles.e_w), no_cells
