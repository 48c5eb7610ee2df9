"""The leaderboards for scripts: ``arena-engine rate --format json|csv|markdown``.

Each row is one model in one scope: win rate against the baseline with its interval (0..1), the rating
on the Elo scale (baseline 1000) with its interval, the games and the flags. JSON has no infinity: a
rating of a model that only won (or lost) is ``null`` there and ``inf`` in CSV and Markdown.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

import orjson

from ..leaderboard import Board
from .tables import leaderboard_text

FORMATS = ("text", "json", "csv", "markdown")
COLUMNS = ("scope", "dataset", "subset", "model", "winrate", "winrate_lower", "winrate_upper",
           "rating", "rating_lower", "rating_upper", "games", "flags", "supported")


def _rows(boards: Sequence[Board]) -> list[dict[str, Any]]:
    rows = []
    for b in boards:
        for e in b.entries:
            rows.append({
                "scope": b.scope.title, "dataset": b.scope.dataset, "subset": b.scope.subset, "model": e.model,
                "winrate": e.winrate, "winrate_lower": e.lower, "winrate_upper": e.upper,
                "rating": e.rating, "rating_lower": e.rating_lower, "rating_upper": e.rating_upper,
                "games": e.games, "flags": list(e.flags), "supported": b.supported,
            })
    return rows


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def leaderboards_json(boards: Sequence[Board]) -> str:
    data = [{k: _finite(v) for k, v in row.items()} for row in _rows(boards)]
    return orjson.dumps({"baseline": boards[0].baseline if boards else None, "rows": data},
                        option=orjson.OPT_INDENT_2).decode() + "\n"


def leaderboards_csv(boards: Sequence[Board]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for row in _rows(boards):
        w.writerow(["" if row[c] is None else ";".join(row[c]) if c == "flags" else row[c] for c in COLUMNS])
    return buf.getvalue()


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _elo(x: float) -> str:
    return "n/a" if math.isnan(x) else ("inf" if x > 0 else "-inf") if math.isinf(x) else f"{x:.0f}"


def leaderboards_markdown(boards: Sequence[Board]) -> str:
    parts = []
    for b in boards:
        lines = [f"### {_md_cell(b.scope.title)}" + ("" if b.supported else " (NOT SUPPORTED by the judge's verdicts)"),
                 "", "| Model | Win rate (%) | CI (%) | Rating | Rating CI | Games |", "|---|---:|---:|---:|---:|---:|"]
        for e in b.entries:
            lines.append(f"| {_md_cell(e.model)} | {100 * e.winrate:.1f} | {100 * e.lower:.1f} to {100 * e.upper:.1f} "
                         f"| {_elo(e.rating)} | {_elo(e.rating_lower)} to {_elo(e.rating_upper)} | {e.games} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def format_leaderboards(boards: Sequence[Board], fmt: str) -> str:
    if fmt == "json":
        return leaderboards_json(boards)
    if fmt == "csv":
        return leaderboards_csv(boards)
    if fmt == "markdown":
        return leaderboards_markdown(boards)
    if fmt == "text":
        return leaderboard_text(boards)
    raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")
