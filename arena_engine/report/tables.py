"""The text reports: the seed's report table and ``leaderboard.txt`` (SPEC section 4), and a parser of
``leaderboard.txt`` so tests (and users' scripts) can read the numbers back."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..leaderboard import Board
from ..pipeline import ArenaResults

TABLE_HEADER = ("Model", "Dataset", "Metric", "Subset", "Num", "Score", "Cat.0")
ARENA_MODEL = "Arena"
ARENA_DATASET = "general_arena"


def _fmt_score(x: float) -> str:
    return f"{round(x, 4):g}" if abs(x) >= 1e-4 or x == 0 else f"{x:.4f}"


def grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A grid table like the seed's (tabulate's 'grid' style), one line per row."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    head_sep = sep.replace("-", "=")

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [sep, line(header), head_sep]
    for r in rows:
        out += [line(r), sep]
    return "\n".join(out)


def report_rows(results: ArenaResults) -> list[tuple[str, ...]]:
    """Rows of the report table: win rates per scope and candidate, then the reference metrics."""
    baseline = results.config.baseline
    subset_boards = [b for b in results.boards if b.scope.kind == "subset"]
    overall = results.overall
    rows: list[tuple[str, ...]] = []
    for metric, attr in (("winrate", "winrate"), ("winrate_lower", "lower"), ("winrate_upper", "upper")):
        for board in subset_boards:
            n = results.queries.get((board.scope.dataset or "", board.scope.subset or ""), 0)
            for e in board.entries:
                if e.model == baseline:
                    continue
                name = f"{board.scope.dataset}&{board.scope.subset}@{e.model}&{baseline}"
                rows.append((ARENA_MODEL, ARENA_DATASET, metric, name, str(n), _fmt_score(getattr(e, attr)), "default"))
        candidates = [e for e in overall.entries if e.model != baseline]
        if candidates:
            n_all = sum(results.queries.values()) * len(candidates)
            mean = sum(getattr(e, attr) for e in candidates) / len(candidates)
            rows.append((ARENA_MODEL, ARENA_DATASET, metric, "OVERALL", str(n_all), _fmt_score(mean), "-"))
    for (model, dataset, subset), scores in sorted(results.reference_metrics.items()):
        n = results.reference_counts.get((model, dataset, subset), 0)
        for metric, value in scores.items():
            rows.append((model, dataset, metric, subset, str(n), _fmt_score(value), "default"))
    return rows


def report_table(results: ArenaResults) -> str:
    return grid(TABLE_HEADER, report_rows(results))


def _pct(x: float) -> str:
    v = round(100 * x, 1)
    return f"{v:g}" if v == int(v) else f"{v:.1f}"


def board_text(board: Board) -> str:
    if board.scope.kind == "overall":
        title = "=== OVERALL LEADERBOARD ==="
    elif board.scope.kind == "dataset":
        title = f"=== DATASET LEADERBOARD: {board.scope.dataset} ==="
    else:
        title = f"=== SUBSET LEADERBOARD: {board.scope.dataset} - {board.scope.subset} ==="
    rows = []
    for e in board.entries:
        if e.model == board.baseline:
            rows.append((e.model, "50", "(+0.0 / +0.0)"))
        else:
            lo = 100 * (e.lower - e.winrate)
            hi = 100 * (e.upper - e.winrate)
            rows.append((e.model, _pct(e.winrate), f"({lo:+.1f} / {hi:+.1f})"))
    header = ("Model", "WinRate (%)", "CI (%)")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def leaderboard_text(boards: Sequence[Board]) -> str:
    return "\n\n".join(board_text(b) for b in boards) + "\n"


_TITLE_RE = re.compile(r"^=== (OVERALL LEADERBOARD|DATASET LEADERBOARD: (.+)|SUBSET LEADERBOARD: (.+)) ===$")
_ROW_RE = re.compile(r"^(.+?)\s+(\d+(?:\.\d+)?)\s+\(([+-]\d+\.\d) / ([+-]\d+\.\d)\)$")


def parse_leaderboard(text: str) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Read ``leaderboard.txt`` back: {section title: {model: (winrate %, lower delta %, upper delta %)}}."""
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    section: dict[str, tuple[float, float, float]] | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if m := _TITLE_RE.match(line):
            title = "OVERALL" if m.group(1).startswith("OVERALL") else (m.group(2) or m.group(3))
            section = out.setdefault(title, {})
        elif section is not None and (m := _ROW_RE.match(line)):
            section[m.group(1).strip()] = (float(m.group(2)), float(m.group(3)), float(m.group(4)))
    return out
