"""One kind's checkpoint file: opened (sidecar, tail scan, repair, index), appended to, read back.

``RunStore`` holds one ``KindFile`` per kind and does the bookkeeping across them (counts of what was
found, the fsync thread, the lock).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from arena_engine.errors import CheckpointError
from arena_engine.store import sidecar
from arena_engine.store.frame import body_of, key_of
from arena_engine.store.index import KeyIndex, Location
from arena_engine.store.repair import CorruptLine, TornTail, damaged_lines, repair_tail
from arena_engine.store.scan import BAD, ENTRY, LEN_MASK, Entries, scan

logger = logging.getLogger("arena_engine.store")

KIND_PATTERN = re.compile(r"[a-z_][a-z0-9_]*")

Fsync = Callable[[int], None]


@dataclass(slots=True)
class KindFile:
    """One kind's checkpoint file, its index and its sidecar."""

    path: Path
    fd: int
    end: int  # bytes of whole lines; every append lands here (O_APPEND, and we hold the lock)
    lines: int  # number of the last whole line
    index: KeyIndex
    side: sidecar.SidecarWriter | None  # None in a read-only store
    pending: deque[tuple[bytes, Location]] = field(default_factory=deque)  # not yet in the sidecar
    side_stale: bool = False  # the sidecar lists a record found damaged: emptied, next open rescans
    unreadable: dict[bytes, CorruptLine] = field(default_factory=dict)


@dataclass(slots=True)
class Found:
    """What opening one file found: its damaged lines, its repaired tail, repeated records."""

    corrupt_lines: list[CorruptLine] = field(default_factory=list)
    torn: TornTail | None = None
    repeated: int = 0  # records of a key stored earlier in the file (the first is used)


def new_kind_file(path: Path) -> KindFile:
    """Create the empty checkpoint file ``path`` (it must not exist) and its empty sidecar."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
    side = sidecar.SidecarWriter(path.with_suffix(".idx"))
    side.reset(np.empty(0, ENTRY))
    return KindFile(path, fd, 0, 0, KeyIndex(), side)


def load_kind_file(path: Path, *, readonly: bool, full_scan: bool, fsync: Fsync) -> tuple[KindFile, Found]:
    """Open ``path``: read its sidecar, scan the lines after it, repair a torn tail, index the records."""
    if readonly:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    else:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
    side: sidecar.SidecarWriter | None = None
    out = Found()
    try:
        size = os.fstat(fd).st_size
        idx_path = path.with_suffix(".idx")
        known = None if full_scan else sidecar.load(idx_path, fd, size)
        if known is None:
            known = np.empty(0, ENTRY)
            fresh = True
        else:
            fresh = False
        start = int(known["off"][-1] + (known["len"][-1] & LEN_MASK)) if len(known) else 0
        first_line = int(known["line"][-1]) + 1 if len(known) else 1
        found = scan(fd, start, first_line)
        end, lines = found.end, found.lines
        tail_rows = found.entries
        if readonly:  # a torn tail is a writer's business: leave it out
            rows = np.concatenate([known, tail_rows]) if len(tail_rows) else known
            k = KindFile(path, fd, end, lines, KeyIndex(), None)
            _index_rows(k, rows, out)
            return k, out
        if found.torn is not None:
            end, lines, extra, out.torn = repair_tail(fd, path, found.torn, lines, fsync)
            if len(extra):
                tail_rows = np.concatenate([tail_rows, extra])
        if len(tail_rows) or fresh:
            fsync(fd)  # the sidecar may only describe durable lines
        side = sidecar.SidecarWriter(idx_path)
        if fresh:
            side.reset(tail_rows)
        else:
            side.keep(len(known))
            side.append(tail_rows)
        rows = np.concatenate([known, tail_rows]) if len(tail_rows) else known
        k = KindFile(path, fd, end, lines, KeyIndex(), side)
        _index_rows(k, rows, out)
        return k, out
    except BaseException:
        if side is not None:
            side.close()
        os.close(fd)
        raise


def _index_rows(k: KindFile, rows: Entries, out: Found) -> None:
    valid = rows[(rows["len"] & BAD) == 0]
    dups = k.index.build(valid)
    if dups:
        out.repeated += dups
        logger.warning("%s: %d repeated record(s) of a stored key; the first of each is used", k.path, dups)
    for c in damaged_lines(k.path, rows, k.index):
        if c.key is not None and not c.superseded:
            k.unreadable[c.key] = c
        out.corrupt_lines.append(c)


def append_line(k: KindFile, line: bytes) -> None:
    """Write ``line`` at the end of the file; on failure truncate what was written and raise."""
    try:
        n = os.write(k.fd, line)
        while n < len(line):  # a short write: disk full, or a signal mid-way
            n += os.write(k.fd, line[n:])
    except OSError as exc:
        # Never leave half a line behind: the next line would be glued to it.
        with contextlib.suppress(OSError):
            os.ftruncate(k.fd, k.end)
        raise CheckpointError(f"cannot append to {k.path}: {exc.strerror or exc}") from exc


def read_body(k: KindFile, loc: Location) -> bytes | None:
    """The record body at ``loc``; None if its frame or checksum is bad."""
    off, ln, _ = loc
    return body_of(os.pread(k.fd, ln, off))


def iter_items(
    k: KindFile,
    offs: np.ndarray,
    lens: np.ndarray,
    lines: np.ndarray,
    damaged: Callable[[KindFile, bytes, int], None],
) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """(key, record) at each location, in order; ``damaged(k, key, line)`` for each one found bad."""
    with open(k.path, "rb", buffering=1 << 20) as fh:
        pos = 0
        step = 65536
        for i in range(0, len(offs), step):
            part = slice(i, i + step)
            for off, ln, line in zip(offs[part].tolist(), lens[part].tolist(), lines[part].tolist(), strict=True):
                if off != pos:
                    fh.seek(off)
                data = fh.read(ln)
                pos = off + ln
                body = body_of(data)
                key = key_of(data)
                if body is None or key is None:
                    if key is not None:
                        damaged(k, key, line)
                    continue
                yield key, orjson.loads(body)
