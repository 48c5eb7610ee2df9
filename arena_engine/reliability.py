"""How far a judge's verdicts support a ranking: the figures behind every leaderboard.

Per scope (OVERALL, a dataset, a subset; keyed here by ``(dataset, subset)`` with ``None`` for "all"),
:func:`diagnose_scopes` counts in one pass over the games: games rated and excluded (per reason kind),
how often a battle's two orders agree on win/tie/loss (position consistency), which position the
disagreeing battles favour, the position bias, and per model the battles won and lost in both orders.

A scope's ranking is *unsupported* by the verdicts (:attr:`BoardDiagnostics.unsupported_reasons`) when
- no game of the scope was rated, or more than :data:`MAX_EXCLUDED_SHARE` of its games were excluded;
- fewer than :data:`MIN_POSITION_CONSISTENCY` of its battles agree across the two orders **and** the
  disagreements are one-sided: at least :data:`MIN_POSITION_LEAN` of them favour the same position,
  beyond chance (two-sided binomial test against an even split, p < :data:`POSITION_LEAN_P`). The
  verdicts then follow where an answer stands, not what it says. An honest judge comparing close
  answers also disagrees with itself often (the simulator's judge agrees in 45-59% of battles between
  models 0.8-1.2 logits apart) but splits its disagreements between the positions: a note, not a flag;
- or a model's pooled win rate is significantly off 50% one way while its battles won and lost in both
  orders say the other or nothing (``contradictions``, filled in by the leaderboard once it is rated).
docs/rating.md explains both views of the verdicts and the thresholds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from .battles import Game, reason_kind

if TYPE_CHECKING:
    from .game_columns import GameColumns

ScopeKey = tuple[str | None, str | None]  # (dataset, subset): (None, None) = OVERALL, (d, None) = dataset d

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
    """How far a scope's verdicts support its ranking (the module docstring gives the thresholds)."""

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
                out.append(f"{percent(self.excluded_share)} of games excluded (more than {percent(MAX_EXCLUDED_SHARE)})")
            if self.position_driven:
                out.append(f"position consistency {percent(self.position_consistency or 0.0)} (below "
                           f"{percent(MIN_POSITION_CONSISTENCY)}): {self.battles - self.agree} of {self.battles} battles "
                           f"disagree across the two orders and {percent(self.lean_share or 0.0)} of those favour "
                           f"position {self.lean_position}")
            out += [f"{m}: the pooled win rate contradicts the battle scores" for m in self.contradictions]
        return tuple(out)

    @property
    def notes(self) -> tuple[str, ...]:
        """What a reader should know that does not make the ranking unsupported."""
        if self.low_consistency and not self.position_driven and not self.no_rated_game:
            return (f"position consistency {percent(self.position_consistency or 0.0)} is below "
                    f"{percent(MIN_POSITION_CONSISTENCY)}, but the disagreements are not one-sided ({self.lean_a} "
                    f"favour A, {self.lean_b} favour B; a position-driven judge puts at least "
                    f"{percent(MIN_POSITION_LEAN)} on one side, beyond chance): close answers or a noisy judge; "
                    "read the confidence intervals",)
        return ()

    @property
    def supported(self) -> bool:
        return not self.unsupported_reasons


def percent(x: float) -> str:
    """0.123 -> "12.3%"."""
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


