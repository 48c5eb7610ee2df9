"""Leaderboards per scope (OVERALL, per dataset, per subset) from the judged games.

Each scope pools its games and rates them with the rating kernels (cluster bootstrap over queries). The
EvalScope way (OVERALL = unweighted mean of the subset win rates and of their CI bounds) is an option
so its numbers can be reproduced.

Beside each board's ranking stand its :class:`BoardDiagnostics`: how many games the scope played, how
many were rated and why the others were excluded, how often the judge's two orders of a battle agree
(position consistency), which position the disagreeing battles lean to, and per model the share of
battles it won (and lost) in both orders. Every report reads these same figures.

A board's ranking is *unsupported* by the judge's verdicts when
- no game of the scope was rated, or more than :data:`MAX_EXCLUDED_SHARE` of its games were excluded;
- fewer than :data:`MIN_POSITION_CONSISTENCY` of its battles agree across the two orders **and** the
  disagreements lean to one position: at least :data:`MIN_POSITION_LEAN` of them favour the same
  position (A or B), beyond chance (two-sided binomial test against an even split, p <
  :data:`POSITION_LEAN_P`). The verdicts then follow where an answer stands, not what it says. An
  honest judge comparing close answers also disagrees with itself often (the simulator's judge agrees
  in 45-58% of battles even between models 0.8-1.2 logits apart), but its disagreements split evenly
  between the positions; that case is a note, not a flag;
- or a model's pooled win rate is significantly above 50% (its CI excludes 50%) while it won no more
  battles in both orders than it lost in both (or the mirror case): the pooled games and the battle
  scores contradict each other (docs/rating.md says how each is computed).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal

from .battles import Game, reason_kind, to_arrays
from .config import RatingConfig
from .rating import ModelRating, rate_battles

ScopeKind = Literal["overall", "dataset", "subset"]

#: Below this share of battles whose two orders agree on win/tie/loss, and with the disagreements
#: leaning to one position (below), a board's ranking is unsupported.
MIN_POSITION_CONSISTENCY = 0.5
#: The share of disagreeing battles that must favour the same position for a position-driven judge.
MIN_POSITION_LEAN = 0.75
#: ... and the lean must be beyond chance: two-sided binomial p-value against an even split below this.
POSITION_LEAN_P = 0.01
#: Above this share of excluded games (no usable verdict), a board's ranking is unsupported.
MAX_EXCLUDED_SHARE = 0.20
#: Above this share of excluded games, the terminal warns about the scope (the ranking still stands).
WARN_EXCLUDED_SHARE = 0.05


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
class ModelDiagnostics:
    """One model's battles in a scope, both orders rated, from the model's side."""

    model: str
    battles: int  # battles of the model whose two games were both rated
    won_both: int  # the model won in both orders
    lost_both: int  # the model lost in both orders

    @property
    def won_both_share(self) -> float | None:
        return self.won_both / self.battles if self.battles else None

    @property
    def lost_both_share(self) -> float | None:
        return self.lost_both / self.battles if self.battles else None


@dataclass(frozen=True)
class BoardDiagnostics:
    """How far a scope's verdicts support its ranking (see the module docstring for the thresholds)."""

    games: int  # games of the scope: rated and excluded
    rated: int  # games with a verdict, the ones the ranking is made of
    excluded_by_reason: tuple[tuple[str, int], ...]  # (reason kind, excluded games), most frequent first
    battles: int  # battles whose two games were both rated
    agree: int  # of those, battles whose two orders agree on win/tie/loss
    position_bias: float | None  # A's wins minus B's wins over decisive rated games (0 = unbiased)
    models: tuple[ModelDiagnostics, ...] = ()
    lean_a: int = 0  # disagreeing battles whose candidate did better as A than as B
    lean_b: int = 0  # ... and better as B than as A (lean_a + lean_b = battles - agree)
    contradictions: tuple[str, ...] = ()  # models whose pooled rating contradicts their battle scores

    @property
    def excluded(self) -> int:
        return self.games - self.rated

    @property
    def excluded_share(self) -> float:
        return self.excluded / self.games if self.games else 0.0

    @property
    def position_consistency(self) -> float | None:
        return self.agree / self.battles if self.battles else None

    @property
    def disagree_share(self) -> float | None:
        return (self.battles - self.agree) / self.battles if self.battles else None

    def model(self, name: str) -> ModelDiagnostics | None:
        for m in self.models:
            if m.model == name:
                return m
        return None

    @property
    def lean_share(self) -> float | None:
        """The share of disagreeing battles that favour the more favoured position (0.5 .. 1)."""
        n = self.lean_a + self.lean_b
        return max(self.lean_a, self.lean_b) / n if n else None

    @property
    def lean_position(self) -> str:
        return "A" if self.lean_a >= self.lean_b else "B"

    @cached_property
    def lean_p(self) -> float | None:
        """Two-sided binomial p-value of the lean against an even split of the disagreements."""
        n = self.lean_a + self.lean_b
        return binomial_two_sided(max(self.lean_a, self.lean_b), n) if n else None

    @property
    def low_consistency(self) -> bool:
        pc = self.position_consistency
        return pc is not None and pc < MIN_POSITION_CONSISTENCY

    @property
    def position_driven(self) -> bool:
        """Low consistency whose disagreements lean to one position beyond chance."""
        share, p = self.lean_share, self.lean_p
        return (self.low_consistency and share is not None and p is not None and share >= MIN_POSITION_LEAN
                and p < POSITION_LEAN_P)

    @property
    def no_rated_game(self) -> bool:
        return self.rated == 0

    @property
    def warn_excluded(self) -> bool:
        return self.excluded_share > WARN_EXCLUDED_SHARE

    @property
    def unsupported_reasons(self) -> tuple[str, ...]:
        """Why the ranking is not supported by the judge's verdicts (empty when it is)."""
        out = []
        if self.no_rated_game:
            out.append(f"no game was rated ({self.excluded} of {self.games} excluded)" if self.games
                       else "no game was played")
        else:
            if self.excluded_share > MAX_EXCLUDED_SHARE:
                out.append(f"{_pct(self.excluded_share)} of games excluded (more than {_pct(MAX_EXCLUDED_SHARE)})")
            if self.position_driven:
                out.append(f"position consistency {_pct(self.position_consistency or 0.0)} (below "
                           f"{_pct(MIN_POSITION_CONSISTENCY)}): {self.battles - self.agree} of {self.battles} battles "
                           f"disagree across the two orders and {_pct(self.lean_share or 0.0)} of those favour "
                           f"position {self.lean_position}")
            out += [f"{m}: the pooled win rate contradicts the battle scores" for m in self.contradictions]
        return tuple(out)

    @property
    def notes(self) -> tuple[str, ...]:
        """What a reader should know that does not make the ranking unsupported."""
        if self.low_consistency and not self.position_driven and not self.no_rated_game:
            return (f"position consistency {_pct(self.position_consistency or 0.0)} is below "
                    f"{_pct(MIN_POSITION_CONSISTENCY)}, but the disagreements are not one-sided ({self.lean_a} "
                    f"favour A, {self.lean_b} favour B; a position-driven judge puts at least "
                    f"{_pct(MIN_POSITION_LEAN)} on one side, beyond chance): close answers or a noisy judge; "
                    "read the confidence intervals",)
        return ()

    @property
    def supported(self) -> bool:
        return not self.unsupported_reasons


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def binomial_two_sided(k: int, n: int) -> float:
    """P(|X - n/2| >= |k - n/2|) for X ~ Binomial(n, 1/2): exact up to 20,000 trials, normal beyond."""
    k = max(k, n - k)
    if n > 20_000:
        z = (k - 0.5 - n / 2) / math.sqrt(n / 4)
        return min(1.0, math.erfc(z / math.sqrt(2)))
    log_half_n = -n * math.log(2)
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n)
               for i in range(k, n + 1))
    return min(1.0, 2 * tail if 2 * k != n else 1.0)


