"""Adaptive judging's part of the reports (``[arena.stop]``): which candidates stopped early, after how
many queries and why, and the confidence sequence's interval beside the leaderboard's ordinary interval
of the same games. For report.json, the text reports (terminal, report_table.txt, leaderboard.txt) and a
static, escaped section of report.html (model names come from the config)."""

from __future__ import annotations

import html
from typing import Any

from ..results import ArenaResults
from ..stopping.pairs import SEPARATOR as PAIR


def _ordinary(results: ArenaResults, model: str) -> tuple[float, float] | None:
    """The OVERALL leaderboard's interval of ``model`` (the ordinary one, of the data seen)."""
    try:
        e = results.overall.entry(model)
    except (KeyError, IndexError):
        return None
    return e.lower, e.upper


def stop_dict(results: ArenaResults) -> dict[str, Any] | None:
    s = results.stopping
    if s is None:
        return None
    out = []
    for c in s.candidates:
        ordinary = _ordinary(results, c.name)
        reason = c.reason
        if s.ranking and reason and PAIR in c.name:  # all pairs: the pair's first model against its second
            reason = reason.replace("the baseline", c.name.split(PAIR, 1)[1])
        out.append({"model": c.name, "judged_queries": c.judged, "available_queries": c.available,
                    "stopped_early": c.stopped_early, "reason": reason, "decided_at": c.decided_at,
                    "winrate": c.estimate, "cs_lower": c.lower, "cs_upper": c.upper,
                    "interval_lower": ordinary[0] if ordinary else None,
                    "interval_upper": ordinary[1] if ordinary else None})
    return {"rule": s.rule, "confidence": s.confidence, "margin": s.margin if s.rule == "decided" else None,
            "halfwidth": s.halfwidth if s.rule == "halfwidth" else None, "min_queries": s.min_queries,
            "block": s.block, "queries": s.queries, "candidates": out,
            **({"ranking": list(s.ranking), "ranking_decided": s.ranking_decided} if s.ranking else {})}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def stop_lines(results: ArenaResults) -> list[str]:
    d = stop_dict(results)
    if d is None:
        return []
    target = f"margin {_pct(d['margin'])}" if d["rule"] == "decided" else f"half-width {_pct(d['halfwidth'])}"
    lines = [f"adaptive judging: stop = {d['rule']} ({target}, {100 * d['confidence']:g}% confidence sequence, "
             f"at least {d['min_queries']} queries, blocks of {d['block']}):"]
    if d.get("ranking"):
        lines.append(f"  ranking {'decided' if d['ranking_decided'] else 'NOT decided'}: " + " > ".join(d["ranking"])
                     + " (pairs below: each pair's own win rate, a's against b's)")
    for c in d["candidates"]:
        what = (f"stopped after {c['judged_queries']} of {c['available_queries']} queries"
                if c["stopped_early"] else f"judged on all {c['judged_queries']} queries")
        why = c["reason"] or "undecided"
        if c["decided_at"] is not None and c["decided_at"] != c["judged_queries"]:
            why += f" at {c['decided_at']}"
        lines.append(f"  {c['model']}: {what} ({why}); win rate {_pct(c['winrate'])}, confidence sequence "
                     f"{_pct(c['cs_lower'])}..{_pct(c['cs_upper'])}, leaderboard interval "
                     f"{_pct(c['interval_lower'])}..{_pct(c['interval_upper'])}")
    return lines


def stop_html(report: dict[str, Any]) -> str:
    """Static markup of the adaptive-judging section (empty without ``[arena.stop]``); every text escaped."""
    d = report.get("stopping")
    if not d:
        return ""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(str(c['model']))}</td><td>{'yes' if c['stopped_early'] else 'no'}</td>"
        f"<td>{c['judged_queries']} of {c['available_queries']}</td><td>{e(str(c['reason'] or 'undecided'))}</td>"
        f"<td>{_pct(c['winrate'])}</td><td>{_pct(c['cs_lower'])} – {_pct(c['cs_upper'])}</td>"
        f"<td>{_pct(c['interval_lower'])} – {_pct(c['interval_upper'])}</td></tr>"
        for c in d["candidates"]
    )
    target = f"margin {_pct(d['margin'])}" if d["rule"] == "decided" else f"half-width {_pct(d['halfwidth'])}"
    ranking = ""
    if d.get("ranking"):
        ranking = (f"<p>Ranking {'decided' if d.get('ranking_decided') else '<strong>not</strong> decided'}: "
                   + " &gt; ".join(e(str(m)) for m in d["ranking"]) + "</p>")
    return (f'<section id="adaptive-judging"><h2>Adaptive judging (stop = {e(str(d["rule"]))}, {e(target)})</h2>'
            f"<p class=\"muted\">Queries were judged in a seeded order; a candidate stopped once its "
            f"{100 * d['confidence']:g}% confidence sequence (valid at every query at once) answered the question. "
            "The leaderboard's interval is the ordinary one of the same games.</p>" + ranking +
            "<table><thead><tr><th>candidate</th><th>stopped early</th><th>queries judged</th><th>why</th>"
            "<th>win rate</th><th>confidence sequence</th><th>leaderboard interval</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>")
