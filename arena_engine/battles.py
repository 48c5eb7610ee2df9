"""What the judge decided: one row per game, combined into battles (both orders of one query).

A *game* is one judge call: assistant A against assistant B in one order. A *battle* is a candidate and
its opponent (the baseline, or another candidate in all-pairs mode) on one query: two games, one per
order. These rows are the bookkeeping between the request pipeline and the rating kernels; they carry
no text (texts stay in the checkpoints) so a million of them stay small.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .battle_columns import BattleColumns, combine_columns
from .column_keys import combined_key, first_seen
from .game_columns import NO_OUTCOME, GameColumns
from .games import Battle as Battle  # the value types live in games.py; importable here too
from .games import ExclusionReason as ExclusionReason
from .games import Game as Game
from .games import natural_key, reason_kind
from .judge import consistent, sample_score


def combine(games: Iterable[Game]) -> list[Battle]:
    """Pair each battle's two games (either may be missing or excluded); of columns, battle columns."""

    if isinstance(games, GameColumns):
        return combine_columns(games)  # type: ignore[return-value]  # a Sequence[Battle]
    by_battle: dict[tuple[str, str, str, str, str, str | None], list[Game | None]] = {}
    for g in games:
        slot = by_battle.setdefault((g.dataset, g.subset, g.query_id, g.candidate, g.opponent, g.judge), [None, None])
        slot[0 if g.candidate_is_a else 1] = g
    out = []
    for (dataset, subset, qid, cand, opp, judge), (g1, g2) in by_battle.items():
        o1 = g1.outcome if g1 else None
        o2 = g2.outcome if g2 else None
        out.append(
            Battle(
                dataset, subset, qid, cand, opp, o1, o2, sample_score(o1, o2), consistent(o1, o2),
                (g1.judgment_key if g1 else None, g2.judgment_key if g2 else None), judge,
            )
        )
    del by_battle  # freed before the sort builds its keys (a large run's end peak)
    out.sort(key=lambda b: (b.dataset, b.subset, b.candidate, b.opponent, natural_key(b.query_id), b.judge or ""))
    return out


@dataclass(frozen=True)
class GameArrays:
    """The rating kernels' input: one row per valid game, codes into ``models``."""

    models: tuple[str, ...]
    model_a: np.ndarray
    model_b: np.ndarray
    outcome: np.ndarray  # int8 from A's view
    query: np.ndarray  # int64 cluster id: one per (dataset, subset, query id)
    lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.outcome)


def to_arrays(games: Sequence[Game], models: Sequence[str]) -> GameArrays:
    """Turn valid games into arrays; excluded games are left out (they are counted elsewhere)."""
    index = {m: i for i, m in enumerate(models)}
    clusters: dict[tuple[str, str, str], int] = {}
    valid = [g for g in games if g.outcome is not None]
    a = np.empty(len(valid), dtype=np.int64)
    b = np.empty(len(valid), dtype=np.int64)
    o = np.empty(len(valid), dtype=np.int8)
    q = np.empty(len(valid), dtype=np.int64)
    for i, g in enumerate(valid):
        cand, opp = index[g.candidate], index[g.opponent]
        assert g.outcome is not None
        if g.candidate_is_a:
            a[i], b[i], o[i] = cand, opp, g.outcome
        else:
            a[i], b[i], o[i] = opp, cand, -g.outcome
        q[i] = clusters.setdefault((g.dataset, g.subset, g.query_id), len(clusters))
    return GameArrays(tuple(models), a, b, o, q)


