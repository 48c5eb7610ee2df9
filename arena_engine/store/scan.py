"""Scan a checkpoint file: find every line, check its frame (and crc32), read its key, vectorized.

The result is a table of entries in file order (``ENTRY`` rows: key halves, byte offset, length, line
number), including rows flagged ``BAD`` for damaged spans, so the caller can report them and the
sidecar index can remember them. The unterminated end of the file (a torn write) is returned apart.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from arena_engine.store.frame import (
    BODY_AT,
    CRC_AT,
    CRC_END,
    KEY_AT,
    KEY_END,
    MIN_LINE,
    P0,
    P1,
    P2,
    key_of,
    parse_line,
)

# One indexed span of a checkpoint file. ``hi``/``lo``: the key as two big-endian halves; ``len``
# carries flags in its top bits for damaged spans.
ENTRY = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("off", "<i8"), ("len", "<u4"), ("line", "<u4")])
BAD = np.uint32(1 << 31)  # a damaged span, not a record
NOKEY = np.uint32(1 << 30)  # a damaged span whose key could not be read
LEN_MASK = np.uint32((1 << 30) - 1)

Entries = npt.NDArray[np.void]

READ_CHUNK = 16 << 20

_HEX_LUT = np.full(256, 255, dtype=np.uint8)
_HEX_LUT[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX_LUT[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_FRAME_POS = np.concatenate(
    [np.arange(0, KEY_AT), np.arange(KEY_END, CRC_AT), np.arange(CRC_END, BODY_AT + 1)]
)
_FRAME_VAL = np.frombuffer(P0 + P1 + P2 + b"{", np.uint8)
_CRC_WEIGHTS = (16 ** np.arange(7, -1, -1)).astype(np.uint64)


_KEY_HALVES = struct.Struct(">QQ")
split_key: Callable[[bytes], tuple[int, int]] = _KEY_HALVES.unpack  # key -> (hi, lo)


def join_key(hi: int, lo: int) -> bytes:
    return _KEY_HALVES.pack(hi, lo)


def rows_for_keys(keys: list[bytes], locs: list[tuple[int, int, int]]) -> Entries:
    """ENTRY rows for keys with their (offset, length, line) locations."""
    out = np.empty(len(keys), ENTRY)
    if keys:
        halves = np.frombuffer(b"".join(keys), dtype=">u8").reshape(-1, 2)
        cols = np.array(locs, dtype=np.int64).reshape(-1, 3)
        out["hi"], out["lo"] = halves[:, 0], halves[:, 1]
        out["off"], out["len"], out["line"] = cols[:, 0], cols[:, 1], cols[:, 2]
    return out


def make_entries(rows: list[tuple[int, int, int, int, int]]) -> Entries:
    return np.array(rows, dtype=ENTRY)


@dataclass
class Scan:
    entries: Entries  # file order, BAD spans included
    end: int  # offset just past the last newline
    lines: int  # number of the last complete line
    torn: tuple[int, bytes] | None = None  # (offset, bytes) of an unterminated tail
    _parts: list[Entries] = field(default_factory=list, repr=False)


def scan(fd: int, start: int = 0, first_line: int = 1, *, verify: bool = True) -> Scan:
    """Scan ``fd`` from byte ``start`` (the beginning of line ``first_line``) to its end."""
    parts: list[Entries] = []
    unordered = False
    buf = bytearray(READ_CHUNK)
    carry = 0  # bytes of an unfinished line at the start of buf
    base = start  # file offset of buf[0]
    line = first_line
    torn = None
    while True:
        if carry == len(buf):  # a line longer than the buffer
            buf.extend(bytes(len(buf)))
        with memoryview(buf) as mv:
            got = os.preadv(fd, [mv[carry:]], base + carry)
        if got == 0:
            if carry:
                torn = (base, bytes(buf[:carry]))
            break
        n = carry + got
        last_nl = buf.rfind(b"\n", 0, n)
        if last_nl < 0:
            carry = n
            continue
        good, bad, n_lines = _scan_chunk(buf, last_nl + 1, base, line, verify)
        parts.append(good)
        for off, text, line_no in bad:
            parts.append(_damaged(text, off, line_no))
            unordered = True
        line += n_lines
        rest = n - (last_nl + 1)
        buf[:rest] = buf[last_nl + 1 : n]
        base += last_nl + 1
        carry = rest
    entries = np.concatenate(parts) if parts else np.empty(0, ENTRY)
    if unordered:
        entries = entries[np.argsort(entries["off"], kind="stable")]
    return Scan(entries, base, line - 1, torn)


def _scan_chunk(
    buf: bytearray, n: int, base: int, first_line: int, verify: bool
) -> tuple[Entries, list[tuple[int, bytes, int]], int]:
    """Entries of the valid lines in ``buf[:n]`` (whole lines) and the damaged lines' text."""
    arr = np.frombuffer(buf, dtype=np.uint8, count=n)
    ends = np.flatnonzero(arr == 10)  # each line's newline
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lens = ends - starts + 1

    cand = np.flatnonzero((lens >= MIN_LINE) & (arr[np.maximum(ends - 1, 0)] == ord("}")))
    s = starts[cand]
    # The first BODY_AT + 1 bytes of each candidate line, gathered as rows of a sliding window view.
    if n > BODY_AT:
        head = np.lib.stride_tricks.sliding_window_view(arr, BODY_AT + 1)[s]
    else:  # only short lines (a blank line after the indexed ones): none of them can be a record
        head = np.empty((0, BODY_AT + 1), np.uint8)
    good = (head[:, _FRAME_POS] == _FRAME_VAL).all(axis=1)
    nib_key = _HEX_LUT[head[:, KEY_AT:KEY_END]]
    nib_crc = _HEX_LUT[head[:, CRC_AT:CRC_END]]
    good &= (nib_key != 255).all(axis=1) & (nib_crc != 255).all(axis=1)
    if verify:
        # crc32 of each record body, iterated in C (map) rather than in a Python loop.
        body_from = (s + BODY_AT).tolist()
        body_to = (ends[cand] - 1).tolist()
        with memoryview(buf) as mv:
            sums = list(map(zlib.crc32, map(mv.__getitem__, map(slice, body_from, body_to))))
        good &= np.array(sums, dtype=np.uint64) == nib_crc.astype(np.uint64) @ _CRC_WEIGHTS
    sel = cand[good]
    key_bytes = (nib_key[good][:, 0::2] << 4) | nib_key[good][:, 1::2]
    halves = np.ascontiguousarray(key_bytes).view(">u8")
    out = np.empty(len(sel), ENTRY)
    out["hi"] = halves[:, 0]
    out["lo"] = halves[:, 1]
    out["off"] = starts[sel] + base
    out["len"] = lens[sel]
    out["line"] = sel + first_line

    bad_mask = np.ones(len(ends), dtype=bool)
    bad_mask[sel] = False
    bad = [
        (base + int(starts[i]), bytes(buf[int(starts[i]) : int(ends[i]) + 1]), first_line + i)
        for i in np.flatnonzero(bad_mask).tolist()
    ]
    return out, bad, len(ends)


def _damaged(text: bytes, off: int, line_no: int) -> Entries:
    """Entries for one damaged line: a BAD span, plus a valid record glued after garbage if there is one
    (what a torn write followed by a later append leaves)."""
    at = text.rfind(P0)
    while at > 0:
        parsed = parse_line(text[at:])
        if parsed is not None:
            return make_entries(
                [
                    _bad_row(text[:at], off, line_no),
                    (*split_key(parsed[0]), off + at, len(text) - at, line_no),
                ]
            )
        at = text.rfind(P0, 0, at)
    return make_entries([_bad_row(text, off, line_no)])


def _bad_row(text: bytes, off: int, line_no: int) -> tuple[int, int, int, int, int]:
    key = key_of(text)
    if key is None:
        return 0, 0, off, len(text) | int(BAD) | int(NOKEY), line_no
    return *split_key(key), off, len(text) | int(BAD), line_no
