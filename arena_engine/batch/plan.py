"""``run --dry-run`` for endpoints in batch mode: how many batches each would submit, and the cost with
and without the batch discount."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..config import RunConfig


class PlanRow(Protocol):
    """What this reads of a row of the dry run's plan (plan.PlanRow, which imports this module)."""

    @property
    def endpoint(self) -> str: ...

    @property
    def requests(self) -> int: ...

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def to_send(self) -> int: ...

    @property
    def max_cost(self) -> float | None: ...

LINE_OVERHEAD = 200  # bytes of a batch input line besides its messages (custom_id, method, url, params)


def batch_lines(cfg: RunConfig, rows: Sequence[PlanRow]) -> list[str]:
    """One line per endpoint in batch mode (none when every endpoint is live)."""
    endpoints = {m.name: m.endpoint for m in cfg.models if m.evalscope_report is None}
    endpoints.update({j.name: j.endpoint for j in cfg.panel_judges})
    out: list[str] = []
    paid = live = 0.0
    priced = False
    for r in rows:
        ep = endpoints.get(r.endpoint)
        cost = r.max_cost
        if ep is None or ep.batch is None:
            if cost is not None:
                paid += cost
                live += cost
            continue
        opts = ep.batch
        share = r.to_send / r.requests if r.requests else 0.0
        est_bytes = share * (4 * r.prompt_tokens) + r.to_send * LINE_OVERHEAD
        batches = max(math.ceil(r.to_send / opts.max_requests), math.ceil(est_bytes / opts.max_bytes)) if r.to_send else 0
        if cost is None:
            out.append(f"  {r.endpoint:<24} {batches:>4} batch(es) for {r.to_send} request(s); no prices in the config")
            continue
        priced = True
        paid += cost * opts.discount
        live += cost
        out.append(f"  {r.endpoint:<24} {batches:>4} batch(es) for {r.to_send} request(s); at most "
                   f"{cost * opts.discount:.2f} at the batch price ({opts.discount:g} x), {cost:.2f} live")
    if not out:
        return []
    head = ["batch mode (a judge's batches follow the answers' batches as they end, cut by size or batch.max_wait; "
            "cascades add a stage per judge):"]
    if priced:
        out.append(f"  whole run: at most {paid:.2f} with the batch discount, {live:.2f} without it")
    return head + out
