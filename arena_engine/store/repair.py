"""What opening a checkpoint file found wrong, and the repair of its torn last line.

``CorruptLine`` and ``TornTail`` are the reports ``RunStore`` keeps (``corrupt_lines``, ``torn``);
``repair_tail`` completes or truncates an unterminated last line; ``damaged_lines`` names each line
the scan flagged. Nothing here holds a file open or knows the store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arena_engine.store.frame import parse_line
from arena_engine.store.index import KeyIndex
from arena_engine.store.scan import BAD, ENTRY, NOKEY, Entries, join_key, make_entries, split_key

logger = logging.getLogger("arena_engine.store")


@dataclass(frozen=True, slots=True)
class CorruptLine:
    """A checkpoint line that could not be read as a record.

    ``key`` is set when the line's key could still be read; ``superseded`` when a valid record with
    that key exists elsewhere in the file (nothing is lost then).
    """

    path: Path
    line: int
    reason: str
    key: bytes | None = None
    superseded: bool = False

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}: {self.reason}"
        if self.key is None:
            return f"{where}; skipped (its key is unreadable: if it held a finished request, that request will be sent again)"
        if self.superseded:
            return f"{where}; skipped (key {self.key.hex()} has a valid record elsewhere, nothing is lost)"
        return (
            f"{where}; skipped: the stored result for key {self.key.hex()} is unreadable, "
            "so that request will be sent again"
        )


@dataclass(frozen=True, slots=True)
class TornTail:
    """The unterminated end of a checkpoint file (an interrupted write), repaired on open."""

    path: Path
    line: int
    size: int
    completed: bool  # it was a whole record lacking only its newline, which was added

    def __str__(self) -> str:
        if self.completed:
            return f"{self.path}:{self.line}: last record lacked its newline (interrupted write); added it"
        return (
            f"{self.path}:{self.line}: torn last line ({self.size} bytes, no newline) left by an "
            "interrupted write; truncated it (it was never acknowledged as stored)"
        )


def repair_tail(
    fd: int, path: Path, torn: tuple[int, bytes], lines: int, fsync: Callable[[int], None]
) -> tuple[int, int, Entries, TornTail]:
    """Add the missing newline of a whole last record, or truncate a torn one; fsync the file.

    Returns the new end, the new number of whole lines, the index rows of a completed record, and
    the report (already logged).
    """
    off, tail = torn
    parsed = parse_line(tail)
    if parsed is not None:
        os.write(fd, b"\n")
        hi, lo = split_key(parsed[0])
        extra = make_entries([(hi, lo, off, len(tail) + 1, lines + 1)])
        info = TornTail(path, lines + 1, len(tail), completed=True)
        end, lines = off + len(tail) + 1, lines + 1
    else:
        os.ftruncate(fd, off)
        extra = np.empty(0, ENTRY)
        info = TornTail(path, lines + 1, len(tail), completed=False)
        end = off
    fsync(fd)
    logger.warning("%s", info)
    return end, lines, extra, info


def damaged_lines(path: Path, rows: Entries, index: KeyIndex) -> list[CorruptLine]:
    """A report (each logged) for every row the scan flagged, given the index of the valid ones."""
    found: list[CorruptLine] = []
    flags = rows["len"] & BAD
    for i in np.flatnonzero(flags).tolist():
        row = rows[i]
        line = int(row["line"])
        if i + 1 < len(rows) and int(rows[i + 1]["line"]) == line:
            reason = "damaged text before a valid record on the same line (the record is kept)"
        elif row["len"] & NOKEY:
            reason = "damaged line (not a readable checkpoint record)"
        else:
            reason = "damaged record (bad frame or checksum)"
        if row["len"] & NOKEY:
            c = CorruptLine(path, line, reason)
        else:
            key = join_key(int(row["hi"]), int(row["lo"]))
            c = CorruptLine(path, line, reason, key, superseded=index.find(key) is not None)
        found.append(c)
        logger.warning("%s", c)
    return found
