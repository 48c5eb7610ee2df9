"""A judge panel's part of the reports: which judge saw how many battles, each judge's own OVERALL
board, and the judge quality figures (``arena_engine.judge_quality``), for report.json, the text
reports and a static, escaped section of report.html (judge and model names come from the config)."""

from __future__ import annotations

import html
from dataclasses import asdict
from typing import Any

from ..judge_quality import Interval, JudgeQuality, quality_lines
from ..results import ArenaResults


def _interval(x: Interval | None) -> dict[str, float] | None:
    return None if x is None else {"value": x.value, "lower": x.lower, "upper": x.upper}


def quality_dict(q: JudgeQuality) -> dict[str, Any]:
    return {
        "judges": [
            {"judge": s.judge, "games": s.games, "usable": s.usable, "battles_both_orders": s.battles,
             "position_consistency": s.position_consistency, "position_bias": s.position_bias,
             "tie_rate": s.tie_rate,
             "self_preference": [
                 {"model": p.model, "battles": p.battles, "estimate": _interval(p.estimate), "flagged": p.flagged,
                  "direction": p.direction}
                 for p in s.self_preference
             ]}
            for s in q.judges
        ],
        "agreement": [
            {"judge_a": a.judge_a, "judge_b": a.judge_b, "games": a.games,
             "kappa_labels": _interval(a.kappa_labels), "kappa_win_tie_loss": _interval(a.kappa_wtl)}
            for a in q.agreements
        ],
        "human_labels": q.human_labels,
        "human_unmatched": q.human_unmatched,
        "human_agreement": [
            {"judge": h.judge, "labelled_battles": h.labelled, "agreement": _interval(h.agreement)} for h in q.human
        ],
        "notes": list(q.notes),
    }


def panel_dict(results: ArenaResults) -> dict[str, Any] | None:
    p = results.panel
    if p is None:
        return None
    return {
        "judges": list(p.judges),
        "combine": p.combine,
        "battles": p.battles,
        "battles_seen": p.battles_seen,
        "per_judge_overall": {
            j: [asdict(e) for e in boards[0].entries] for j, boards in p.boards.items() if boards
        },
        "quality": quality_dict(p.quality) if p.quality is not None else None,
    }


def panel_lines(results: ArenaResults) -> list[str]:
    """The panel's text: how the judges were combined, then the judge quality report."""
    p = results.panel
    if p is None:
        return []
    lines = []
    if len(p.judges) > 1:
        lines.append(f"judge panel: {', '.join(p.judges)} (combine: {p.combine})")
    if p.quality is not None:
        lines += quality_lines(p.quality, p.battles_seen or None, p.battles)
    return lines


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, dict):
        return f"{x['value']:.3f} [{x['lower']:.3f}, {x['upper']:.3f}]"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def panel_html(report: dict[str, Any]) -> str:
    """Static markup of the panel section (empty without a panel); every text escaped."""
    p = report.get("panel")
    if not p or not p.get("quality"):
        return ""
    q = p["quality"]
    e = html.escape
    seen = p.get("battles_seen") or {}
    rows = "".join(
        f"<tr><td>{e(s['judge'])}</td><td>{e(str(seen.get(s['judge'], '-')))}</td><td>{_fmt(s['position_consistency'])}</td>"
        f"<td>{_fmt(s['position_bias'])}</td><td>{_fmt(s['tie_rate'])}</td><td>"
        + "; ".join(f"{'FLAG ' if sp['flagged'] else ''}{e(sp['model'])}: {e(_fmt(sp['estimate']))} ({e(sp['direction'])})"
                    for sp in s["self_preference"])
        + "</td></tr>"
        for s in q["judges"]
    )
    agree = "".join(
        f"<tr><td>{e(a['judge_a'])}</td><td>{e(a['judge_b'])}</td><td>{a['games']}</td>"
        f"<td>{e(_fmt(a['kappa_labels']))}</td><td>{e(_fmt(a['kappa_win_tie_loss']))}</td></tr>"
        for a in q["agreement"]
    )
    human = "".join(
        f"<tr><td>{e(h['judge'])}</td><td>{h['labelled_battles']}</td><td>{e(_fmt(h['agreement']))}</td></tr>"
        for h in q["human_agreement"]
    )
    out = [f'<section id="judge-panel"><h2>Judge panel ({e(str(p.get("combine")))})</h2>',
           "<table><thead><tr><th>judge</th><th>battles seen</th><th>position consistency</th><th>position bias</th>"
           f"<th>tie rate</th><th>self-preference (score vs other judges)</th></tr></thead><tbody>{rows}</tbody></table>"]
    if agree:
        out.append("<h3>Agreement between judges (Cohen's kappa, interval: bootstrap over queries)</h3>"
                   "<table><thead><tr><th>judge</th><th>judge</th><th>games</th><th>kappa, 5 labels</th>"
                   f"<th>kappa, win/tie/loss</th></tr></thead><tbody>{agree}</tbody></table>")
    if human:
        out.append(f"<h3>Agreement with human labels ({e(str(q.get('human_labels')))})</h3>"
                   "<table><thead><tr><th>judge</th><th>labelled battles</th><th>agreement</th></tr></thead>"
                   f"<tbody>{human}</tbody></table>")
    out.append("</section>")
    return "".join(out)
