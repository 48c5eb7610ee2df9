"""Where a model's answer to a query comes from: one protocol, two sources.

An :class:`AnswerSource` gives a query's answer record (or None: it has none, counted as failed or
missing). :class:`ImportedAnswers` reads a model's EvalScope rows (``evalscope_report``), stored like a
generation; :class:`EndpointAnswers` reads the checkpoints and sends only what they lack, through the
model's client (a live ``ChatClient`` or a ``BatchChat``, whose deferral ends the query's work for this
pass). The query workers do not know which they hold.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Protocol

from ..batch.session import DEFERRED
from ..config import ModelConfig
from ..datasets import Query
from ..errors import FailureReason
from ..from_store import count_record, import_record
from ..identity import GENERATIONS, Request, find_generation, generation_request
from .context import RunContext

Answer = dict[str, Any]
NOT_NEEDED = f"{FailureReason.NOT_NEEDED}: "


class AnswerSource(Protocol):
    async def answer(self, q: Query, counted: set[bytes]) -> Answer | None: ...


def answer_sources(ctx: RunContext) -> dict[str, AnswerSource]:
    """Every model's source of answers."""
    return {m.name: ImportedAnswers(ctx, m) if m.name in ctx.imported else EndpointAnswers(ctx, m)
            for m in ctx.config.models}


class ImportedAnswers:
    """A model's answers from an EvalScope run (paired with the query by its text: ImportIndex)."""

    def __init__(self, ctx: RunContext, m: ModelConfig) -> None:
        self.ctx, self.m, self.rows = ctx, m, ctx.imported[m.name]

    async def answer(self, q: Query, counted: set[bytes]) -> Answer | None:
        ctx, name = self.ctx, self.m.name
        stage = ctx.stages[name]
        stage.done += 1
        key, rec = import_record(self.m, q, self.rows.get((q.dataset, q.subset, q.id)))
        if rec is None:
            stage.failed += 1
            ctx.missing += 1
            return None
        if ctx.open_store().get(GENERATIONS, key) is None:
            ctx.save(GENERATIONS, key, rec)
        else:
            stage.reused += 1
        ctx.usage[name].use(rec)
        if q.reference is not None:
            ctx.reference_items.append((name, q.dataset, q.subset, key, q.reference))
        return {**rec, "key": key.hex()}


class EndpointAnswers:
    """A model's answers from the checkpoints, or from its endpoint when they lack one."""

    def __init__(self, ctx: RunContext, m: ModelConfig) -> None:
        self.ctx, self.m = ctx, m

    def _stored(self, req: Request) -> Answer | None:
        """The stored answer (a 0.1.0 record is copied under its new key: see arena_engine.identity)."""
        ctx = self.ctx
        rec, migrated = find_generation(ctx.open_store(), self.m, req, legacy=ctx.legacy[GENERATIONS])
        if migrated and rec is not None:
            ctx.save(GENERATIONS, req.key, rec)
        return rec

    async def answer(self, q: Query, counted: set[bytes]) -> Answer | None:
        ctx, name = self.ctx, self.m.name
        stage, usage = ctx.stages[name], ctx.usage[name]
        req = generation_request(ctx.identities[name], self.m, q)
        key = req.key
        waited = False
        while True:
            rec = self._stored(req)
            if rec is not None:
                if not waited:
                    stage.reused += 1
                    usage.reused += 1
                break
            down = ctx.endpoint_down(name)
            if down is not None:  # its answer could not be judged: do not pay for it
                self._skip(down)
                return None
            busy = ctx.in_flight.claim(key)
            if busy is None:
                try:
                    rec = await self._send(q, req)
                finally:
                    ctx.in_flight.release(key)
                if rec is None:
                    return None
                break
            await busy.wait()  # the same request is being sent for another model: use its answer
            waited = True
        return self._use(q, key, rec, counted)

    def _use(self, q: Query, key: bytes, rec: Answer, counted: set[bytes]) -> Answer:
        """An answer the results use (sent now or stored): counted, and queued for the reference metrics."""
        ctx, name = self.ctx, self.m.name
        stage = ctx.stages[name]
        count_record(ctx.usage[name], key, rec, counted)
        stage.done += 1
        stage.prompt_tokens += int(rec.get("prompt_tokens") or 0)
        stage.completion_tokens += int(rec.get("completion_tokens") or 0)
        if q.reference is not None:  # scored after the run, off the request path
            ctx.reference_items.append((name, q.dataset, q.subset, key, q.reference))
        return {**rec, "key": key.hex()}

    def _skip(self, why: str) -> None:
        """The answer is not asked for: the endpoint it would be judged with is down."""
        ctx, name = self.ctx, self.m.name
        ctx.skipped[(name, why)] = ctx.skipped.get((name, why), 0) + 1
        ctx.missing += 1
        ctx.stages[name].done += 1
        ctx.stages[name].failed += 1

    async def _send(self, q: Query, req: Request) -> Answer | None:
        ctx, m = self.ctx, self.m
        stage, usage = ctx.stages[m.name], ctx.usage[m.name]
        ctx.sending.set()
        result = await ctx.clients[m.name].chat(req.messages, req.params, needed=partial(ctx.endpoint_down, m.name))
        if result.error == DEFERRED:  # queued for the endpoint's next batch: this query waits for a later pass
            ctx.deferred += 1
            return None
        if result.error is not None and result.error.startswith(NOT_NEEDED):  # it went down while this waited
            self._skip(result.error[len(NOT_NEEDED):])
            return None
        ctx.account(usage, result)
        if not result.ok or result.content is None:
            ctx.record_failure("generation", m.name, q, result)
            stage.done += 1
            stage.failed += 1
            return None
        rec = {
            "v": 2, "model": m.name, "identity": ctx.identities[m.name], "endpoint_model": m.endpoint.model,
            "dataset": q.dataset, "subset": q.subset,
            "query_id": q.id, "question": q.question, "answer": result.content,
            "finish_reason": result.finish_reason, "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens, "latency": round(result.latency, 6),
            "attempts": result.attempts, "time": time.time(),
        }
        if result.reasoning:  # a reasoning model's thinking: kept, never shown to the judge
            rec["reasoning"] = result.reasoning
        ctx.save(GENERATIONS, req.key, rec)
        return rec