@dataclass(frozen=True)
class ValidColumns:
    """Every valid game of a list as columns, made once and cut per scope (:meth:`scope_arrays`).

    ``cluster`` numbers the (dataset, subset, query) clusters in the order their first valid game comes;
    all the games of a cluster lie in one subset, so a scope's clusters keep that order, and re-numbering
    them densely gives exactly what :func:`to_arrays` gives for the scope's games alone.
    """

    models: tuple[str, ...]
    subsets: tuple[tuple[str, str], ...]
    subset: np.ndarray  # int64 code into ``subsets``
    cand: np.ndarray  # int64 codes into ``models``
    opp: np.ndarray
    cand_is_a: np.ndarray  # bool
    outcome: np.ndarray  # int8, from the candidate's side
    cluster: np.ndarray  # int64

    @classmethod
    def of(cls, games: Sequence[Game], models: Sequence[str]) -> ValidColumns:

        if isinstance(games, GameColumns):
            return cls._of_columns(games, models)
        index = {m: i for i, m in enumerate(models)}
        subsets: dict[tuple[str, str], int] = {}
        clusters: dict[tuple[str, str, str], int] = {}
        valid = [g for g in games if g.outcome is not None]
        n = len(valid)
        sub, cand, opp = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        is_a, out, q = np.empty(n, np.bool_), np.empty(n, np.int8), np.empty(n, np.int64)
        for i, g in enumerate(valid):
            sub[i] = subsets.setdefault((g.dataset, g.subset), len(subsets))
            assert g.outcome is not None
            cand[i], opp[i], is_a[i], out[i] = index[g.candidate], index[g.opponent], g.candidate_is_a, g.outcome
            q[i] = clusters.setdefault((g.dataset, g.subset, g.query_id), len(clusters))
        return cls(tuple(models), tuple(subsets), sub, cand, opp, is_a, out, q)

    @classmethod
    def _of_columns(cls, games: GameColumns, models: Sequence[str]) -> ValidColumns:

        index = {m: i for i, m in enumerate(models)}
        lookup = np.full(len(games.strings) + 1, -1, np.int64)
        rows = np.flatnonzero(games.valid())
        for code in np.unique(np.concatenate([games.candidate[rows], games.opponent[rows]])).tolist():
            if games.strings[code] in index:
                lookup[code] = index[games.strings[code]]
        subsets, sub = games.where_codes(rows)
        cand, opp = lookup[games.candidate[rows]], lookup[games.opponent[rows]]
        if np.any(cand < 0) or np.any(opp < 0):
            raise KeyError("a game's model is not one of the models")
        _, q = first_seen(combined_key((games.dataset[rows], games.subset[rows], games.query_id[rows])))
        return cls(tuple(models), tuple(subsets), sub, cand, opp, games.candidate_is_a[rows].copy(),
                   games.outcome[rows].copy(), q)

    def mask(self, dataset: str | None, subset: str | None) -> np.ndarray:
        """Rows of the overall scope (both None), of one dataset, or of one subset."""
        if dataset is None:
            return np.ones(len(self.outcome), np.bool_)
        codes = [i for i, (d, s) in enumerate(self.subsets) if d == dataset and (subset is None or s == subset)]
        return np.isin(self.subset, np.asarray(codes, np.int64))

    def present(self, rows: np.ndarray) -> set[str]:
        """The models that play a valid game among ``rows``."""
        used = np.union1d(self.cand[rows], self.opp[rows])
        return {self.models[int(i)] for i in used}

    def scope_arrays(self, rows: np.ndarray, names: Sequence[str]) -> GameArrays:
        """:func:`to_arrays` of the games of ``rows`` (a mask), with codes into ``names``."""
        remap = np.full(len(self.models), -1, np.int64)
        where = {m: i for i, m in enumerate(self.models)}
        for j, m in enumerate(names):
            if m in where:
                remap[where[m]] = j
        cand, opp = remap[self.cand[rows]], remap[self.opp[rows]]
        is_a, out = self.cand_is_a[rows], self.outcome[rows]
        a = np.where(is_a, cand, opp)
        b = np.where(is_a, opp, cand)
        o = np.where(is_a, out, -out).astype(np.int8)
        _, q = np.unique(self.cluster[rows], return_inverse=True)
        return GameArrays(tuple(names), a, b, o, q.astype(np.int64).reshape(-1))


@dataclass(frozen=True)
class ExclusionCounts:
    total: int
    by_reason: dict[str, int]


def exclusions(games: Iterable[Game]) -> dict[tuple[str, str], ExclusionCounts]:
    """Excluded games per (dataset, subset), with their reasons."""
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for g in excluded_games(games):
        if g.outcome is None:
            counts[(g.dataset, g.subset)][reason_kind(g.reason)] += 1
    return {k: ExclusionCounts(sum(c.values()), dict(c)) for k, c in counts.items()}


def excluded_games(games: Iterable[Game]) -> list[Game]:
    """The excluded games, in order (of columns: without making the rated games' objects)."""

    if isinstance(games, GameColumns):
        return games.excluded_games()
    return [g for g in games if g.outcome is None]


def any_excluded(games: Iterable[Game]) -> bool:

    if isinstance(games, GameColumns):
        return not bool(games.valid().all())
    return any(g.outcome is None for g in games)


def games_per_subset(games: Iterable[Game]) -> Counter[tuple[str, str]]:
    """How many games each (dataset, subset) has."""

    if isinstance(games, GameColumns):
        wheres, code = games.where_codes()
        return Counter(dict(zip(wheres, np.bincount(code, minlength=len(wheres)).tolist(), strict=True)))
    return Counter((g.dataset, g.subset) for g in games)


def position_consistency(battles: Iterable[Battle]) -> dict[str, float]:
    """Share of battles whose two games agree, per candidate (battles with an excluded game left out)."""

    if isinstance(battles, BattleColumns):
        o1, o2 = battles.outcome_pair()
        both = np.flatnonzero((o1 != NO_OUTCOME) & (o2 != NO_OUTCOME))
        same = np.sign(o1[both]) == np.sign(o2[both])
        g = battles.games
        cand = g.candidate[np.where(battles.first_row >= 0, battles.first_row, battles.second_row)[both]]
        names, order = np.unique(cand, return_index=True)
        out: dict[str, float] = {}
        for code in names[np.argsort(order, kind="stable")].tolist():
            mine = cand == code
            out[g.strings[code]] = int(same[mine].sum()) / int(mine.sum())
        return out
    agree: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for b in battles:
        if b.consistent is not None:
            total[b.candidate] += 1
            agree[b.candidate] += b.consistent
    return {c: agree[c] / total[c] for c in total}


def position_bias(games: Iterable[Game]) -> float | None:
    """How often assistant A wins minus how often B wins, over valid decisive games (0 = unbiased)."""

    if isinstance(games, GameColumns):
        o, is_a = games.outcome, games.candidate_is_a
        decisive = (o != NO_OUTCOME) & (o != 0)
        a = int(np.count_nonzero(decisive & ((o > 0) == is_a)))
        n = int(np.count_nonzero(decisive))
        return None if n == 0 else (a - (n - a)) / n
    a_wins = b_wins = 0
    for g in games:
        if g.outcome is None or g.outcome == 0:
            continue
        a_side = g.outcome if g.candidate_is_a else -g.outcome
        if a_side > 0:
            a_wins += 1
        else:
            b_wins += 1
    n = a_wins + b_wins
    return None if n == 0 else (a_wins - b_wins) / n
