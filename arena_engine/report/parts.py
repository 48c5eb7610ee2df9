"""Big battle browsers in parts: the first battles inside ``report.html``, the rest compressed beside it.

A run of 100k queries has a few hundred thousand battles whose texts alone are tens of megabytes; one
page holding all of them as JSON is too heavy to write on every run and to open. So the page keeps
the first :data:`INLINE_BATTLES` battles (the browser is usable at once) and every further
:data:`PART_BATTLES` battles go to ``report_battles/part-NNNN.js`` beside it: a script that hands the
page a gzip-compressed, base64-encoded JSON slice of the battle columns with its own string table. The
page's script adds them as script elements once the page is drawn (a page opened from disk may load
scripts beside it, but may not ``fetch`` files) and inflates them with the browser's
``DecompressionStream``, so the folder still opens offline and the page is usable before the parts
arrive; the Content-Security-Policy allows scripts from beside the page only when there are parts.

Slices index the global ``models`` and ``subsets`` lists of the page; their string ids (and the indexes
into ``ref_scores``) are local, and the page shifts them by the sizes of what it already holds.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from ..errors import ArgumentError

__all__ = ["INLINE_BATTLES", "PARTS_DIR", "PART_BATTLES", "iter_split", "part_name", "part_script", "split_battles"]

#: battles kept in the page itself; the rest go to parts
INLINE_BATTLES = 5000
#: battles per part file
PART_BATTLES = 25000
#: the folder beside report.html that holds the parts
PARTS_DIR = "report_battles"

#: columns holding an index into ``strings`` (-1: none)
STRING_COLUMNS = ("qid", "q", "ac", "ao", "r1", "r2", "x1", "x2", "ref")
#: columns holding an index into ``ref_scores`` (-1: none)
SCORE_COLUMNS = ("mc", "mo")
_TEXT_COLUMNS = ("q", "ac", "ao", "r1", "r2")


def part_name(i: int) -> str:
    """File name of part ``i`` (1-based), relative to the folder of report.html."""
    return f"{PARTS_DIR}/part-{i:04d}.js"


def _slice(data: Mapping[str, Any], cols: Mapping[str, np.ndarray], start: int, end: int,
           text_ids: np.ndarray) -> dict[str, Any]:
    """Battles [start, end) of ``data`` with their own string table and ref_scores."""
    local = {c: v[start:end] for c, v in cols.items()}
    used = np.unique(np.concatenate([local[c] for c in STRING_COLUMNS]))
    used = used[used >= 0]
    scored = np.unique(np.concatenate([local[c] for c in SCORE_COLUMNS]))
    scored = scored[scored >= 0]
    out_cols: dict[str, list[int]] = {}
    for c, v in local.items():
        if c in STRING_COLUMNS or c in SCORE_COLUMNS:
            table = used if c in STRING_COLUMNS else scored
            mapped = np.where(v >= 0, np.searchsorted(table, v), -1)
            out_cols[c] = mapped.tolist()
        else:
            out_cols[c] = v.tolist()
    strings: Sequence[str] = data["strings"]
    ref_scores: Sequence[Any] = data["ref_scores"]
    texts = np.intersect1d(text_ids, used, assume_unique=True)
    return {
        "n": end - start,
        "strings": [strings[i] for i in used.tolist()],
        "columns": out_cols,
        "text_ids": np.searchsorted(used, texts).tolist(),
        "ref_scores": [ref_scores[i] for i in scored.tolist()],
    }


def split_battles(data: dict[str, Any], *, inline: int = INLINE_BATTLES,
                  part_size: int = PART_BATTLES) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The page's battle data (the first ``inline`` battles and the totals) and the parts' slices.

    A browser of at most ``inline`` battles is returned unchanged with no parts.
    """
    head, parts = iter_split(data, inline=inline, part_size=part_size)
    return head, list(parts)


def iter_split(data: dict[str, Any], *, inline: int = INLINE_BATTLES,
               part_size: int = PART_BATTLES) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """:func:`split_battles` with the parts' slices made one at a time, as they are asked for (a big
    run's parts are written one by one, never all held at once). ``data``'s columns and ``text_ids``
    may be lists or integer arrays; a browser returned unchanged has them as lists."""
    n = int(data["n"])
    if n <= inline:
        if (any(not isinstance(v, list) for v in data["columns"].values()) or not isinstance(data["text_ids"], list)
                or not isinstance(data["ref_scores"], list)):
            data = {**data, "columns": {c: np.asarray(v, dtype=np.int64).tolist() for c, v in data["columns"].items()},
                    "text_ids": np.asarray(data["text_ids"], dtype=np.int64).tolist(),
                    "ref_scores": list(data["ref_scores"])}
        return data, iter(())
    if inline < 1 or part_size < 1:
        raise ArgumentError("write_reports: inline and part_size must be >= 1")
    cols = {c: np.asarray(v, dtype=np.int64) for c, v in data["columns"].items()}
    text_ids = np.asarray(data["text_ids"], dtype=np.int64)
    head = {k: v for k, v in data.items() if k not in ("strings", "columns", "text_ids", "ref_scores", "n")}
    head.update(_slice(data, cols, 0, inline, text_ids))
    head["total"] = n
    starts = range(inline, n, part_size)
    head["parts"] = [{"src": part_name(i + 1), "n": min(n, s + part_size) - s} for i, s in enumerate(starts)]
    return head, (_slice(data, cols, s, min(n, s + part_size), text_ids) for s in starts)


def part_script(index: int, part: dict[str, Any]) -> str:
    """The text of part file ``index`` (1-based): one call that hands the page its compressed slice.

    base64 holds only ``A-Z a-z 0-9 + / =``, so the script is inert whatever the answers say.
    """
    packed = base64.b64encode(gzip.compress(orjson.dumps(part), compresslevel=6, mtime=0)).decode("ascii")
    return (f'"use strict";(window.ARENA_PARTS = window.ARENA_PARTS || [])'
            f'.push({{"i": {index}, "n": {int(part["n"])}, "z": "{packed}"}});\n')
