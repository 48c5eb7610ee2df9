"""``report.json``: every number of the text reports plus ratings, counts, exclusions, judge
diagnostics, tokens, cost and latency, for scripts and for the HTML report."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from ..battles import excluded_games, exclusions, games_per_subset, position_bias, position_consistency
from ..leaderboard import Board, gate_failures, reliability_warnings
from ..reliability import (
    MAX_EXCLUDED_SHARE,
    MIN_POSITION_CONSISTENCY,
    MIN_POSITION_LEAN,
    POSITION_LEAN_P,
    WARN_EXCLUDED_SHARE,
)
from ..results import ArenaResults
from ..roles import is_judge_role, judge_role
from . import stop_report

SCHEMA_VERSION = 1


def panel_dict(results: ArenaResults) -> dict[str, Any] | None:
    from .panel_report import panel_dict as make

    return make(results)


def _cost(prompt: int, completion: int, price_in: float | None, price_out: float | None) -> float | None:
    if price_in is None and price_out is None:
        return None
    return (prompt * (price_in or 0.0) + completion * (price_out or 0.0)) / 1e6


def _costs(live: float | None, discount: float | None) -> dict[str, Any]:
    """An endpoint's cost; in batch mode at the batch price, with the live price and the saving beside it."""
    if discount is None:
        return {"mode": "live", "cost": live}
    paid = None if live is None else live * discount
    return {"mode": "batch", "cost": paid, "cost_live": live, "batch_discount": discount,
            "batch_saved": None if live is None or paid is None else live - paid}


def batch_savings(results: ArenaResults) -> tuple[float, float] | None:
    """(cost paid, cost at live prices) over the run's priced endpoints, when any of them ran in batch mode."""
    endpoints = endpoints_dict(results)
    if not any(e.get("mode") == "batch" and e.get("cost") is not None for e in endpoints.values()):
        return None
    paid = sum(e["cost"] or 0.0 for e in endpoints.values())
    live = sum((e.get("cost_live") if e.get("mode") == "batch" else e["cost"]) or 0.0 for e in endpoints.values())
    return paid, live


def _diagnostics(b: Board) -> dict[str, Any]:
    d = b.diagnostics
    return {
        "games": d.games, "rated": d.rated, "excluded": d.excluded, "excluded_share": d.excluded_share,
        "excluded_reasons": dict(d.excluded_by_reason), "battles_both_rated": d.battles, "battles_agree": d.agree,
        "position_consistency": d.position_consistency, "disagree_share": d.disagree_share,
        "position_bias": d.position_bias, "disagree_favour_a": d.lean_a, "disagree_favour_b": d.lean_b,
        "disagree_lean_share": d.lean_share, "disagree_lean_p": d.lean_p, "contradictions": list(d.contradictions),
        "supported": d.supported, "unsupported_reasons": list(d.unsupported_reasons), "notes": list(d.notes),
        "both_orders": [
            {"model": m.model, "battles": m.battles, "won_both": m.won_both, "lost_both": m.lost_both,
             "won_both_share": m.won_both_share, "lost_both_share": m.lost_both_share}
            for m in d.models
        ],
    }


def reliability(boards: list[Board]) -> dict[str, Any]:
    """The verdict on the verdicts: the same warnings and exit reasons as the terminal shows."""
    failures = gate_failures(boards)
    return {
        "supported": not failures,
        "exit_reasons": failures,
        "warnings": reliability_warnings(boards),
        "unsupported_scopes": [b.scope.title for b in boards if not b.supported],
        "thresholds": {"min_position_consistency": MIN_POSITION_CONSISTENCY, "min_position_lean": MIN_POSITION_LEAN,
                       "position_lean_p": POSITION_LEAN_P, "max_excluded_share": MAX_EXCLUDED_SHARE,
                       "warn_excluded_share": WARN_EXCLUDED_SHARE},
    }


