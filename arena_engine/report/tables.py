"""The text reports: the seed's report table and ``leaderboard.txt`` (docs/spec.md, section 4), and parsers of
``leaderboard.txt`` so tests (and users' scripts) can read the numbers back.

Both reports carry each scope's judge diagnostics (:class:`~arena_engine.reliability.BoardDiagnostics`)
beside the ranking: in ``leaderboard.txt`` as lines under each board's table (``games:``, ``judge:``,
``both orders:`` and, for an unsupported ranking, ``NOT SUPPORTED:``), in the report table as two grids
below the seed's table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from ..leaderboard import Board, scope_name
from ..results import ArenaResults

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


DIAGNOSTICS_HEADER = ("Scope", "Games", "Rated", "Excluded", "Excluded (%)", "Excluded by reason",
                      "Consistency (%)", "Disagree (%)", "Favour A / B", "Position bias", "Ranking")
BOTH_ORDERS_HEADER = ("Scope", "Model", "Battles", "Won both (%)", "Lost both (%)")


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _bias(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def diagnostics_rows(boards: Sequence[Board]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for b in boards:
        d = b.diagnostics
        rows.append((scope_name(b.scope), str(d.games), str(d.rated), str(d.excluded), _share(d.excluded_share),
                     "; ".join(f"{k}: {n}" for k, n in d.excluded_by_reason) or "-",
                     _share(d.position_consistency), _share(d.disagree_share), f"{d.lean_a} / {d.lean_b}",
                     _bias(d.position_bias),
                     "supported" if d.supported else "NOT SUPPORTED"))
    return rows


def both_orders_rows(boards: Sequence[Board]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for b in boards:
        for e in b.entries:
            m = b.diagnostics.model(e.model)
            if e.model == b.baseline or m is None:
                continue
            rows.append((scope_name(b.scope), e.model, str(m.battles), _share(m.won_both_share),
                         _share(m.lost_both_share)))
    return rows


def report_table(results: ArenaResults) -> str:
    """The seed's table, then the judge diagnostics per scope and the both-orders shares per model."""
    parts = [grid(TABLE_HEADER, report_rows(results)), "Judge diagnostics per scope (games = both orders of every "
             "battle; consistency = battles whose two orders agree on win/tie/loss):",
             grid(DIAGNOSTICS_HEADER, diagnostics_rows(results.boards))]
    both = both_orders_rows(results.boards)
    if both:
        parts += ["Battles won and lost in both orders, per model (the battle score's view; see docs/rating.md):",
                  grid(BOTH_ORDERS_HEADER, both)]
    for b in results.boards:
        if not b.supported:
            parts.append(f"NOT SUPPORTED: {scope_name(b.scope)}: the ranking is not supported by the judge's "
                         "verdicts: " + "; ".join(b.unsupported_reasons))
        parts += [f"note: {scope_name(b.scope)}: {n}" for n in b.diagnostics.notes]
    if results.panel is not None:
        from .panel_report import panel_lines

        parts.append("\n".join(panel_lines(results)))
    if results.stopping is not None:
        from .stop_report import stop_lines

        parts.append("\n".join(stop_lines(results)))
    return "\n\n".join(parts)


def _pct(x: float) -> str:
    v = round(100 * x, 1)
    return f"{v:g}" if v == int(v) else f"{v:.1f}"


def _elo(x: float) -> str:
    """A rating on the Elo scale, rounded to a point; ``inf``/``-inf`` for a model that only won or lost."""
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.0f}"


def board_text(board: Board) -> str:
    """One board of ``leaderboard.txt``: win rate and its interval (percentage points), then the rating
    (Elo scale, the baseline at 1000) and its interval, then the judge diagnostics."""
    if board.scope.kind == "overall":
        title = "=== OVERALL LEADERBOARD ==="
    elif board.scope.kind == "dataset":
        title = f"=== DATASET LEADERBOARD: {board.scope.dataset} ==="
    else:
        title = f"=== SUBSET LEADERBOARD: {board.scope.dataset} - {board.scope.subset} ==="
    if board.scope.judge is not None:  # one judge's own board (panel.combine = "each")
        title = title.replace("=== ", f"=== JUDGE {board.scope.judge}: ", 1)
    rows: list[tuple[str, ...]] = []
    for e in board.entries:
        rating = (_elo(e.rating), f"({_elo(e.rating_lower)} / {_elo(e.rating_upper)})")
        if e.model == board.baseline:
            rows.append((e.model, "50", "(+0.0 / +0.0)", *rating))
        else:
            lo = 100 * (e.lower - e.winrate)
            hi = 100 * (e.upper - e.winrate)
            rows.append((e.model, _pct(e.winrate), f"({lo:+.1f} / {hi:+.1f})", *rating))
    header = ("Model", "WinRate (%)", "CI (%)", "Rating", "Rating CI")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines += diagnostics_lines(board)
    return "\n".join(lines)


