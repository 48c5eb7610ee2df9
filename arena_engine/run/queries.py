"""The run's work: the queries counted, streamed to a pool of query workers, each query's answers and battles.

A first pass validates every dataset line (nothing is sent if one is bad) and counts the work. A
producer then streams the queries into a bounded memory object stream; ``W`` query workers take them
one at a time. For one query a worker asks every model's source for its answer at once, and each battle
is judged the moment its two answers exist, while other queries are still being answered. An adaptive
run (``[arena] stop``) sends its seeded blocks as the schedule allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from ..config import ModelConfig
from ..datasets import Query
from ..from_store import iter_run_queries
from ..limits import Limits
from ..pairing import pairs_of
from ..progress import StageProgress
from ..usage import EndpointUsage
from .answers import Answer, AnswerSource, answer_sources
from .context import RunContext
from .judging import Judging

#: What an endpoint without a configured concurrency (its gate follows latency up to AUTO_MAX) counts
#: for when the number of queries in flight is planned: enough for the gate to grow well past where most
#: servers stop, without thousands of queries waiting at a gate that starts at 8 slots.
AUTO_PLANNED_CONCURRENCY = 128


class QueryWork:
    """Every query of the run (or of its part), answered and judged."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.sources: dict[str, AnswerSource] = answer_sources(ctx)
        self.judging = Judging(ctx)
        self._folded = anyio.Event()  # an adaptive run completed a block (its next blocks may be sent)

    def queries(self) -> Iterator[Query]:
        return iter_run_queries(self.ctx.config, self.ctx.part)

    def count(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for q in self.queries():
            counts[(q.dataset, q.subset)] = counts.get((q.dataset, q.subset), 0) + 1
        return counts

    async def prepare(self) -> None:
        """Count the work (validating every line) and set up the stages' progress and usage."""
        ctx, cfg = self.ctx, self.ctx.config
        ctx.queries = counts = await anyio.to_thread.run_sync(self.count)
        n_queries = sum(counts.values())
        if cfg.stop.active:  # adaptive judging holds the queries in memory to walk them in its seeded order
            from ..stopping.hook import AdaptiveRun, GameLog

            queries = await anyio.to_thread.run_sync(lambda: list(self.queries()))
            ctx.stop = AdaptiveRun(cfg, queries)
            ctx.games = ctx.game_log = GameLog()
        for m in cfg.models:
            ctx.stages[m.name] = StageProgress(f"generate {m.name}", total=n_queries)
            ctx.usage[m.name] = EndpointUsage(m.name)
        pairs = len(cfg.candidates) if cfg.mode == "baseline" else _n_pairs(len(cfg.models), cfg.max_pairs_per_query)
        for slot in ctx.slots:  # a cascade's later judges: their totals grow as battles reach them
            later = ctx.cascade and slot is not ctx.order[0]
            ctx.stages[slot.role] = StageProgress(f"judge {slot.cfg.name}", total=0 if later else 2 * pairs * n_queries)
            ctx.usage[slot.role] = EndpointUsage(slot.cfg.name)

    async def run(self) -> None:
        """Stream the queries to the workers until every one is done."""
        ctx, cfg = self.ctx, self.ctx.config
        n_queries = sum(ctx.queries.values())
        in_flight = cfg.queries_in_flight or max(
            8, 2 * max(_planned(m.endpoint.limits) for m in cfg.models)
            + sum(_planned(slot.cfg.endpoint.limits) for slot in ctx.slots)
        )
        in_flight = max(1, min(in_flight, n_queries))  # never more workers than there is work
        send, recv = anyio.create_memory_object_stream[Query](in_flight)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._produce, send)
            for _ in range(in_flight):
                tg.start_soon(self._work, recv.clone())
            recv.close()

    async def _produce(self, send: ObjectSendStream[Query]) -> None:
        async with send:
            if self.ctx.stop is not None:
                await self._produce_adaptive(send)
                return
            for q in self.queries():
                await send.send(q)

    async def _produce_adaptive(self, send: ObjectSendStream[Query]) -> None:
        """Block k of the seeded order once the blocks up to k - 2 are complete (stopping.schedule), for the
        candidates still active: what is sent depends on completed prefixes only, never on timing."""
        stop = self.ctx.stop
        assert stop is not None
        schedule = stop.schedule
        k = 0
        while True:
            while not schedule.ready(k):
                self._folded = anyio.Event()
                await self._folded.wait()
            if k < schedule.blocks:
                self._shrink_totals(k)
            if schedule.finished(k):
                return
            for q in stop.block(k):
                await send.send(q)
            k += 1

    def _shrink_totals(self, k: int) -> None:
        """Progress totals without what block k will not send (once nothing is active: every block left)."""
        ctx = self.ctx
        assert ctx.stop is not None
        schedule = ctx.stop.schedule
        active = schedule.active(k)
        units = len(schedule.candidates)
        for b in range(k, schedule.blocks) if not active else (k,):
            size = len(schedule.block_range(b))
            needed = ctx.stop.models_for(active)
            for m in ctx.config.models:
                if m.name not in needed:
                    ctx.stages[m.name].total -= size
            for slot in ctx.first_judges():
                ctx.stages[slot.role].total -= 2 * (units - len(active)) * size

    async def _work(self, recv: ObjectReceiveStream[Query]) -> None:
        async with recv:
            async for q in recv:
                await self._process(q)
                self._query_done(q)

    def _query_done(self, q: Query) -> None:
        """An adaptive run hears that every game of ``q`` is in."""
        ctx = self.ctx
        if ctx.stop is not None:
            assert ctx.game_log is not None
            if ctx.stop.done(q, ctx.game_log.take((q.dataset, q.subset, q.id))):
                self._folded.set()

    def _models_of(self, q: Query) -> tuple[list[ModelConfig], list[tuple[str, str]]]:
        """The models asked for an answer to ``q`` and its battles (an adaptive run: the active candidates'
        and the baseline's, which is asked only because some candidate still needs it)."""
        ctx = self.ctx
        pairs = pairs_of(ctx.config, q)
        if ctx.stop is None:
            return list(ctx.config.models), pairs
        needed, pairs = ctx.stop.battles(q, pairs)
        return [m for m in ctx.config.models if m.name in needed], pairs

    async def _process(self, q: Query) -> None:
        """Ask every model for its answer to ``q`` at once; each battle is judged the moment its second
        answer is in. One task per request and one task group per query (asyncio's own: the core runs
        on asyncio, docs/architecture.md), no task per battle and no event per answer."""
        answers: dict[str, Answer | None] = {}
        models, pairs = self._models_of(q)
        waiting = {m.name for m in models}
        counted: set[bytes] = set()  # records of this query already counted in the usage
        async with asyncio.TaskGroup() as tg:
            def arrived(name: str) -> None:
                waiting.discard(name)
                for cand, opp in pairs:
                    if name in (cand, opp) and cand not in waiting and opp not in waiting:
                        self.judging.start(tg, q, cand, opp, answers, counted)

            for m in models:
                tg.create_task(self._answer(m.name, q, answers, arrived, counted))

    async def _answer(self, name: str, q: Query, answers: dict[str, Answer | None],
                      arrived: Callable[[str], None], counted: set[bytes]) -> None:
        answers[name] = await self.sources[name].answer(q, counted)
        arrived(name)


def _planned(limits: Limits) -> int:
    return min(limits.concurrency, AUTO_PLANNED_CONCURRENCY) if limits.auto else limits.concurrency


def _n_pairs(k: int, cap: int | None) -> int:
    n = k * (k - 1) // 2
    return min(n, cap) if cap is not None else n
