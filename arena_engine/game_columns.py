"""A run's games as compact columns (:class:`GameColumns`) and the battles they make (:class:`BattleColumns`).

400,000 :class:`~arena_engine.battles.Game` objects cost ~1.3 s to build and ~200 bytes each; the same
games as columns are int32 codes into one small string table (dataset, subset, query id, candidate,
opponent, reason, judge; -1 = None), a bool ``candidate_is_a``, an int8 ``outcome``
(:data:`NO_OUTCOME` = None, excluded) and the judgment keys as fixed 32-byte hex (``S32``; any other
key and they stay Python strings). Both classes are sequences (of ``Game`` / ``Battle``, made when an
element is asked for), so every public API that hands games out keeps its types; the hot paths
(:func:`arena_engine.battles.combine`, ``ValidColumns.of``, :func:`arena_engine.reliability.diagnose_scopes`,
the results' sort, the reports' counts) take the columns as they are, giving exactly what they give
for the same games as objects (``tests/test_game_columns.py``).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np

from .battles import Battle, Game, _natural
from .judge import consistent, sample_score

CHUNK = 8192  # battles made into objects at once while iterating
NO_OUTCOME = -128  # int8 stand-in for an excluded game's None outcome
KEY_BYTES = 32  # a judgment key: the hex of a 16-byte content key
_CODES = ("dataset", "subset", "query_id", "candidate", "opponent", "reason", "judge")


class Strings:
    """A string table being filled: ``code(x)`` gives x's index (None: -1)."""

    def __init__(self, items: Iterable[str] = ()) -> None:
        self.index: dict[str, int] = {}
        for s in items:
            self.index.setdefault(s, len(self.index))

    def code(self, x: str | None) -> int:
        return -1 if x is None else self.index.setdefault(x, len(self.index))

    @property
    def items(self) -> tuple[str, ...]:
        return tuple(self.index)


def _keys_column(keys: Sequence[str | None]) -> np.ndarray:
    """Judgment keys as ``S32`` (b"" = None) when every key is 32 ASCII characters; else an object array."""
    if all(k is None or (len(k) == KEY_BYTES and k.isascii()) for k in keys):
        return np.array([b"" if k is None else k.encode("ascii") for k in keys], dtype=f"S{KEY_BYTES}")
    out = np.empty(len(keys), dtype=object)
    out[:] = list(keys)
    return out


def _keys_list(keys: np.ndarray) -> list[str | None]:
    if keys.dtype == object:
        return list(keys.tolist())
    return [k.decode("ascii") if k else None for k in keys.tolist()]


