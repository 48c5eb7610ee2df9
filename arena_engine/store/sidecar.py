"""The sidecar index ``<kind>.idx``: the scan table of a checkpoint file, saved so opening skips the scan.

Layout: a 32-byte header, then fixed 32-byte ``ENTRY`` rows, appended in file order as records become
durable (the JSONL file is fsynced before the rows that describe it are written). It is only a cache:
on open its rows are trusted only as far as they tile the JSONL file exactly from byte 0 (each row
starting where the previous one ended, within the file), and a sample of rows is checked against the
keys actually at those offsets; anything else and the JSONL file is scanned in full and the index
rewritten. Bytes of the JSONL file past the last trusted row are always scanned.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from arena_engine.store.frame import CRC_AT, key_of
from arena_engine.store.scan import BAD, ENTRY, LEN_MASK, Entries, join_key

HEADER = b"arena-engine checkpoint index 1\n"
assert len(HEADER) == ENTRY.itemsize == 32
_SPOT_CHECKS = 8


def load(path: Path, data_fd: int, data_size: int) -> Entries | None:
    """The trusted rows of the index at ``path`` for the checkpoint file ``data_fd``, or None."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if not raw.startswith(HEADER):
        return None
    n = (len(raw) - len(HEADER)) // ENTRY.itemsize
    rows = np.frombuffer(raw, dtype=ENTRY, count=n, offset=len(HEADER))
    if n == 0:
        return rows.copy()
    off = rows["off"]
    ln = (rows["len"] & LEN_MASK).astype(np.int64)
    line = rows["line"].astype(np.int64)
    ok = (ln > 0) & (off + ln <= data_size) & (line >= 1)
    ok[0] &= bool(off[0] == 0)
    ok[1:] &= (off[1:] == off[:-1] + ln[:-1]) & (line[1:] >= line[:-1])
    bad_at = np.flatnonzero(~ok)
    keep = int(bad_at[0]) if len(bad_at) else n
    rows = rows[:keep].copy()
    return rows if _spot_check(rows, data_fd) else None


def _spot_check(rows: Entries, data_fd: int) -> bool:
    """Do the keys at a sample of offsets (always including the last record) match the rows?"""
    records = np.flatnonzero((rows["len"] & BAD) == 0)
    if len(records) == 0:
        return True
    picks = set(np.linspace(0, len(records) - 1, num=min(_SPOT_CHECKS, len(records))).astype(int).tolist())
    for i in sorted(picks):
        row = rows[records[i]]
        off = int(row["off"])
        head = os.pread(data_fd, CRC_AT + 1, off - 1) if off else b"\n" + os.pread(data_fd, CRC_AT, 0)
        if head[:1] != b"\n" or key_of(head[1:]) != join_key(int(row["hi"]), int(row["lo"])):
            return False
    return True


class SidecarWriter:
    """Appends rows to ``<kind>.idx``; used only by the process holding the run folder's lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.size = os.fstat(self.fd).st_size

    def reset(self, rows: Entries) -> None:
        """Make the index hold exactly ``rows``."""
        os.ftruncate(self.fd, 0)
        self.size = 0
        self._write(HEADER + rows.tobytes())

    def keep(self, n_rows: int) -> None:
        """Drop everything after the first ``n_rows`` rows (an untrusted or torn end)."""
        size = len(HEADER) + n_rows * ENTRY.itemsize
        if size != self.size:
            os.ftruncate(self.fd, size)
            self.size = size

    def append(self, rows: Entries) -> None:
        if len(rows):
            self._write(rows.tobytes())

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, self.size)
            self.size += n
            view = view[n:]

    def close(self) -> None:
        os.close(self.fd)
