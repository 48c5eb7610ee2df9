"""The battles a run's game columns make (:class:`BattleColumns`): each battle's two games as rows.

:func:`combine_columns` is :func:`arena_engine.battles.combine` for :class:`GameColumns`, giving exactly
what it gives for the same games as objects (``tests/test_game_columns.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import numpy as np

from .column_keys import combined_key, first_seen, last_per_group
from .game_columns import CHUNK, NO_OUTCOME, GameColumns, keys_list
from .games import Battle, natural_key
from .judge import consistent, sample_score


class BattleColumns(Sequence[Battle]):
    """:func:`arena_engine.battles.combine` of game columns: each battle's games as rows of ``games``
    (-1: no such game), in the battles' order; indexing or iterating gives ``Battle`` objects."""

    __slots__ = ("first_row", "games", "second_row")

    def __init__(self, games: GameColumns, first_row: np.ndarray, second_row: np.ndarray) -> None:
        self.games, self.first_row, self.second_row = games, first_row, second_row

    def _row(self) -> np.ndarray:
        return np.where(self.first_row >= 0, self.first_row, self.second_row)

    def outcome_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """Each battle's outcomes as A and as B (:data:`NO_OUTCOME` where a game is missing or excluded)."""
        out = np.append(self.games.outcome, np.int8(NO_OUTCOME))  # row -1: missing
        return out[self.first_row], out[self.second_row]

    def __len__(self) -> int:
        return len(self.first_row)

    def _battles(self, start: int, end: int) -> list[Battle]:
        """Battles [start, end) as objects."""
        g = self.games
        f, s = self.first_row[start:end], self.second_row[start:end]
        row = np.where(f >= 0, f, s)
        table = g.table()
        text: Callable[[str], list[Any]] = lambda c: table[getattr(g, c)[row]].tolist()  # noqa: E731
        out = np.append(g.outcome, np.int8(NO_OUTCOME))  # row -1: missing
        first = [None if o == NO_OUTCOME else o for o in out[f].tolist()]
        second = [None if o == NO_OUTCOME else o for o in out[s].tolist()]
        keys = g.judgment_key
        none = np.zeros(1, dtype=keys.dtype) if keys.dtype != object else np.array([None], dtype=object)
        k1 = keys_list(np.concatenate([keys, none])[f])
        k2 = keys_list(np.concatenate([keys, none])[s])
        return [Battle(d, su, q, c, o, a, b, sample_score(a, b), consistent(a, b), (x, y), j)
                for d, su, q, c, o, a, b, x, y, j in zip(
                    text("dataset"), text("subset"), text("query_id"), text("candidate"), text("opponent"),
                    first, second, k1, k2, text("judge"), strict=True)]

    @overload
    def __getitem__(self, i: int) -> Battle: ...
    @overload
    def __getitem__(self, i: slice) -> list[Battle]: ...
    def __getitem__(self, i: int | slice) -> Battle | list[Battle]:
        n = len(self)
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            if step == 1:
                return self._battles(start, max(start, stop))
            return [self[j] for j in range(start, stop, step)]
        if not -n <= i < n:
            raise IndexError("battle index out of range")
        return self._battles(i % n, i % n + 1)[0]

    def __iter__(self) -> Iterator[Battle]:
        """The battles as objects, made :data:`CHUNK` at a time (none kept: a big run's 200k battles
        would be ~40 MB of objects)."""
        for start in range(0, len(self), CHUNK):
            yield from self._battles(start, min(len(self), start + CHUNK))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<BattleColumns: {len(self)} battles>"


def battle_groups(g: GameColumns, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`first_seen` of the games' battles (dataset, subset, query, candidate, opponent, judge), of
    all games or of ``rows`` (ascending indices). Games sorted by the results' order with one judge hold
    each battle's games next to each other: groups are then runs of equal keys, found without a sort."""
    cols = [getattr(g, c) if rows is None else getattr(g, c)[rows]
            for c in ("dataset", "subset", "query_id", "candidate", "opponent", "judge")]
    n = len(cols[0])
    if g.sorted and n and not bool(np.any(g.judge != g.judge[0])):
        same = np.ones(n - 1, np.bool_)
        for c in cols[:5]:
            same &= c[1:] == c[:-1]
        starts = np.concatenate([np.ones(1, np.bool_), ~same])
        return np.flatnonzero(starts), np.cumsum(starts) - 1
    return first_seen(combined_key(cols))


def natural_rank(g: GameColumns, codes: np.ndarray) -> np.ndarray:
    """Per string code (of ``codes``, the query ids), its rank in ``games.natural_key`` order: (0, int)
    for digits, (1, text) otherwise; equal keys, equal ranks."""
    nat = np.zeros(len(g.strings) + 1, np.int64)
    texts = [g.strings[q] for q in codes.tolist()]
    digits = np.fromiter((t.isdigit() for t in texts), np.bool_, len(texts))
    if all(len(t) <= 18 and t.isascii() for t, d in zip(texts, digits.tolist(), strict=True) if d):
        values = np.fromiter((int(t) if d else 0 for t, d in zip(texts, digits.tolist(), strict=True)), np.int64,
                             len(texts))
        _, by_value = np.unique(values[digits], return_inverse=True)
        nat[codes[digits]] = by_value.reshape(-1)
        base = int(by_value.max()) + 1 if len(by_value) else 0
        nat[codes[~digits]] = base + g.rank()[codes[~digits]]  # texts keep their order, after every number
        return nat
    prev: object = None
    k = -1
    for q in sorted(codes.tolist(), key=lambda q: natural_key(g.strings[q])):
        key = natural_key(g.strings[q])
        if key != prev:
            k += 1
            prev = key
        nat[q] = k
    return nat


def combine_columns(g: GameColumns) -> BattleColumns:
    """:func:`arena_engine.battles.combine` of columns (the same battles, in the same order)."""
    n = len(g)
    group_of, group = battle_groups(g)
    nb = len(group_of)
    rows = np.arange(n, dtype=np.int64)
    first_row = last_per_group(group, rows[g.candidate_is_a], nb)
    second_row = last_per_group(group, rows[~g.candidate_is_a], nb)
    r = g.rank()
    nat = natural_rank(g, np.unique(g.query_id[group_of]))
    judge = g.judge[group_of]
    empty = g.strings.index("") if "" in g.strings else -1
    judge_rank = r[np.where(judge < 0, empty, judge)] if empty >= 0 else r[judge]
    order = np.lexsort((np.arange(nb), judge_rank, nat[g.query_id[group_of]], r[g.opponent[group_of]],
                        r[g.candidate[group_of]], r[g.subset[group_of]], r[g.dataset[group_of]]))
    return BattleColumns(g, first_row[order], second_row[order])