class GameColumns(Sequence[Game]):
    """Games as columns (the module docstring); indexing or iterating gives ``Game`` objects."""

    __slots__ = (
        "_rank",
        "_table",
        "_wheres",
        "candidate",
        "candidate_is_a",
        "dataset",
        "judge",
        "judgment_key",
        "opponent",
        "outcome",
        "query_id",
        "reason",
        "sorted",
        "strings",
        "subset",
    )

    def __init__(self, strings: Sequence[str], *, dataset: np.ndarray, subset: np.ndarray, query_id: np.ndarray,
                 candidate: np.ndarray, opponent: np.ndarray, reason: np.ndarray, judge: np.ndarray,
                 candidate_is_a: np.ndarray, outcome: np.ndarray, judgment_key: np.ndarray) -> None:
        self.strings = tuple(strings)
        self.dataset, self.subset, self.query_id = dataset, subset, query_id
        self.candidate, self.opponent, self.reason, self.judge = candidate, opponent, reason, judge
        self.candidate_is_a, self.outcome, self.judgment_key = candidate_is_a, outcome, judgment_key
        n = len(outcome)
        if any(len(getattr(self, c)) != n for c in (*_CODES, "candidate_is_a", "judgment_key")):
            raise ValueError("games columns of different lengths")
        for c in _CODES:
            col = getattr(self, c)
            if n and (int(col.min()) < -1 or int(col.max()) >= len(self.strings)):
                raise ValueError(f"games column {c!r} does not fit the string table")
        if n and (outcome.dtype != np.int8 or int(outcome.max()) > 2
                  or (int(outcome.min()) < -2 and bool(np.any((outcome < -2) & (outcome != NO_OUTCOME))))):
            raise ValueError("an outcome is out of range")
        self._table: np.ndarray | None = None
        self._rank: np.ndarray | None = None
        self._wheres: tuple[list[tuple[str, str]], np.ndarray] | None = None
        #: in results.game_order (sorted_by_game_order's): a battle's games of one judge are then adjacent
        self.sorted = False

    # ------------------------------------------------------------------ making
    @classmethod
    def of(cls, games: Iterable[Game]) -> GameColumns:
        """The columns of ``games`` (columns already are returned as they are)."""
        if isinstance(games, GameColumns):
            return games
        games = list(games)
        s = Strings()
        code = s.code
        cols = {c: np.fromiter((code(getattr(g, c)) for g in games), np.int32, len(games)) for c in _CODES}
        return cls(s.items, **cols,
                   candidate_is_a=np.fromiter((g.candidate_is_a for g in games), np.bool_, len(games)),
                   outcome=np.fromiter((NO_OUTCOME if g.outcome is None else g.outcome for g in games), np.int8,
                                       len(games)),
                   judgment_key=_keys_column([g.judgment_key for g in games]))

    def take(self, rows: np.ndarray) -> GameColumns:
        """The games of ``rows`` (indices or a mask), in that order."""
        out = GameColumns(self.strings, **{c: getattr(self, c)[rows] for c in _CODES},
                          candidate_is_a=self.candidate_is_a[rows], outcome=self.outcome[rows],
                          judgment_key=self.judgment_key[rows])
        out._table, out._rank = self._table, self._rank  # the same string table
        return out

    # ------------------------------------------------------------------ as a sequence of games
    def table(self) -> np.ndarray:
        """The string table as an object array whose index -1 is None."""
        if self._table is None:
            t = np.empty(len(self.strings) + 1, dtype=object)
            t[:-1] = self.strings
            self._table = t
        return self._table

    def texts(self, column: str) -> list[str | None]:
        out: list[str | None] = self.table()[getattr(self, column)].tolist()
        return out

    def outcomes(self) -> list[int | None]:
        return [None if o == NO_OUTCOME else o for o in self.outcome.tolist()]

    def __len__(self) -> int:
        return len(self.outcome)

    @overload
    def __getitem__(self, i: int) -> Game: ...
    @overload
    def __getitem__(self, i: slice) -> GameColumns: ...
    def __getitem__(self, i: int | slice) -> Game | GameColumns:
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        n = len(self)
        if not -n <= i < n:
            raise IndexError("game index out of range")
        return next(iter(self.take(np.asarray([i % n]))))

    def __iter__(self) -> Iterator[Game]:
        return iter(list(map(Game, *(self.texts(c) for c in _CODES[:5]), self.candidate_is_a.tolist(),
                             self.outcomes(), self.texts("reason"), _keys_list(self.judgment_key),
                             self.texts("judge"))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)) or len(other) != len(self):
            return False if isinstance(other, Sequence) else NotImplemented
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<GameColumns: {len(self)} games>"

    # ------------------------------------------------------------------ what the hot paths need
    def rank(self) -> np.ndarray:
        """Each string's rank in Python's order of the table's strings (equal strings: equal ranks)."""
        if self._rank is None:
            order = sorted(range(len(self.strings)), key=self.strings.__getitem__)
            rank = np.empty(len(self.strings) + 1, np.int64)  # index -1: None, below every string
            rank[np.asarray(order, np.int64)] = np.arange(len(order))
            rank[-1] = -1
            self._rank = rank
        return self._rank

    def sorted_by_game_order(self) -> GameColumns:
        """``sorted(games, key=results.game_order)``: (dataset, subset, candidate, opponent, query id, not
        candidate_is_a), stable."""
        r = self.rank()
        order = np.lexsort((~self.candidate_is_a, r[self.query_id], r[self.opponent], r[self.candidate],
                            r[self.subset], r[self.dataset]))
        out = self if np.array_equal(order, np.arange(len(order))) else self.take(order)
        out.sorted = True
        return out

    def valid(self) -> np.ndarray:
        return np.asarray(self.outcome != NO_OUTCOME)

    def where_codes(self, rows: np.ndarray | None = None) -> tuple[list[tuple[str, str]], np.ndarray]:
        """The (dataset, subset) pairs of the games of ``rows`` (a mask; None: all) in first-seen order, and
        each of those games' code into them."""
        if rows is None:
            if self._wheres is None:
                self._wheres = first_seen_codes(self, (self.dataset, self.subset))
            return self._wheres
        return first_seen_codes(self, (self.dataset[rows], self.subset[rows]))

    def excluded_games(self) -> list[Game]:
        """The excluded games as objects, in order (few: a run's excluded share is small)."""
        return list(self.take(np.flatnonzero(~self.valid())))


