"""Leaderboards per scope (OVERALL, per dataset, per subset) from the judged games.

Each scope pools its games and rates them with the rating kernels (intervals with the query as the unit). The
EvalScope way (OVERALL = unweighted mean of the subset win rates and of their CI bounds) is an option
so its numbers can be reproduced.

Beside each board's ranking stand its judge diagnostics (:class:`~arena_engine.reliability.BoardDiagnostics`:
exclusions, position consistency, battles won and lost in both orders) and whether the verdicts support
the ranking; :func:`reliability_warnings` and :func:`gate_failures` give every output the same text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from .battles import Game, GameArrays, ValidColumns, to_arrays
from .config import RatingConfig
from .rating import ModelRating, rate_battles
from .reliability import EMPTY_DIAGNOSTICS, BoardDiagnostics, ScopeKey, diagnose_scopes, percent

ScopeKind = Literal["overall", "dataset", "subset"]



@dataclass(frozen=True)
class Scope:
    kind: ScopeKind
    dataset: str | None = None
    subset: str | None = None
    judge: str | None = None  # one judge's own board in a panel (combine = "each", and the panel section)

    @property
    def title(self) -> str:
        own = f"judge {self.judge}: " if self.judge is not None else ""
        if self.kind == "overall":
            return own + "OVERALL"
        if self.kind == "dataset":
            return own + f"{self.dataset}"
        return own + f"{self.dataset} - {self.subset}"

    @property
    def key(self) -> ScopeKey:
        """The scope as :func:`~arena_engine.reliability.diagnose_scopes` keys it."""
        return (self.dataset, self.subset)

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
    diagnostics: BoardDiagnostics = EMPTY_DIAGNOSTICS

    def entry(self, model: str) -> Entry:
        for e in self.entries:
            if e.model == model:
                return e
        raise KeyError(model)

    @property
    def unsupported_reasons(self) -> tuple[str, ...]:
        return self.diagnostics.unsupported_reasons

    @property
    def supported(self) -> bool:
        return self.diagnostics.supported




def with_contradictions(d: BoardDiagnostics, entries: Sequence[Entry], baseline: str) -> BoardDiagnostics:
    """``d`` with the models whose pooled win rate is significantly off 50% in one direction while their
    battles won and lost in both orders say the other (or nothing)."""
    out = []
    for e in entries:
        m = d.model(e.model)
        if e.model == baseline or m is None:
            continue
        if (e.lower > 0.5 and m.won_both <= m.lost_both) or (e.upper < 0.5 and m.won_both >= m.lost_both):
            out.append(e.model)
    return replace(d, contradictions=tuple(out))


def _entry(r: ModelRating) -> Entry:
    return Entry(r.name, r.winrate, r.winrate_lower, r.winrate_upper, r.rating, r.rating_lower, r.rating_upper,
                 r.n_battles, tuple(r.flags) + tuple(r.warnings))


def _sorted(entries: list[Entry], baseline: str) -> tuple[Entry, ...]:
    return tuple(sorted(entries, key=lambda e: (-e.winrate, e.model != baseline, e.model)))


def rate_scope(scope: Scope, games: Sequence[Game], models: Sequence[str], baseline: str, cfg: RatingConfig,
               seed: int, diagnostics: BoardDiagnostics | None = None) -> Board:
    """Rate the games of one scope; models without games in it are left out.

    ``diagnostics`` are the scope's (from :func:`diagnose_scopes`) when the caller has them already.
    """
    scoped = [g for g in games if scope.contains(g)]
    if diagnostics is None:
        diagnostics = diagnose_scopes(scoped).get(scope.key, EMPTY_DIAGNOSTICS)
    present = {g.candidate for g in scoped if g.outcome is not None} | {
        g.opponent for g in scoped if g.outcome is not None
    }
    names = [m for m in models if m in present or m == baseline]
    arrays = to_arrays(scoped, names)
    return _board(scope, arrays, baseline, cfg, seed, diagnostics)


def _board(scope: Scope, arrays: GameArrays, baseline: str, cfg: RatingConfig, seed: int,
           diagnostics: BoardDiagnostics) -> Board:
    """Rate one scope's arrays (codes into ``arrays.models``) into its board."""
    if len(arrays) == 0:
        return Board(scope, baseline, (), 0, cfg.method, diagnostics)
    ratings = rate_battles(
        arrays.model_a, arrays.model_b, arrays.outcome, arrays.query,
        models=list(arrays.models), baseline=baseline, rounds=cfg.rounds, seed=seed, ci=cfg.ci,
        strong_weight=cfg.strong_weight, method=cfg.method, interval=cfg.interval,
    )
    entries = _sorted([_entry(r) for r in ratings.per_model], baseline)
    return Board(scope, baseline, entries, len(arrays), cfg.method, with_contradictions(diagnostics, entries, baseline))