def endpoints_dict(results: ArenaResults) -> dict[str, dict[str, Any]]:
    """report.json's "endpoints": per endpoint, its work, tokens, cost (and batch savings) and latency."""
    cfg = results.config
    prices = {m.name: (m.price_in, m.price_out) for m in cfg.models}
    discounts = {m.name: m.endpoint.batch.discount for m in cfg.models if m.endpoint.batch is not None}
    for i, j in enumerate(cfg.panel_judges):
        prices[judge_role(i, j.name)] = (j.price_in, j.price_out)
        if j.endpoint.batch is not None:
            discounts[judge_role(i, j.name)] = j.endpoint.batch.discount
    endpoints = {}
    models = {m.name for m in cfg.models}
    for key, u in results.usage.items():
        # a judge is listed under its name, or "judge:<name>" when a model has the same name
        judge = is_judge_role(key)
        name = key if not judge else u.name if u.name not in models else f"judge:{u.name}"
        endpoints[name] = {
            "role": "judge" if judge else ("baseline" if key == cfg.baseline else "candidate"),
            # the whole run's work, from the records the results use (whichever process sent them)
            "records": u.records, "reused": u.reused, "shared": u.shared, "truncated": u.truncated,
            "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            **_costs(_cost(u.prompt_tokens, u.completion_tokens, *prices.get(key, (None, None))), discounts.get(key)),
            "latency": u.percentiles(),
            # what this process itself sent
            "requests": u.requests, "failures": u.failures, "attempts": u.attempts,
            "sent_prompt_tokens": u.sent_prompt_tokens, "sent_completion_tokens": u.sent_completion_tokens,
            "sent_cost": _cost(u.sent_prompt_tokens, u.sent_completion_tokens, *prices.get(key, (None, None))),
        }
    return endpoints


def report_dict(results: ArenaResults) -> dict[str, Any]:
    cfg = results.config
    endpoints = endpoints_dict(results)
    excluded = exclusions(results.games)
    games_in = games_per_subset(results.games)  # one pass, not one per subset
    per_subset = []
    for (dataset, subset), n in results.queries.items():
        ex = excluded.get((dataset, subset))
        per_subset.append({
            "dataset": dataset, "subset": subset, "queries": n,
            "games": games_in[(dataset, subset)],
            "excluded": ex.total if ex else 0, "excluded_reasons": ex.by_reason if ex else {},
        })
    return {
        "schema": SCHEMA_VERSION,
        "baseline": cfg.baseline,
        "judge": cfg.judge.name,
        "mode": cfg.mode,
        "rating": asdict(cfg.rating),
        "seed": cfg.seed,
        "leaderboards": [
            {
                "scope": b.scope.kind, "dataset": b.scope.dataset, "subset": b.scope.subset, "title": b.scope.title,
                "games": b.games, "method": b.method,
                "entries": [asdict(e) for e in b.entries],
                "diagnostics": _diagnostics(b),
            }
            for b in results.boards
        ],
        "reliability": reliability(results.boards),
        "subsets": per_subset,
        "judge_diagnostics": {
            "judge": cfg.judge.name,
            "position_consistency": position_consistency(results.battles),
            "position_bias": position_bias(results.games),
            "excluded": len(excluded_games(results.games)),
        },
        "reference_metrics": [
            {"model": m, "dataset": d, "subset": s, "num": results.reference_counts.get((m, d, s), 0), "scores": v}
            for (m, d, s), v in sorted(results.reference_metrics.items())
        ],
        "endpoints": endpoints,
        "processes": {
            "runs": results.history.processes, "interrupted": results.history.interrupted,
            "requests_sent_by_closed_runs": results.history.requests,
            "note": ("requests in flight when an interrupted process died were sent but not stored; "
                     "their number and cost are unknown") if results.history.interrupted else None,
        },
        "failures": results.failures,
        "missing": results.missing,
        "elapsed_seconds": round(results.elapsed, 3),
        **({"panel": panel_dict(results)} if results.panel is not None else {}),
        **({"stopping": stop_report.stop_dict(results)} if results.stopping is not None else {}),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY))
    os.replace(tmp, path)
