"""In-memory key index of one checkpoint file: ~36 bytes per record, lookups in about a microsecond.

Records indexed at open (and merged from recent puts now and then) sit in numpy arrays sorted by key,
with a directory on the key's top bits so a lookup touches one or two slots through memoryviews (no
numpy call per lookup). Keys put since the last merge sit in a plain dict.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from arena_engine.store.scan import Entries, rows_for_keys, split_key

MERGE_AT = 16384  # recent puts kept in the dict (~250 bytes each) before they are merged into the arrays

Location = tuple[int, int, int]  # byte offset, length (newline included), line number


class KeyIndex:
    """Key -> location of its record, for one checkpoint file."""

    def __init__(self) -> None:
        self._set_sorted(
            np.empty(0, np.uint64),
            np.empty(0, np.uint64),
            np.empty(0, np.int64),
            np.empty(0, np.uint32),
            np.empty(0, np.uint32),
        )
        self.recent: dict[bytes, Location] = {}
        self.dead: set[bytes] = set()  # keys whose stored line turned out unreadable after open

    def __len__(self) -> int:
        return len(self._hi) - len(self.dead) + len(self.recent)

    def find(self, key: bytes) -> Location | None:
        hit = self.recent.get(key)
        if hit is not None:
            return hit
        if self.dead and key in self.dead:
            return None
        hi, lo = split_key(key)
        b = hi >> self._shift
        i, j = self._dir_mv[b], self._dir_mv[b + 1]
        hi_mv, lo_mv = self._hi_mv, self._lo_mv
        while i < j:
            if hi_mv[i] == hi and lo_mv[i] == lo:
                return self._off_mv[i], self._len_mv[i], self._line_mv[i]
            i += 1
        return None

    def add(self, key: bytes, loc: Location) -> None:
        """Index a record just appended (the caller checked the key is absent)."""
        self.recent[key] = loc
        if len(self.recent) >= MERGE_AT:
            self.merge()

    def kill(self, key: bytes) -> None:
        """Forget a key whose record cannot be read back (it will be stored again)."""
        if self.recent.pop(key, None) is None:
            self.dead.add(key)

    def build(self, rows: Entries) -> int:
        """Index valid record rows given in file order; of equal keys the first wins. Returns the
        number of duplicates dropped."""
        self.recent = {}
        self.dead = set()
        hi = np.ascontiguousarray(rows["hi"])
        lo = np.ascontiguousarray(rows["lo"])
        order = np.argsort(hi)
        shi = hi[order]
        dups = 0
        if len(shi) > 1 and bool((shi[1:] == shi[:-1]).any()):
            # Rare: equal top halves. Sort on the whole key, then file position, and drop repeats.
            order = np.lexsort((np.arange(len(rows)), lo, hi))
            shi, slo = hi[order], lo[order]
            first = np.ones(len(order), dtype=bool)
            first[1:] = (shi[1:] != shi[:-1]) | (slo[1:] != slo[:-1])
            dups = int(len(order) - first.sum())
            order = order[first]
            shi = hi[order]
        self._set_sorted(
            shi,
            lo[order],
            rows["off"][order].astype(np.int64),
            rows["len"][order].astype(np.uint32),
            rows["line"][order].astype(np.uint32),
        )
        return dups

    def merge(self) -> None:
        """Move the recent puts into the sorted arrays."""
        if not self.recent and not self.dead:
            return
        recent, self.recent = self.recent, {}
        hi, lo, off, ln, line = self._hi, self._lo, self._off.copy(), self._len.copy(), self._line.copy()
        new_keys: list[bytes] = []
        new_locs: list[Location] = []
        for key, loc in recent.items():
            if key in self.dead:  # stored again after its first copy proved unreadable: replace in place
                self.dead.discard(key)
                i = self._slot(key)
                off[i], ln[i], line[i] = loc
            else:
                new_keys.append(key)
                new_locs.append(loc)
        if new_keys:
            rows = rows_for_keys(new_keys, new_locs)
            rows = rows[np.argsort(rows["hi"], kind="stable")]
            at = np.searchsorted(hi, rows["hi"])
            hi = np.insert(hi, at, rows["hi"])
            lo = np.insert(lo, at, rows["lo"])
            off = np.insert(off, at, rows["off"])
            ln = np.insert(ln, at, rows["len"])
            line = np.insert(line, at, rows["line"])
        self._set_sorted(hi, lo, off, ln, line)

    def _slot(self, key: bytes) -> int:
        hi, lo = split_key(key)
        b = hi >> self._shift
        for i in range(self._dir_mv[b], self._dir_mv[b + 1]):
            if self._hi_mv[i] == hi and self._lo_mv[i] == lo:
                return i
        raise KeyError(key.hex())

    def locations(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
        """(offsets, lengths, line numbers) of every readable record, in file order."""
        alive = np.ones(len(self._hi), dtype=bool)
        for key in self.dead:
            alive[self._slot(key)] = False
        off, ln, line = self._off[alive], self._len[alive], self._line[alive]
        if self.recent:
            extra = np.array(list(self.recent.values()), dtype=np.int64).reshape(-1, 3)
            off = np.concatenate([off, extra[:, 0]])
            ln = np.concatenate([ln, extra[:, 1].astype(np.uint32)])
            line = np.concatenate([line, extra[:, 2].astype(np.uint32)])
        order = np.argsort(off, kind="stable")
        return off[order], ln[order], line[order]

    def _set_sorted(
        self,
        hi: npt.NDArray[np.uint64],
        lo: npt.NDArray[np.uint64],
        off: npt.NDArray[np.int64],
        ln: npt.NDArray[np.uint32],
        line: npt.NDArray[np.uint32],
    ) -> None:
        self._hi, self._lo, self._off, self._len, self._line = hi, lo, off, ln, line
        bits = max(4, len(hi).bit_length())
        self._shift = 64 - bits
        counts = np.bincount((hi >> np.uint64(self._shift)).astype(np.intp), minlength=1 << bits)
        directory = np.zeros((1 << bits) + 1, dtype=np.int64)
        np.cumsum(counts, out=directory[1:])
        self._dir = directory
        self._dir_mv = directory.data
        self._hi_mv = hi.data
        self._lo_mv = lo.data
        self._off_mv = off.data
        self._len_mv = ln.data
        self._line_mv = line.data
