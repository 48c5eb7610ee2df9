"""``run --dry-run``: what a run would send, per endpoint, and what it would cost. Nothing is sent."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import anyio

from .config import RunConfig
from .datasets import Query, iter_queries
from .errors import CheckpointError
from .identity import (
    GENERATIONS,
    JUDGMENTS,
    find_generation,
    find_judgment,
    generation_request,
    holds_legacy,
    judge_identity,
    judgment_request,
    model_identity,
)
from .judge import DEFAULT_SYSTEM_PROMPT
from .pairing import pairs_of
from .store import CHECKPOINT_DIR, RunStore


def _tokens(text: str) -> int:
    """A rough token estimate (about four characters a token)."""
    return max(1, len(text) // 4)


@dataclass(frozen=True)
class PlanRow:
    endpoint: str
    role: str
    requests: int  # requests the config needs in all
    prompt_tokens: int
    max_completion_tokens: int
    price_in: float | None
    price_out: float | None
    reused: int = 0  # of which the run folder already holds the result

    @property
    def to_send(self) -> int:
        return self.requests - self.reused

    @property
    def max_cost(self) -> float | None:
        """At most what the requests still to send cost (the tokens are scaled to them)."""
        if self.price_in is None and self.price_out is None:
            return None
        share = self.to_send / self.requests if self.requests else 0.0
        return share * (self.prompt_tokens * (self.price_in or 0.0)
                        + self.max_completion_tokens * (self.price_out or 0.0)) / 1e6


def _queries(cfg: RunConfig) -> list[Query]:
    return [q for d in cfg.datasets for q in iter_queries(d.path, dataset=d.name, subsets=d.subsets,
                                                          allow_empty=d.allow_empty)]


def _reuse(cfg: RunConfig, queries: list[Query]) -> tuple[dict[str, int], dict[str, int]] | str:
    """(answers found per model, verdicts found per judge) in the run folder, or why they could not be counted."""
    if not (cfg.output_dir / CHECKPOINT_DIR).is_dir():
        return {m.name: 0 for m in cfg.models}, {j.name: 0 for j in cfg.panel_judges}
    try:
        store = RunStore(cfg.output_dir, readonly=True).open()
    except CheckpointError as exc:
        return f"finished work not counted: {exc}"
    judges = [(j, judge_identity(j), j.system_prompt or DEFAULT_SYSTEM_PROMPT) for j in cfg.panel_judges]
    identities = {m.name: model_identity(cfg, m) for m in cfg.models}
    legacy = {kind: holds_legacy(store, kind) for kind in (GENERATIONS, JUDGMENTS)}
    answers = {m.name: 0 for m in cfg.models}
    verdicts = {j.name: 0 for j in cfg.panel_judges}
    try:
        for q in queries:
            found: dict[str, str] = {}
            for m in cfg.models:
                if m.evalscope_report is not None:
                    continue
                rec, _ = find_generation(store, m, generation_request(identities[m.name], m, q),
                                         legacy=legacy[GENERATIONS])
                if rec is not None:
                    answers[m.name] += 1
                    found[m.name] = str(rec.get("answer"))
            for cand, opp in pairs_of(cfg, q):
                if cand not in found or opp not in found:
                    continue
                for first, second in ((cand, opp), (opp, cand)):
                    for judge, who, system in judges:
                        req = judgment_request(judge, who, system, q, found[first], found[second])
                        _, rec, _, _ = find_judgment(store, judge, req, legacy=legacy[JUDGMENTS])
                        verdicts[judge.name] += rec is not None
    finally:
        store.close()
    return answers, verdicts


def plan(cfg: RunConfig) -> tuple[list[PlanRow], str | None]:
    """Requests and estimated tokens per endpoint for the whole config, with what the run folder
    already holds (and a note when that could not be read)."""
    queries = _queries(cfg)
    n = len(queries)
    prompt_chars = sum(len(str(m.get("content", ""))) for q in queries for m in q.messages)
    reuse = _reuse(cfg, queries)
    note = reuse if isinstance(reuse, str) else None
    answers, verdicts = reuse if not isinstance(reuse, str) else ({}, {})
    rows: list[PlanRow] = []
    for m in cfg.models:
        max_tokens = int(m.generation.get("max_tokens", 1024))
        prompt = prompt_chars // 4
        rows.append(PlanRow(m.name, "baseline" if m.name == cfg.baseline else "candidate",
                            0 if m.evalscope_report else n, prompt, n * max_tokens, m.price_in, m.price_out,
                            reused=answers.get(m.name, 0)))
    pairs = len(cfg.candidates) if cfg.mode == "baseline" else len(cfg.models) * (len(cfg.models) - 1) // 2
    if cfg.max_pairs_per_query is not None:
        pairs = min(pairs, cfg.max_pairs_per_query)
    judge_requests = 2 * pairs * n
    answer_tokens = min(512, int(cfg.models[0].generation.get("max_tokens", 512)))
    for judge in cfg.panel_judges:  # a cascade's later judges: at most every battle (an upper bound)
        judge_prompt = judge_requests * (_tokens(judge.system_prompt or DEFAULT_SYSTEM_PROMPT) + 2 * answer_tokens) + 2 * pairs * (prompt_chars // 4)
        rows.append(PlanRow(judge.name, "judge", judge_requests, judge_prompt,
                            judge_requests * int(judge.generation.get("max_tokens", 1024)),
                            judge.price_in, judge.price_out, reused=verdicts.get(judge.name, 0)))
    return rows, note


async def print_plan(cfg: RunConfig) -> int:
    rows, note = await anyio.to_thread.run_sync(plan, cfg)
    print(f"plan for {cfg.output_dir} (nothing is sent; what the folder already holds is reused)")
    print(f"{'endpoint':<24} {'role':<10} {'requests':>10} {'reused':>8} {'to send':>8} {'prompt tok':>12} "
          f"{'max compl tok':>14} {'max cost':>10}")
    costs = [r.max_cost for r in rows if r.max_cost is not None]
    for r in rows:
        cost = r.max_cost
        print(f"{r.endpoint:<24} {r.role:<10} {r.requests:>10} {r.reused:>8} {r.to_send:>8} {r.prompt_tokens:>12} "
              f"{r.max_completion_tokens:>14} {f'{cost:.2f}' if cost is not None else '-':>10}")
    if cfg.stop.active:
        from .stopping.plan import plan_lines

        queries = sum(1 for _ in _queries(cfg))
        for line in await anyio.to_thread.run_sync(plan_lines, cfg, queries):
            print(line)
    if note:
        print(f"note: {note}", file=sys.stderr)
    print("judge requests to send: for battles whose answers are not both stored yet, counted as if each "
          "needed both orders")
    if costs:
        print(f"estimated cost of what is still to send: at most {sum(costs):.2f} (prices per 1M tokens from "
              "the config; tokens scaled to the requests still to send)")
    from .batch.plan import batch_lines

    for line in batch_lines(cfg, rows):
        print(line)
    print("identities (answers are stored under these; to rename a model or move it to another URL without "
          "paying again, set its 'identity' to the old one):")
    for m in cfg.models:
        if m.evalscope_report is None:
            print(f"  {m.name:<24} {model_identity(cfg, m)}")
    for judge in cfg.panel_judges:
        print(f"  {judge.name:<24} {judge_identity(judge)} (judge)")
    missing = cfg.missing_keys()
    if missing:
        print(f"warning: environment variable(s) {', '.join(missing)} not set; a real run would stop", file=sys.stderr)
    return 0
