"""``run --dry-run``: what a run would send, per endpoint, and what it would cost. Nothing is sent."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import anyio

from .config import RunConfig
from .datasets import iter_queries
from .identity import judge_identity, model_identity
from .judge import DEFAULT_SYSTEM_PROMPT


def _tokens(text: str) -> int:
    """A rough token estimate (about four characters a token)."""
    return max(1, len(text) // 4)


@dataclass(frozen=True)
class PlanRow:
    endpoint: str
    role: str
    requests: int
    prompt_tokens: int
    max_completion_tokens: int
    price_in: float | None
    price_out: float | None

    @property
    def max_cost(self) -> float | None:
        if self.price_in is None and self.price_out is None:
            return None
        return (self.prompt_tokens * (self.price_in or 0.0) + self.max_completion_tokens * (self.price_out or 0.0)) / 1e6


def plan(cfg: RunConfig) -> list[PlanRow]:
    """Requests and estimated tokens per endpoint for the whole config (reused work is not subtracted)."""
    n = 0
    prompt_chars = 0
    for d in cfg.datasets:
        for q in iter_queries(d.path, dataset=d.name, subsets=d.subsets, allow_empty=d.allow_empty):
            n += 1
            prompt_chars += sum(len(str(m.get("content", ""))) for m in q.messages)
    rows: list[PlanRow] = []
    for m in cfg.models:
        max_tokens = int(m.generation.get("max_tokens", 1024))
        prompt = prompt_chars // 4
        rows.append(PlanRow(m.name, "baseline" if m.name == cfg.baseline else "candidate",
                            0 if m.evalscope_report else n, prompt, n * max_tokens, m.price_in, m.price_out))
    pairs = len(cfg.candidates) if cfg.mode == "baseline" else len(cfg.models) * (len(cfg.models) - 1) // 2
    if cfg.max_pairs_per_query is not None:
        pairs = min(pairs, cfg.max_pairs_per_query)
    judge_requests = 2 * pairs * n
    answer_tokens = min(512, int(cfg.models[0].generation.get("max_tokens", 512)))
    judge_prompt = judge_requests * (_tokens(cfg.judge.system_prompt or DEFAULT_SYSTEM_PROMPT) + 2 * answer_tokens) + 2 * pairs * (prompt_chars // 4)
    rows.append(PlanRow(cfg.judge.name, "judge", judge_requests, judge_prompt,
                        judge_requests * int(cfg.judge.generation.get("max_tokens", 1024)),
                        cfg.judge.price_in, cfg.judge.price_out))
    return rows


async def print_plan(cfg: RunConfig) -> int:
    rows = await anyio.to_thread.run_sync(plan, cfg)
    print(f"plan for {cfg.output_dir} (nothing is sent; finished work in the folder is reused on a real run)")
    print(f"{'endpoint':<24} {'role':<10} {'requests':>10} {'prompt tok':>12} {'max compl tok':>14} {'max cost':>10}")
    costs = [r.max_cost for r in rows if r.max_cost is not None]
    for r in rows:
        cost = r.max_cost
        print(f"{r.endpoint:<24} {r.role:<10} {r.requests:>10} {r.prompt_tokens:>12} "
              f"{r.max_completion_tokens:>14} {f'{cost:.2f}' if cost is not None else '-':>10}")
    if costs:
        print(f"estimated cost at most {sum(costs):.2f} (prices per 1M tokens from the config)")
    print("identities (answers are stored under these; to rename a model or move it to another URL without "
          "paying again, set its 'identity' to the old one):")
    for m in cfg.models:
        if m.evalscope_report is None:
            print(f"  {m.name:<24} {model_identity(cfg, m)}")
    print(f"  {cfg.judge.name:<24} {judge_identity(cfg.judge)} (judge)")
    missing = cfg.missing_keys()
    if missing:
        print(f"warning: environment variable(s) {', '.join(missing)} not set; a real run would stop", file=sys.stderr)
    return 0
