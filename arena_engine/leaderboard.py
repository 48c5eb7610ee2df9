"""Leaderboards per scope (OVERALL, per dataset, per subset) from the judged games.

Each scope pools its games and rates them with the rating kernels (intervals with the query as the unit). The
EvalScope way (OVERALL = unweighted mean of the subset win rates and of their CI bounds) is an option
so its numbers can be reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .battles import Game, to_arrays
from .config import RatingConfig
from .rating import ModelRating, rate_battles

ScopeKind = Literal["overall", "dataset", "subset"]


@dataclass(frozen=True)
class Scope:
    kind: ScopeKind
    dataset: str | None = None
    subset: str | None = None

    @property
    def title(self) -> str:
        if self.kind == "overall":
            return "OVERALL"
        if self.kind == "dataset":
            return f"{self.dataset}"
        return f"{self.dataset} - {self.subset}"

    def contains(self, g: Game) -> bool:
        if self.kind == "overall":
            return True
        if self.kind == "dataset":
            return g.dataset == self.dataset
        return g.dataset == self.dataset and g.subset == self.subset


@dataclass(frozen=True)
class Entry:
    model: str
    winrate: float  # vs the baseline, 0..1
    lower: float
    upper: float
    rating: float  # Elo scale, baseline 1000
    rating_lower: float
    rating_upper: float
    games: int  # valid games involving the model in this scope
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Board:
    scope: Scope
    baseline: str
    entries: tuple[Entry, ...]  # sorted by win rate, best first
    games: int  # valid games in the scope
    method: str

    def entry(self, model: str) -> Entry:
        for e in self.entries:
            if e.model == model:
                return e
        raise KeyError(model)


def _entry(r: ModelRating) -> Entry:
    return Entry(r.name, r.winrate, r.winrate_lower, r.winrate_upper, r.rating, r.rating_lower, r.rating_upper,
                 r.n_battles, tuple(r.flags) + tuple(r.warnings))


def _sorted(entries: list[Entry], baseline: str) -> tuple[Entry, ...]:
    return tuple(sorted(entries, key=lambda e: (-e.winrate, e.model != baseline, e.model)))


def rate_scope(scope: Scope, games: Sequence[Game], models: Sequence[str], baseline: str, cfg: RatingConfig,
               seed: int) -> Board:
    """Rate the games of one scope; models without games in it are left out."""
    scoped = [g for g in games if scope.contains(g)]
    present = {g.candidate for g in scoped if g.outcome is not None} | {
        g.opponent for g in scoped if g.outcome is not None
    }
    names = [m for m in models if m in present or m == baseline]
    arrays = to_arrays(scoped, names)
    if len(arrays) == 0:
        return Board(scope, baseline, (), 0, cfg.method)
    ratings = rate_battles(
        arrays.model_a, arrays.model_b, arrays.outcome, arrays.query,
        models=names, baseline=baseline, rounds=cfg.rounds, seed=seed, ci=cfg.ci,
        strong_weight=cfg.strong_weight, method=cfg.method, interval=cfg.interval,
    )
    return Board(scope, baseline, _sorted([_entry(r) for r in ratings.per_model], baseline), len(arrays), cfg.method)


def _mean_board(scope: Scope, boards: Sequence[Board], baseline: str, method: str) -> Board:
    """EvalScope's way: the unweighted mean of the subset win rates and of their CI bounds."""
    models: dict[str, list[Entry]] = {}
    for b in boards:
        for e in b.entries:
            models.setdefault(e.model, []).append(e)

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    entries = [
        Entry(m, mean([e.winrate for e in es]), mean([e.lower for e in es]), mean([e.upper for e in es]),
              mean([e.rating for e in es]), mean([e.rating_lower for e in es]), mean([e.rating_upper for e in es]),
              sum(e.games for e in es), tuple(sorted({f for e in es for f in e.flags})))
        for m, es in models.items()
    ]
    return Board(scope, baseline, _sorted(entries, baseline), sum(b.games for b in boards), method + "+subset-mean")


def leaderboards(games: Sequence[Game], models: Sequence[str], baseline: str, cfg: RatingConfig, seed: int) -> list[Board]:
    """OVERALL, then one board per dataset, then one per subset, in first-seen order."""
    subsets: dict[tuple[str, str], None] = {}
    for g in games:
        subsets.setdefault((g.dataset, g.subset), None)
    datasets = list(dict.fromkeys(d for d, _ in subsets))
    subset_boards = [rate_scope(Scope("subset", d, s), games, models, baseline, cfg, seed) for d, s in subsets]
    if cfg.overall == "evalscope":
        dataset_boards = [
            _mean_board(Scope("dataset", d), [b for b in subset_boards if b.scope.dataset == d], baseline, cfg.method)
            for d in datasets
        ]
        overall = _mean_board(Scope("overall"), subset_boards, baseline, cfg.method)
    else:
        dataset_boards = [rate_scope(Scope("dataset", d), games, models, baseline, cfg, seed) for d in datasets]
        overall = rate_scope(Scope("overall"), games, models, baseline, cfg, seed)
    return [overall, *dataset_boards, *subset_boards]