def _rate_columns(scope: Scope, cols: ValidColumns, baseline: str, cfg: RatingConfig, seed: int,
                  diagnostics: BoardDiagnostics) -> Board:
    """:func:`rate_scope` on columns made once for every scope: the same arrays, without a pass over
    the game objects per scope."""
    rows = cols.mask(None if scope.kind == "overall" else scope.dataset,
                     scope.subset if scope.kind == "subset" else None)
    present = cols.present(rows)
    names = [m for m in cols.models if m in present or m == baseline]
    arrays = cols.scope_arrays(rows, names)
    return _board(scope, arrays, baseline, cfg, seed, diagnostics)


def _mean_board(scope: Scope, boards: Sequence[Board], baseline: str, method: str,
                diagnostics: BoardDiagnostics) -> Board:
    """EvalScope's way: the unweighted mean of the subset win rates and of their CI bounds (the
    diagnostics are the pooled scope's: the same verdicts, whatever way they are averaged)."""
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
    ranked = _sorted(entries, baseline)
    return Board(scope, baseline, ranked, sum(b.games for b in boards), method + "+subset-mean",
                 with_contradictions(diagnostics, ranked, baseline))


def leaderboards(games: Sequence[Game], models: Sequence[str], baseline: str, cfg: RatingConfig, seed: int) -> list[Board]:
    """OVERALL, then one board per dataset, then one per subset, in first-seen order."""
    from .game_columns import GameColumns

    subsets: dict[tuple[str, str], None] = {}
    if isinstance(games, GameColumns):
        subsets = dict.fromkeys(games.where_codes()[0])
    else:
        for g in games:
            subsets.setdefault((g.dataset, g.subset), None)
    datasets = list(dict.fromkeys(d for d, _ in subsets))
    diag = diagnose_scopes(games)
    cols = ValidColumns.of(games, models)

    def pooled(scope: Scope) -> BoardDiagnostics:
        return diag.get(scope.key, EMPTY_DIAGNOSTICS)

    subset_boards = [_rate_columns(Scope("subset", d, s), cols, baseline, cfg, seed, pooled(Scope("subset", d, s)))
                     for d, s in subsets]
    if cfg.overall == "evalscope":
        dataset_boards = [
            _mean_board(Scope("dataset", d), [b for b in subset_boards if b.scope.dataset == d], baseline, cfg.method,
                        pooled(Scope("dataset", d)))
            for d in datasets
        ]
        overall = _mean_board(Scope("overall"), subset_boards, baseline, cfg.method, pooled(Scope("overall")))
    else:
        dataset_boards = [_rate_columns(Scope("dataset", d), cols, baseline, cfg, seed, pooled(Scope("dataset", d)))
                          for d in datasets]
        overall = _rate_columns(Scope("overall"), cols, baseline, cfg, seed, pooled(Scope("overall")))
    return [overall, *dataset_boards, *subset_boards]


def scope_name(scope: Scope) -> str:
    """How warnings and the diagnostics tables name a scope: OVERALL, dataset D, subset D - S."""
    return scope.title if scope.kind == "overall" else f"{scope.kind} {scope.title}"


def _title(board: Board) -> str:
    return scope_name(board.scope)


def _reasons_text(d: BoardDiagnostics) -> str:
    return "; ".join(f"{kind} {n}" for kind, n in d.excluded_by_reason)


def reliability_warnings(boards: Sequence[Board]) -> list[str]:
    """One line per finding the terminal shows on stderr: a scope with more than
    :data:`WARN_EXCLUDED_SHARE` excluded games, and a scope whose ranking is unsupported. (A board's
    ``notes`` stay in the leaderboard text: they qualify a ranking, they do not warn about it.)"""
    out = []
    for b in boards:
        d = b.diagnostics
        if d.warn_excluded:
            out.append(f"WARNING: {_title(b)}: {d.excluded} of {d.games} games excluded "
                       f"({percent(d.excluded_share)}): {_reasons_text(d)}")
        if not d.supported:
            out.append(f"WARNING: {_title(b)}: the ranking is NOT SUPPORTED by the judge's verdicts: "
                       + "; ".join(d.unsupported_reasons))
    return out


def gate_failures(boards: Sequence[Board]) -> list[str]:
    """Why the run's result cannot be used as a ranking (the CLI then exits with 1): a scope that rated
    no game, or an unsupported OVERALL ranking. Empty when the result stands."""
    out = [f"{_title(b)}: no game was rated" for b in boards if b.diagnostics.no_rated_game]
    overall = next((b for b in boards if b.scope.kind == "overall"), None)
    if overall is not None and not overall.diagnostics.no_rated_game and not overall.supported:
        out.append("the OVERALL ranking is not supported by the judge's verdicts: "
                   + "; ".join(overall.unsupported_reasons))
    return out