EMPTY_DIAGNOSTICS = BoardDiagnostics(0, 0, (), 0, 0, None)


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


class _Tally:
    """One scope's running counts while :func:`diagnose_scopes` walks the games once."""

    def __init__(self) -> None:
        self.games = 0
        self.excluded: Counter[str] = Counter()
        self.a_wins = self.b_wins = 0
        self.both = self.agree = self.lean_a = self.lean_b = 0
        self.seen: Counter[str] = Counter()
        self.won: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()

    def diagnostics(self) -> BoardDiagnostics:
        decisive = self.a_wins + self.b_wins
        bias = (self.a_wins - self.b_wins) / decisive if decisive else None  # as battles.position_bias
        models = tuple(ModelDiagnostics(m, n, self.won[m], self.lost[m]) for m, n in self.seen.items())
        return BoardDiagnostics(self.games, self.games - self.excluded.total(), tuple(self.excluded.most_common()),
                                self.both, self.agree, bias, models, self.lean_a, self.lean_b)


def diagnose_scopes(games: Iterable[Game]) -> dict[Scope, BoardDiagnostics]:
    """The diagnostics of every scope the games fall in (OVERALL, their datasets and subsets), in one pass
    over the games and one over the battles they make (a battle = a game's two orders)."""
    tallies: dict[Scope, _Tally] = {}
    by_subset: dict[tuple[str, str], list[_Tally]] = {}

    def scopes_of(dataset: str, subset: str) -> list[_Tally]:
        ts = by_subset.get((dataset, subset))
        if ts is None:
            keys = (Scope("overall"), Scope("dataset", dataset), Scope("subset", dataset, subset))
            ts = by_subset[(dataset, subset)] = [tallies.setdefault(k, _Tally()) for k in keys]
        return ts

    pairs: dict[tuple[str, str, str, str, str], list[int | None]] = {}
    for g in games:
        ts = scopes_of(g.dataset, g.subset)
        o = g.outcome
        for t in ts:
            t.games += 1
        if o is None:
            kind = reason_kind(g.reason)
            for t in ts:
                t.excluded[kind] += 1
            continue
        if o != 0:
            a_won = (o > 0) == g.candidate_is_a
            for t in ts:
                if a_won:
                    t.a_wins += 1
                else:
                    t.b_wins += 1
        slot = pairs.setdefault((g.dataset, g.subset, g.query_id, g.candidate, g.opponent), [None, None])
        slot[0 if g.candidate_is_a else 1] = o
    for (dataset, subset, _, cand, opp), (first, second) in pairs.items():
        if first is None or second is None:
            continue
        s1, s2 = _sign(first), _sign(second)
        for t in scopes_of(dataset, subset):
            t.both += 1
            t.agree += s1 == s2
            t.lean_a += s1 > s2
            t.lean_b += s1 < s2
            t.seen[cand] += 1
            t.seen[opp] += 1
            if s1 > 0 and s2 > 0:
                t.won[cand] += 1
                t.lost[opp] += 1
            elif s1 < 0 and s2 < 0:
                t.lost[cand] += 1
                t.won[opp] += 1
    return {k: t.diagnostics() for k, t in tallies.items()}


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


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
                 r.n_battles, tuple(r.flags))