def _dense(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct values, each row's index into them)."""
    values, inverse = np.unique(col, return_inverse=True)
    return values, inverse.reshape(-1).astype(np.int64)


def combined_key(parts: Sequence[np.ndarray]) -> np.ndarray:
    """One int64 per row that is equal exactly when every part is (dense codes in mixed radix; rows of
    a 2-D array when the radix would overflow)."""
    n = len(parts[0]) if parts else 0
    key = np.zeros(n, np.int64)
    size = 1
    for p in parts:
        _, inv = _dense(p)
        radix = int(inv.max()) + 1 if n else 1
        if size * radix >= 1 << 62:
            stacked = np.stack([_dense(q)[1] for q in parts], axis=1)
            _, inv2 = np.unique(stacked, axis=0, return_inverse=True)
            return inv2.reshape(-1).astype(np.int64)
        key = key * radix + inv
        size *= radix
    return key


def first_seen(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group rows by ``key``: (each group's first row, in first-seen order; each row's group number in
    that order)."""
    if len(key) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.reshape(-1)]


def first_seen_codes(games: GameColumns, parts: Sequence[np.ndarray]) -> tuple[list[tuple[str, str]], np.ndarray]:
    rows, code = first_seen(combined_key(parts))
    strings = games.strings
    return [tuple(strings[int(p[r])] for p in parts) for r in rows], code  # type: ignore[misc]


def last_per_group(group: np.ndarray, rows: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, the last of ``rows`` (ascending row numbers) that falls in it; -1 where none does."""
    out = np.full(n_groups, -1, np.int64)
    if len(rows):
        rev = rows[::-1]
        _, at = np.unique(group[rev], return_index=True)
        out[group[rev[at]]] = rev[at]
    return out


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
        k1 = _keys_list(np.concatenate([keys, none])[f])
        k2 = _keys_list(np.concatenate([keys, none])[s])
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
    """Per string code (of ``codes``, the query ids), its rank in ``battles._natural`` order: (0, int)
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
    for q in sorted(codes.tolist(), key=lambda q: _natural(g.strings[q])):
        key = _natural(g.strings[q])
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


class GameBuilder:
    """Games appended one by one (a run's, a walk's) into columns: ~60 bytes a game instead of a
    ``Game`` object's ~250. :meth:`build` gives the :class:`GameColumns`; iterating gives the games."""

    def __init__(self) -> None:
        self._strings = Strings()
        self._codes = {c: array("i") for c in _CODES}
        self._is_a = bytearray()
        self._outcome = array("b")
        self._keys = bytearray()  # KEY_BYTES per game, zeros: no key
        self._odd_keys: list[str | None] | None = None  # every key, once one is not 32 ASCII characters

    def append(self, g: Game) -> None:
        code = self._strings.code
        for c, col in self._codes.items():
            col.append(code(getattr(g, c)))
        self._is_a.append(g.candidate_is_a)
        self._outcome.append(NO_OUTCOME if g.outcome is None else g.outcome)
        k = g.judgment_key
        if self._odd_keys is None and (k is None or (len(k) == KEY_BYTES and k.isascii())):
            self._keys += b"\0" * KEY_BYTES if k is None else k.encode("ascii")
            return
        if self._odd_keys is None:
            self._odd_keys = _keys_list(self._fixed_keys())
            self._keys = bytearray()
        self._odd_keys.append(k)

    def extend(self, games: Iterable[Game]) -> None:
        for g in games:
            self.append(g)

    def _fixed_keys(self) -> np.ndarray:
        return np.frombuffer(bytes(self._keys), dtype=f"S{KEY_BYTES}").copy()

    def __len__(self) -> int:
        return len(self._outcome)

    def __iter__(self) -> Iterator[Game]:
        return iter(self.build())

    def build(self) -> GameColumns:
        if self._odd_keys is None:
            keys = self._fixed_keys()
        else:
            keys = np.empty(len(self._odd_keys), dtype=object)
            keys[:] = self._odd_keys
        return GameColumns(self._strings.items,
                           **{c: np.frombuffer(col, dtype=np.int32).copy() if len(col) else np.zeros(0, np.int32)
                              for c, col in self._codes.items()},
                           candidate_is_a=np.frombuffer(bytes(self._is_a), dtype=np.bool_).copy(),
                           outcome=np.frombuffer(self._outcome, dtype=np.int8).copy() if len(self._outcome)
                           else np.zeros(0, np.int8),
                           judgment_key=keys)


def columns_of(games: Iterable[Game]) -> Sequence[Game]:
    """What a tally holds: a builder's columns; a list (or columns) as it is."""
    if isinstance(games, GameBuilder):
        return games.build()
    return games if isinstance(games, Sequence) else list(games)


def same_games(a: Iterable[Game], b: Iterable[Game]) -> bool:
    """Whether two collections hold the same games (equal as ``Game`` objects), in any order."""
    x, y = GameColumns.of(columns_of(a)), GameColumns.of(columns_of(b))
    if len(x) != len(y):
        return False
    table = Strings(x.strings)
    to_x = np.asarray([table.code(s) + 1 for s in x.strings] + [0], np.int64)  # -1 (None) -> 0
    to_y = np.asarray([table.code(s) + 1 for s in y.strings] + [0], np.int64)
    kx, ky = x.judgment_key, y.judgment_key
    if kx.dtype == object or ky.dtype == object:  # None -> "", a key k -> "k" + k
        kx = np.asarray(["" if k is None else "k" + k for k in _keys_list(kx)], dtype=object)
        ky = np.asarray(["" if k is None else "k" + k for k in _keys_list(ky)], dtype=object)
    _, keys = np.unique(np.concatenate([kx, ky]), return_inverse=True)
    keys = keys.reshape(-1)

    def rows(g: GameColumns, to: np.ndarray, k: np.ndarray) -> np.ndarray:
        m = np.stack([*(to[getattr(g, c)] for c in _CODES), g.candidate_is_a.astype(np.int64),
                      g.outcome.astype(np.int64), k], axis=1)
        return m[np.lexsort(m.T[::-1])]

    return bool(np.array_equal(rows(x, to_x, keys[:len(x)]), rows(y, to_y, keys[len(x):])))