def diagnose_scopes(games: Iterable[Game]) -> dict[ScopeKey, BoardDiagnostics]:
    """The diagnostics of every scope the games fall in (OVERALL, their datasets and subsets), in one pass
    over the games and one over the battles they make (a battle = a game's two orders).

    The counts are summed per subset and then added to the subset's dataset and to OVERALL (sums do not
    depend on order); what is ordered (the excluded reasons as they first come, the models in the
    order their first battle names them) is kept in the order of the games, as one pass per scope
    would give it. Of game columns, the same figures are counted by numpy (:func:`_diagnose_columns`).
    """
    from .game_columns import GameColumns

    if isinstance(games, GameColumns):
        return _diagnose_columns(games)
    tallies: dict[ScopeKey, _Tally] = {}
    by_subset: dict[tuple[str, str], list[_Tally]] = {}
    counts: dict[tuple[str, str], list[int]] = {}  # games, A wins, B wins

    def scopes_of(dataset: str, subset: str) -> list[_Tally]:
        ts = by_subset.get((dataset, subset))
        if ts is None:
            keys: tuple[ScopeKey, ...] = ((None, None), (dataset, None), (dataset, subset))
            ts = by_subset[(dataset, subset)] = [tallies.setdefault(k, _Tally()) for k in keys]
        return ts

    pairs: dict[tuple[str, str, str, str, str, str | None], list[int | None]] = {}
    for g in games:
        where = (g.dataset, g.subset)
        c = counts.get(where)
        if c is None:
            scopes_of(*where)
            c = counts[where] = [0, 0, 0]
        c[0] += 1
        o = g.outcome
        if o is None:
            kind = reason_kind(g.reason)
            for t in by_subset[where]:
                t.excluded[kind] += 1
            continue
        if o != 0:
            c[1 if (o > 0) == g.candidate_is_a else 2] += 1
        slot = pairs.setdefault((g.dataset, g.subset, g.query_id, g.candidate, g.opponent, g.judge), [None, None])
        slot[0 if g.candidate_is_a else 1] = o
    for where, (n, a_wins, b_wins) in counts.items():
        for t in by_subset[where]:
            t.games += n
            t.a_wins += a_wins
            t.b_wins += b_wins
    battles: dict[tuple[str, str], _Battles] = {}
    for i, ((dataset, subset, _, cand, opp, _judge), (first, second)) in enumerate(pairs.items()):
        if first is None or second is None:
            continue
        acc = battles.get((dataset, subset))
        if acc is None:
            acc = battles[(dataset, subset)] = _Battles()
        s1, s2 = _sign(first), _sign(second)
        acc.both += 1
        acc.agree += s1 == s2
        acc.lean_a += s1 > s2
        acc.lean_b += s1 < s2
        for m, at in ((cand, 2 * i), (opp, 2 * i + 1)):
            acc.seen[m] += 1
            acc.first.setdefault(m, at)
        if s1 > 0 and s2 > 0:
            acc.won[cand] += 1
            acc.lost[opp] += 1
        elif s1 < 0 and s2 < 0:
            acc.lost[cand] += 1
            acc.won[opp] += 1
    first_seen: dict[int, dict[str, int]] = {}  # id(tally) -> model -> its first appearance
    for where, acc in battles.items():
        for t in by_subset[where]:
            t.both += acc.both
            t.agree += acc.agree
            t.lean_a += acc.lean_a
            t.lean_b += acc.lean_b
            t.seen.update(acc.seen)
            t.won.update(acc.won)
            t.lost.update(acc.lost)
            firsts = first_seen.setdefault(id(t), {})
            for m, at in acc.first.items():
                if at < firsts.get(m, at + 1):
                    firsts[m] = at
    for t in tallies.values():  # the models in the order their first battle in the scope names them
        order = first_seen.get(id(t))
        if order:
            t.seen = Counter({m: t.seen[m] for m in sorted(order, key=order.__getitem__)})
    return {k: t.diagnostics() for k, t in tallies.items()}


