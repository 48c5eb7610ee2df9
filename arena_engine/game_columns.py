"""A run's games as compact columns (:class:`GameColumns`; the battles they make: ``battle_columns``).

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
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np

from .column_keys import combined_key, first_seen
from .games import Game

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


def keys_list(keys: np.ndarray) -> list[str | None]:
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
                             self.outcomes(), self.texts("reason"), keys_list(self.judgment_key),
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


def first_seen_codes(games: GameColumns, parts: Sequence[np.ndarray]) -> tuple[list[tuple[str, str]], np.ndarray]:
    rows, code = first_seen(combined_key(parts))
    strings = games.strings
    return [tuple(strings[int(p[r])] for p in parts) for r in rows], code  # type: ignore[misc]


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
            self._odd_keys = keys_list(self._fixed_keys())
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
        kx = np.asarray(["" if k is None else "k" + k for k in keys_list(kx)], dtype=object)
        ky = np.asarray(["" if k is None else "k" + k for k in keys_list(ky)], dtype=object)
    _, keys = np.unique(np.concatenate([kx, ky]), return_inverse=True)
    keys = keys.reshape(-1)

    def rows(g: GameColumns, to: np.ndarray, k: np.ndarray) -> np.ndarray:
        m = np.stack([*(to[getattr(g, c)] for c in _CODES), g.candidate_is_a.astype(np.int64),
                      g.outcome.astype(np.int64), k], axis=1)
        return m[np.lexsort(m.T[::-1])]

    return bool(np.array_equal(rows(x, to_x, keys[:len(x)]), rows(y, to_y, keys[len(x):])))
