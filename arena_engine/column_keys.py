"""Grouping rows of numpy columns: one key per row from several columns, groups in first-seen order.

Plain numpy on plain arrays; ``game_columns`` and ``battle_columns`` group games and battles with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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


def last_per_group(group: np.ndarray, rows: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, the last of ``rows`` (ascending row numbers) that falls in it; -1 where none does."""
    out = np.full(n_groups, -1, np.int64)
    if len(rows):
        rev = rows[::-1]
        _, at = np.unique(group[rev], return_index=True)
        out[group[rev[at]]] = rev[at]
    return out