def diagnostics_lines(board: Board) -> list[str]:
    """The lines under a board's table in ``leaderboard.txt`` (read back by :func:`parse_diagnostics`)."""
    d = board.diagnostics
    reasons = "; ".join(f"{kind} {n}" for kind, n in d.excluded_by_reason)
    lines = [f"games: {d.rated} rated of {d.games}, {d.excluded} excluded ({_share(d.excluded_share)}%)"
             + (f": {reasons}" if reasons else "")]
    if d.battles:
        lines.append(f"judge: position consistency {_share(d.position_consistency)}% ({d.agree} of {d.battles} "
                     f"battles agree across the two orders, {_share(d.disagree_share)}% disagree: {d.lean_a} "
                     f"favour A, {d.lean_b} favour B); position bias {_bias(d.position_bias)}")
    else:
        lines.append("judge: position consistency n/a (no battle has both orders rated)")
    for e in board.entries:
        m = d.model(e.model)
        if e.model != board.baseline and m is not None and m.battles:
            lines.append(f"both orders: {e.model} won {_share(m.won_both_share)}%, lost {_share(m.lost_both_share)}% "
                         f"of {m.battles} battles")
    if not d.supported:
        lines.append("NOT SUPPORTED: this ranking is not supported by the judge's verdicts: "
                     + "; ".join(d.unsupported_reasons))
    lines += [f"note: {n}" for n in d.notes]
    return lines


def leaderboard_text(boards: Sequence[Board]) -> str:
    return "\n\n".join(board_text(b) for b in boards) + "\n"


_TITLE_RE = re.compile(r"^=== (OVERALL LEADERBOARD|DATASET LEADERBOARD: (.+)|SUBSET LEADERBOARD: (.+)) ===$")
_ELO = r"-?\d+|-?inf|n/a"
# model, win rate %, its interval (deltas); then (files since the ratings were added) rating and interval
_ROW_RE = re.compile(r"^(.+?)\s+(\d+(?:\.\d+)?)\s+\(([+-]\d+\.\d) / ([+-]\d+\.\d)\)"
                     rf"(?:\s+({_ELO})\s+\(({_ELO}) / ({_ELO})\))?$")


_GAMES_RE = re.compile(r"^games: (\d+) rated of (\d+), (\d+) excluded \((\d+\.\d)%\)(?:: (.+))?$")
_JUDGE_RE = re.compile(r"^judge: position consistency (?:(\d+\.\d)% \((\d+) of (\d+) battles agree across the two "
                       r"orders, (\d+\.\d)% disagree: (\d+) favour A, (\d+) favour B\); "
                       r"position bias ([+-]\d+\.\d\d|n/a)|n/a \(.+\))$")
_BOTH_RE = re.compile(r"^both orders: (.+) won (\d+\.\d)%, lost (\d+\.\d)% of (\d+) battles$")
_UNSUPPORTED_RE = re.compile(r"^NOT SUPPORTED: this ranking is not supported by the judge's verdicts: (.+)$")


def parse_diagnostics(text: str) -> dict[str, dict[str, Any]]:
    """Read the diagnostics lines of ``leaderboard.txt`` back, per section title (as in
    :func:`parse_leaderboard`): ``games``, ``rated``, ``excluded``, ``excluded_pct``, ``reasons``
    ({kind: games}), ``consistency_pct``, ``agree``, ``battles``, ``disagree_pct``, ``both_orders``
    (both disagree counts: ``favour_a``, ``favour_b``), ``both_orders`` ({model: (won %, lost %, battles)}),
    ``unsupported`` (the reasons, empty when supported) and ``notes``."""
    out: dict[str, dict[str, Any]] = {}
    section: dict[str, Any] | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if m := _TITLE_RE.match(line):
            title = "OVERALL" if m.group(1).startswith("OVERALL") else (m.group(2) or m.group(3))
            section = out.setdefault(title, {"both_orders": {}, "unsupported": [], "reasons": {}, "notes": []})
        elif section is None:
            continue
        elif m := _GAMES_RE.match(line):
            section.update(rated=int(m.group(1)), games=int(m.group(2)), excluded=int(m.group(3)),
                           excluded_pct=float(m.group(4)))
            for part in (m.group(5) or "").split("; "):
                if part:
                    kind, n = part.rsplit(" ", 1)
                    section["reasons"][kind] = int(n)
        elif m := _JUDGE_RE.match(line):
            section.update(consistency_pct=float(m.group(1)) if m.group(1) else None,
                           agree=int(m.group(2) or 0), battles=int(m.group(3) or 0),
                           disagree_pct=float(m.group(4)) if m.group(4) else None,
                           favour_a=int(m.group(5) or 0), favour_b=int(m.group(6) or 0))
        elif m := _BOTH_RE.match(line):
            section["both_orders"][m.group(1)] = (float(m.group(2)), float(m.group(3)), int(m.group(4)))
        elif m := _UNSUPPORTED_RE.match(line):
            section["unsupported"] = m.group(1).split("; ")
        elif line.startswith("note: "):
            section["notes"].append(line[len("note: "):])
    return out


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


def _elo_value(text: str) -> float:
    return math.nan if text == "n/a" else float(text)


def parse_ratings(text: str) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Read the ratings of ``leaderboard.txt`` back: {section title: {model: (rating, lower, upper)}}
    (Elo scale; ``inf`` for a model that only won; files written before the ratings were added have none)."""
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    section: dict[str, tuple[float, float, float]] | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if m := _TITLE_RE.match(line):
            title = "OVERALL" if m.group(1).startswith("OVERALL") else (m.group(2) or m.group(3))
            section = out.setdefault(title, {})
        elif section is not None and (m := _ROW_RE.match(line)) and m.group(5) is not None:
            section[m.group(1).strip()] = (_elo_value(m.group(5)), _elo_value(m.group(6)), _elo_value(m.group(7)))
    return out
