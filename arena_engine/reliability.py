"""How far a judge's verdicts support a ranking: the figures behind every leaderboard, counted.

Per scope (OVERALL, a dataset, a subset; keyed here by ``(dataset, subset)`` with ``None`` for "all"),
:func:`diagnose_scopes` counts in one pass over the games: games rated and excluded (per reason kind),
how often a battle's two orders agree on win/tie/loss (position consistency), which position the
disagreeing battles favour, the position bias, and per model the battles won and lost in both orders.
What those figures say, and when they leave a ranking unsupported, is ``board_diagnostics``
(its names are importable from here too).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .battles import Game, reason_kind
from .board_diagnostics import EMPTY_DIAGNOSTICS as EMPTY_DIAGNOSTICS
from .board_diagnostics import MAX_EXCLUDED_SHARE as MAX_EXCLUDED_SHARE
from .board_diagnostics import MIN_POSITION_CONSISTENCY as MIN_POSITION_CONSISTENCY
from .board_diagnostics import MIN_POSITION_LEAN as MIN_POSITION_LEAN
from .board_diagnostics import POSITION_LEAN_P as POSITION_LEAN_P
from .board_diagnostics import WARN_EXCLUDED_SHARE as WARN_EXCLUDED_SHARE
from .board_diagnostics import BoardDiagnostics as BoardDiagnostics
from .board_diagnostics import ModelDiagnostics as ModelDiagnostics
from .board_diagnostics import ScopeKey as ScopeKey
from .board_diagnostics import binomial_two_sided as binomial_two_sided
from .board_diagnostics import percent as percent

if TYPE_CHECKING:
    from .game_columns import GameColumns


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

    from .battle_columns import battle_groups
    from .column_keys import last_per_group

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