def _diagnose_columns(g: GameColumns) -> dict[ScopeKey, BoardDiagnostics]:
    """:func:`diagnose_scopes` of columns: the same sums, the same orders (as the loop's docstring says)."""
    import numpy as np

    from .game_columns import battle_groups, last_per_group

    tallies: dict[ScopeKey, _Tally] = {}
    wheres, wcode = g.where_codes()
    scopes = []
    for dataset, subset in wheres:
        keys: tuple[ScopeKey, ...] = ((None, None), (dataset, None), (dataset, subset))
        scopes.append([tallies.setdefault(k, _Tally()) for k in keys])
    by_subset = dict(zip(wheres, scopes, strict=True))
    for e in g.excluded_games():
        kind = reason_kind(e.reason)
        for t in by_subset[(e.dataset, e.subset)]:
            t.excluded[kind] += 1
    nw = len(wheres)
    valid = g.valid()
    o = g.outcome.astype(np.int64)
    decisive = valid & (o != 0)
    a_side = (o > 0) == g.candidate_is_a
    n_games = np.bincount(wcode, minlength=nw).tolist()
    a_wins = np.bincount(wcode[decisive & a_side], minlength=nw).tolist()
    b_wins = np.bincount(wcode[decisive & ~a_side], minlength=nw).tolist()
    for w, ts in enumerate(scopes):
        for t in ts:
            t.games += n_games[w]
            t.a_wins += a_wins[w]
            t.b_wins += b_wins[w]
    rows = np.flatnonzero(valid)  # the battles of the rated games, in the order their first rated game comes
    group_of, group = battle_groups(g, rows)
    nb = len(group_of)
    local = np.arange(len(rows), dtype=np.int64)
    is_a = g.candidate_is_a[rows]
    first = last_per_group(group, local[is_a], nb)
    second = last_per_group(group, local[~is_a], nb)
    done = np.flatnonzero((first >= 0) & (second >= 0))  # battle numbers i whose two orders were rated
    if len(done) == 0:
        return {k: t.diagnostics() for k, t in tallies.items()}
    ov = o[rows]
    s1, s2 = np.sign(ov[first[done]]), np.sign(ov[second[done]])
    at = rows[group_of[done]]
    bw, cand, opp = wcode[at], g.candidate[at].astype(np.int64), g.opponent[at].astype(np.int64)
    both = np.bincount(bw, minlength=nw).tolist()
    agree = np.bincount(bw[s1 == s2], minlength=nw).tolist()
    lean_a = np.bincount(bw[s1 > s2], minlength=nw).tolist()
    lean_b = np.bincount(bw[s1 < s2], minlength=nw).tolist()
    won, lost = (s1 > 0) & (s2 > 0), (s1 < 0) & (s2 < 0)
    width = len(g.strings) + 1

    def per_model(w: np.ndarray, m: np.ndarray) -> dict[int, Counter[str]]:
        keys, counts = np.unique(w * width + m, return_counts=True)
        out: dict[int, Counter[str]] = {}
        for k, c in zip(keys.tolist(), counts.tolist(), strict=True):
            out.setdefault(k // width, Counter())[g.strings[k % width]] = c
        return out

    seen = per_model(np.concatenate([bw, bw]), np.concatenate([cand, opp]))
    wins = per_model(np.concatenate([bw[won], bw[lost]]), np.concatenate([cand[won], opp[lost]]))
    losses = per_model(np.concatenate([bw[lost], bw[won]]), np.concatenate([cand[lost], opp[won]]))
    # each model's first appearance per subset: 2i as a candidate, 2i + 1 as an opponent of battle i
    pos = np.concatenate([2 * done, 2 * done + 1])
    wm = np.concatenate([bw, bw]) * width + np.concatenate([cand, opp])
    by_pos = np.argsort(pos, kind="stable")
    codes, at_first = np.unique(wm[by_pos], return_index=True)
    firsts: dict[int, dict[str, int]] = {}
    for k, p in zip(codes.tolist(), pos[by_pos][at_first].tolist(), strict=True):
        firsts.setdefault(k // width, {})[g.strings[k % width]] = p
    first_seen_at: dict[int, dict[str, int]] = {}
    for w in sorted(seen):
        for t in scopes[w]:
            t.both += both[w]
            t.agree += agree[w]
            t.lean_a += lean_a[w]
            t.lean_b += lean_b[w]
            t.seen.update(seen[w])
            t.won.update(wins.get(w, Counter()))
            t.lost.update(losses.get(w, Counter()))
            mine = first_seen_at.setdefault(id(t), {})
            for m, p in firsts[w].items():
                if p < mine.get(m, p + 1):
                    mine[m] = p
    for t in tallies.values():
        order = first_seen_at.get(id(t))
        if order:
            t.seen = Counter({m: t.seen[m] for m in sorted(order, key=order.__getitem__)})
    return {k: t.diagnostics() for k, t in tallies.items()}


class _Battles:
    """One subset's battle counts, added to its scopes at the end of :func:`diagnose_scopes`."""

    def __init__(self) -> None:
        self.both = self.agree = self.lean_a = self.lean_b = 0
        self.seen: Counter[str] = Counter()
        self.won: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self.first: dict[str, int] = {}


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)
