"""A battle judged: both orders at once by every judge, or by a cascade's judges one after another."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..batch.session import DEFERRED
from ..battles import ExclusionReason, Game
from ..datasets import Query
from ..from_store import JudgeSlot, cascade_goes_on, count_record, verdict_game
from ..identity import JUDGMENTS, Request, find_judgment, judgment_request, retry_key
from .answers import Answer
from .ask_judge import ask_judge
from .context import RunContext


class Judging:
    """The judge stage of one run."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def start(self, tg: asyncio.TaskGroup, q: Query, cand: str, opp: str, answers: dict[str, Answer | None],
              counted: set[bytes]) -> None:
        """Judge ``cand`` against ``opp`` on ``q``, both answers being in: every judge's two games (both
        orders) as tasks of the query's group, or a cascade's judges one after another."""
        a_c, a_o = answers.get(cand), answers.get(opp)
        if a_c is None or a_o is None:
            self._no_answer_games(q, cand, opp, cand if a_c is None else opp)
            return
        if self.ctx.cascade:
            tg.create_task(self._cascade(q, cand, opp, a_c, a_o, counted))
            return
        for slot in self.ctx.order:
            tg.create_task(self.game(slot, q, cand, opp, a_c, a_o, True, counted))
            tg.create_task(self.game(slot, q, cand, opp, a_c, a_o, False, counted))

    async def _cascade(self, q: Query, cand: str, opp: str, a_c: Answer, a_o: Answer, counted: set[bytes]) -> None:
        """The next judge only when this one left the battle open (panel.escalate)."""
        ctx = self.ctx
        for i, slot in enumerate(ctx.order):
            async with asyncio.TaskGroup() as tg:
                first = tg.create_task(self.game(slot, q, cand, opp, a_c, a_o, True, counted))
                second = tg.create_task(self.game(slot, q, cand, opp, a_c, a_o, False, counted))
            if (q.dataset, q.subset, q.id, cand, opp) in ctx.deferred_battles:
                return  # this judge's verdicts come in a batch: the next judge waits for a later pass
            if not cascade_goes_on(ctx.config, ctx.order, i, q, cand, opp, first.result(), second.result()):
                return
            ctx.stages[ctx.order[i + 1].role].total += 2  # the next judge's games

    def _no_answer_games(self, q: Query, cand: str, opp: str, missing: str) -> None:
        ctx = self.ctx
        for slot in ctx.first_judges():
            ctx.stages[slot.role].done += 2
            for candidate_is_a in (True, False):
                ctx.games.append(Game(q.dataset, q.subset, q.id, cand, opp, candidate_is_a, None,
                                      f"{ExclusionReason.NO_ANSWER}: {missing}", judge=ctx.tag(slot.cfg.name)))

    def _stored(self, slot: JudgeSlot, req: Request) -> tuple[bytes, dict[str, Any] | None, int]:
        """(key of the latest stored verdict, its record, how many re-asks the chain holds)."""
        ctx = self.ctx
        found, rec, n, migrated = find_judgment(ctx.open_store(), slot.cfg, req, legacy=ctx.legacy[JUDGMENTS])
        if migrated and rec is not None:
            ctx.save(JUDGMENTS, req.key, rec)
        return found, rec, n

    async def game(self, slot: JudgeSlot, q: Query, cand: str, opp: str, a_c: Answer, a_o: Answer,
                   candidate_is_a: bool, counted: set[bytes]) -> int | None:
        """One game judged (or its stored verdict used); its outcome from the candidate's side."""
        ctx, cfg = self.ctx, slot.cfg
        stage, usage = ctx.stages[slot.role], ctx.usage[slot.role]
        first, second = (a_c, a_o) if candidate_is_a else (a_o, a_c)
        req = judgment_request(cfg, slot.identity, slot.system, q, first["answer"], second["answer"])
        base = req.key
        waited = False
        while True:
            key, rec, retries = self._stored(slot, req)
            if rec is not None and rec.get("verdict") is None and ctx.retry_excluded and not waited:
                key, rec = retry_key(base, retries + 1), None  # --retry-excluded: ask again, keep the old record
            if rec is not None:
                break
            busy = ctx.in_flight.claim(key)
            if busy is None:
                break
            await busy.wait()  # the identical prompt is being judged for another battle: share its verdict
            waited = True
        if rec is not None:
            if not waited:
                stage.reused += 1
                usage.reused += 1
        else:
            try:
                rec, error = await ask_judge(ctx, slot, req.messages, req.params)
                if rec is not None:
                    rec.update({
                        "v": 2, "judge": cfg.name, "identity": slot.identity, "dataset": q.dataset,
                        "subset": q.subset, "query_id": q.id, "a": first["model"], "b": second["model"],
                        "a_key": first["key"], "b_key": second["key"], "time": time.time(),
                    })
                    if key != base:
                        rec["retry_of"] = base.hex()
                    ctx.save(JUDGMENTS, key, rec)
            finally:
                ctx.in_flight.release(key)
            if rec is None and error.error == DEFERRED:
                ctx.deferred += 1
                ctx.deferred_battles.add((q.dataset, q.subset, q.id, cand, opp))
                return None
            if rec is None:
                ctx.record_failure("judgment", cfg.name, q, error, candidate=cand, opponent=opp,
                                   candidate_is_a=candidate_is_a)
                stage.done += 1
                stage.failed += 1
                ctx.games.append(Game(q.dataset, q.subset, q.id, cand, opp, candidate_is_a, None,
                                      f"{ExclusionReason.JUDGE_REQUEST_FAILED}: {error.error}",
                                      judge=ctx.tag(cfg.name)))
                return None
        return self._use(slot, q, cand, opp, candidate_is_a, key, rec, counted)

    def _use(self, slot: JudgeSlot, q: Query, cand: str, opp: str, candidate_is_a: bool, key: bytes,
             rec: dict[str, Any], counted: set[bytes]) -> int | None:
        """A verdict the results use (sent now or stored): counted, and its game kept."""
        ctx = self.ctx
        stage = ctx.stages[slot.role]
        count_record(ctx.usage[slot.role], key, rec, counted)
        stage.done += 1
        stage.prompt_tokens += int(rec.get("prompt_tokens") or 0)
        stage.completion_tokens += int(rec.get("completion_tokens") or 0)
        game = verdict_game(q, cand, opp, candidate_is_a, key, rec, ctx.tag(slot.cfg.name))
        ctx.games.append(game)
        return game.outcome