def _sorted(entries: list[Entry], baseline: str) -> tuple[Entry, ...]:
    return tuple(sorted(entries, key=lambda e: (-e.winrate, e.model != baseline, e.model)))


def rate_scope(scope: Scope, games: Sequence[Game], models: Sequence[str], baseline: str, cfg: RatingConfig,
               seed: int, diagnostics: BoardDiagnostics | None = None) -> Board:
    """Rate the games of one scope; models without games in it are left out.

    ``diagnostics`` are the scope's (from :func:`diagnose_scopes`) when the caller has them already.
    """
    scoped = [g for g in games if scope.contains(g)]
    if diagnostics is None:
        diagnostics = diagnose_scopes(scoped).get(scope, EMPTY_DIAGNOSTICS)
    present = {g.candidate for g in scoped if g.outcome is not None} | {
        g.opponent for g in scoped if g.outcome is not None
    }
    names = [m for m in models if m in present or m == baseline]
    arrays = to_arrays(scoped, names)
    if len(arrays) == 0:
        return Board(scope, baseline, (), 0, cfg.method, diagnostics)
    ratings = rate_battles(
        arrays.model_a, arrays.model_b, arrays.outcome, arrays.query,
        models=names, baseline=baseline, rounds=cfg.rounds, seed=seed, ci=cfg.ci,
        strong_weight=cfg.strong_weight, method=cfg.method, interval=cfg.interval,
    )
    entries = _sorted([_entry(r) for r in ratings.per_model], baseline)
    return Board(scope, baseline, entries, len(arrays), cfg.method, with_contradictions(diagnostics, entries, baseline))


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
    subsets: dict[tuple[str, str], None] = {}
    for g in games:
        subsets.setdefault((g.dataset, g.subset), None)
    datasets = list(dict.fromkeys(d for d, _ in subsets))
    diag = diagnose_scopes(games)

    def pooled(scope: Scope) -> BoardDiagnostics:
        return diag.get(scope, EMPTY_DIAGNOSTICS)

    subset_boards = [rate_scope(Scope("subset", d, s), games, models, baseline, cfg, seed, pooled(Scope("subset", d, s)))
                     for d, s in subsets]
    if cfg.overall == "evalscope":
        dataset_boards = [
            _mean_board(Scope("dataset", d), [b for b in subset_boards if b.scope.dataset == d], baseline, cfg.method,
                        pooled(Scope("dataset", d)))
            for d in datasets
        ]
        overall = _mean_board(Scope("overall"), subset_boards, baseline, cfg.method, pooled(Scope("overall")))
    else:
        dataset_boards = [rate_scope(Scope("dataset", d), games, models, baseline, cfg, seed, pooled(Scope("dataset", d)))
                          for d in datasets]
        overall = rate_scope(Scope("overall"), games, models, baseline, cfg, seed, pooled(Scope("overall")))
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
                       f"({_pct(d.excluded_share)}): {_reasons_text(d)}")
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
