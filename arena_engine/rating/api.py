"""Public entry point: battles as numpy arrays in, `Ratings` out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from arena_engine.errors import ArgumentError
from arena_engine.rating.results import ELO_BASE, ELO_SCALE, ModelRating, Ratings

Method = Literal["bt", "elo", "evalscope", "elo-online"]
Interval = Literal["score", "bootstrap", "sandwich"]

MAX_ROUNDS = 1_000_000
MAX_ELO_K = 64.0  # one game moving a rating by more than 64 points is a typo (K = 1e6 overflows)

LOG10 = math.log(10.0)


def _as_int_array(name: str, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ArgumentError(f"rate_battles: {name} must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ArgumentError(f"rate_battles: {name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _validate(
    model_a: npt.ArrayLike,
    model_b: npt.ArrayLike,
    outcome: npt.ArrayLike,
    query: npt.ArrayLike,
    models: Sequence[str],
    baseline: str | int,
    rounds: int,
    ci: float,
    strong_weight: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int8], npt.NDArray[np.int64], int]:
    names = tuple(models)
    if not names:
        raise ArgumentError("rate_battles: models is empty; pass the names that model_a/model_b index into")
    if len(set(names)) != len(names):
        raise ArgumentError("rate_battles: models holds a name twice")
    a = _as_int_array("model_a", model_a)
    b = _as_int_array("model_b", model_b)
    o = np.asarray(outcome)
    if o.ndim != 1 or (o.size and not np.issubdtype(o.dtype, np.integer)):
        raise ArgumentError(f"rate_battles: outcome must be a 1-D integer array, got {o.dtype} of shape {o.shape}")
    q = _as_int_array("query", query)
    n = a.size
    for name, arr in (("model_b", b), ("outcome", o), ("query", q)):
        if arr.size != n:
            raise ArgumentError(f"rate_battles: model_a has {n} rows but {name} has {arr.size}")
    k = len(names)
    for name, arr in (("model_a", a), ("model_b", b)):
        if n and (int(arr.min()) < 0 or int(arr.max()) >= k):
            bad = int(np.flatnonzero((arr < 0) | (arr >= k))[0])
            raise ArgumentError(
                f"rate_battles: {name}[{bad}] = {int(arr[bad])} is not an index into models (0..{k - 1})"
            )
    if n and (int(o.min()) < -2 or int(o.max()) > 2):
        bad = int(np.flatnonzero((o < -2) | (o > 2))[0])
        raise ArgumentError(f"rate_battles: outcome[{bad}] = {int(o[bad])}; expected one of -2, -1, 0, 1, 2")
    o8 = o.astype(np.int8, copy=False)
    if isinstance(baseline, str):
        if baseline not in names:
            raise ArgumentError(f"rate_battles: baseline {baseline!r} is not one of models")
        base = names.index(baseline)
    else:
        base = int(baseline)
        if not 0 <= base < k:
            raise ArgumentError(f"rate_battles: baseline index {base} is not an index into models (0..{k - 1})")
    _check_int("rounds", rounds, 0, MAX_ROUNDS)
    _check_int("strong_weight", strong_weight, 1, 1000)
    if isinstance(ci, bool) or not isinstance(ci, (int, float, np.floating)) or not 0.0 < float(ci) < 1.0:
        raise ArgumentError(f"rate_battles: ci must be a number in (0, 1), got {ci!r}")
    return a, b, o8, q, base


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentError(f"rate_battles: {name} must be an integer, got {value!r}")
    if not lo <= int(value) <= hi:
        raise ArgumentError(f"rate_battles: {name} must be in [{lo}, {hi}], got {value}")


def _check_options(method: str, interval: str | None, seed: object, elo_k: object, has_lengths: bool) -> str:
    """Validate the method options; return the interval (None: "score", or "bootstrap" where only that exists)."""
    if method not in ("bt", "elo", "evalscope", "elo-online"):
        raise ArgumentError(f"rate_battles: method must be 'bt', 'elo', 'evalscope' or 'elo-online', got {method!r}")
    resampled_only = method in ("evalscope", "elo-online")
    if interval is None:
        interval = "bootstrap" if resampled_only else "score"
    if interval not in ("score", "bootstrap", "sandwich"):
        raise ArgumentError(f"rate_battles: interval must be 'score', 'bootstrap' or 'sandwich', got {interval!r}")
    if interval != "bootstrap" and resampled_only:
        raise ArgumentError(f"rate_battles: interval={interval!r} needs method='bt' or 'elo' ({method!r} only resamples)")
    if has_lengths and method not in ("bt", "elo"):
        raise ArgumentError("rate_battles: lengths (length control) needs method='bt' or 'elo'")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ArgumentError(f"rate_battles: seed must be an integer, got {seed!r}")
    if isinstance(elo_k, bool) or not isinstance(elo_k, (int, float, np.integer, np.floating)):
        raise ArgumentError(f"rate_battles: elo_k must be a number, got {elo_k!r}")
    if not (math.isfinite(float(elo_k)) and 0.0 < float(elo_k) <= MAX_ELO_K):
        raise ArgumentError(f"rate_battles: elo_k must be a finite number in (0, {MAX_ELO_K:g}], got {elo_k!r}")
    return interval


def rate_battles(
    model_a: npt.ArrayLike,
    model_b: npt.ArrayLike,
    outcome: npt.ArrayLike,
    query: npt.ArrayLike,
    *,
    models: Sequence[str],
    baseline: str | int,
    rounds: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    strong_weight: int = 3,
    method: Method = "bt",
    interval: Interval | None = None,
    lengths: npt.ArrayLike | None = None,
    elo_k: float = 4.0,
) -> Ratings:
    """Rate models from pairwise battles (docs/spec.md, section 3; the statistics: docs/rating.md).

    `model_a`/`model_b` index into `models`; `outcome` is from A's view (2 = A>>B, 1 = A>B, 0 = tie,
    -1 = B>A, -2 = B>>A); `query` is the cluster id: all games of one query (both orders, every
    pair, every strong copy) are resampled together. A strong verdict counts `strong_weight` times; a
    tie counts half a win for each side. Rows where a model meets itself are ignored.

    method:   "bt"         Bradley-Terry MLE; with one baseline (every pair involves it) this is
                           exactly p = (W + T/2) / N per candidate.
              "elo"        the same Bradley-Terry fit: ratings are always on the Elo scale (as
                           Arena-Hard and LMArena report "Elo"); identical numbers to "bt".
              "evalscope"  same point estimates; intervals from resampling game rows (each strong copy
                           on its own), per candidate against the baseline, as EvalScope/Arena-Hard do.
                           Known to be too narrow when games of a query are correlated.
              "elo-online" LEGACY online Elo (K = `elo_k`): the mean over 100 shuffled orders of the
                           games; its win rates are Elo's predicted probability against the baseline,
                           not the observed share, and its bounds are the spread of a reshuffled cluster
                           bootstrap (`interval` reported as "spread"), which is not a confidence interval.
    interval: "score"      (default for bt/elo) Wilson's score interval on the cluster-robust effective
                           number of games: honest near 0% and 100% and on small samples; no
                           resampling, so it does not depend on `seed` or `rounds`.
              "bootstrap"  percentile interval of `rounds` cluster resamples (`rounds=0`: bounds =
                           point); clusters are resampled in an order fixed by their content, so
                           renumbering queries or reordering rows gives bit-identical results.
              "sandwich"   cluster-robust normal (Wald) interval on the logit scale.
    lengths:  optional (n_rows, 2) lengths of A's and B's answers: length-controlled ratings
              (the rating at equal lengths; see _length.py).

    Ratings are on the Elo scale (400 log10 odds) with the baseline at 1000; win rates are against
    the baseline (exactly 0.5 for it). Results depend only on the multiset of rows and the seed, not
    on row order, query numbering or thread count. Flags describe the point estimate: "only_wins",
    "only_losses", "disconnected" (no path of games to the baseline), "separated" (connected, but
    Zermelo's condition fails) get the estimate of one added virtual tied game against the baseline,
    e.g. (W + 1/2) / (N + 1) for a model with only wins; "no_battles" gets no rating at all (NaN).
    Warnings describe the interval: "few_queries" (the model plays in fewer than 30 queries: the
    interval rests on few independent units) and "zero_width" (lower == upper: no interval).
    """
    from arena_engine.rating import _pipeline  # local import: numba loads on first use

    a, b, o, q, base = _validate(model_a, model_b, outcome, query, models, baseline, rounds, ci, strong_weight)
    chosen = _check_options(method, interval, seed, elo_k, lengths is not None)
    names = tuple(models)
    lens = None
    if lengths is not None:
        lens = np.asarray(lengths, dtype=np.float64)
        if lens.shape != (a.size, 2):
            raise ArgumentError(
                f"rate_battles: lengths must have shape (n_rows, 2) = ({a.size}, 2) holding the lengths "
                f"of A's and B's answers; got {lens.shape}"
            )
        if not np.all(np.isfinite(lens)):
            raise ArgumentError("rate_battles: lengths holds NaN or infinite values")
    fit = _pipeline.rate(
        a, b, o, q, k=len(names), base=base, rounds=rounds, seed=seed, ci=ci, strong_weight=strong_weight,
        method=method, interval=chosen, lengths=lens, elo_k=float(elo_k),
    )
    warnings = fit.warnings or [()] * len(names)
    per_model = []
    for m, name in enumerate(names):
        per_model.append(
            ModelRating(
                name=name,
                rating=float(fit.rating[m]),
                rating_lower=float(fit.lower[m]),
                rating_upper=float(fit.upper[m]),
                winrate=_winrate(fit.rating[m], m == base),
                winrate_lower=_winrate(fit.lower[m], m == base),
                winrate_upper=_winrate(fit.upper[m], m == base),
                n_battles=int(fit.n_battles[m]),
                flags=fit.flags[m],
                warnings=warnings[m],
            )
        )
    return Ratings(
        models=names,
        baseline=names[base],
        method=method,
        rounds=rounds if chosen == "bootstrap" else 0,
        ci=ci,
        seed=seed,
        per_model=tuple(per_model),
        interval="spread" if method == "elo-online" else chosen,
        length_controlled=lens is not None,
    )


def _winrate(rating: float, is_base: bool) -> float:
    if is_base:
        return 0.5
    if math.isnan(rating):
        return math.nan
    return float(1.0 / (1.0 + 10.0 ** ((ELO_BASE - rating) / ELO_SCALE)))


def evalscope_overall(subsets: Sequence[Ratings]) -> Ratings:
    """EvalScope's OVERALL: per model, the unweighted mean over subsets of the win rate and of its bounds.

    A model is averaged over the subsets where it has battles (the baseline always has 0.5).
    Ratings are the Elo-scale values of the mean win rates; `n_battles` is summed; flags are merged.
    """
    if not subsets:
        raise ArgumentError("evalscope_overall: no subset ratings given")
    first = subsets[0]
    for other in subsets[1:]:
        if other.models != first.models or other.baseline != first.baseline:
            raise ArgumentError("evalscope_overall: every subset must rate the same models against the same baseline")
    per_model = []
    for m, name in enumerate(first.models):
        rows = [s.per_model[m] for s in subsets]
        used = [r for r in rows if r.n_battles > 0 or name == first.baseline] or rows
        wr = float(np.mean([r.winrate for r in used]))
        lo = float(np.mean([r.winrate_lower for r in used]))
        hi = float(np.mean([r.winrate_upper for r in used]))
        flags = tuple(sorted({f for r in rows for f in r.flags}))
        per_model.append(
            ModelRating(
                name=name,
                rating=_rating(wr),
                rating_lower=_rating(lo),
                rating_upper=_rating(hi),
                winrate=wr,
                winrate_lower=lo,
                winrate_upper=hi,
                n_battles=sum(r.n_battles for r in rows),
                flags=flags,
            )
        )
    return Ratings(
        models=first.models,
        baseline=first.baseline,
        method=first.method,
        rounds=first.rounds,
        ci=first.ci,
        seed=first.seed,
        per_model=tuple(per_model),
        interval=first.interval,
        length_controlled=first.length_controlled,
    )


def _rating(winrate: float) -> float:
    w = min(max(winrate, 1e-12), 1.0 - 1e-12)
    return ELO_BASE + ELO_SCALE * math.log10(w / (1.0 - w))
