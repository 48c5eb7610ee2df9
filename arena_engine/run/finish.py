"""The run's end: its results, the results snapshot it leaves, and a finished run's rerun without work.

Also the run log (``RUN_DIR/runs.jsonl``): a start and an end line per sending process.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

from .. import runlog
from ..battles import any_excluded
from ..from_store import complete, tally_from_store
from ..game_columns import columns_of, same_games
from ..identity import GENERATIONS
from ..progress import StageProgress
from ..results import ArenaResults, Tally, assemble, reference_metrics
from ..runlog import RunHistory
from ..snapshot import ItemsDigest
from ..snapshot import eligible as snapshot_eligible
from ..store import RunStore
from .context import ReferenceQueue, RunContext


class RunLog:
    """This process's start and end in the run folder (a local, sending run only)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.run_id = uuid.uuid4().hex
        self._logged = False

    def note(self, event: str) -> None:
        ctx, store = self.ctx, self.ctx.store
        if ctx.offline or not isinstance(store, RunStore) or store.readonly:
            return
        if event == "start":
            self._logged = True
        elif not self._logged:
            return
        rec: dict[str, Any] = {"run_id": self.run_id, "event": event, "pid": os.getpid(), "time": time.time()}
        if event == "end":
            rec["requests"] = {u.name: u.requests for u in ctx.usage.values()}
            rec["attempts"] = {u.name: u.attempts for u in ctx.usage.values()}
        runlog.append(ctx.config.output_dir, rec)


def results(ctx: RunContext) -> ArenaResults:
    """What this sending run found: its games and counts, the reference metrics of its answers."""
    store = ctx.open_store()
    seen = ItemsDigest()

    def items() -> Iterator[tuple[str, str, str, str, str]]:  # read one by one while the metrics are scored
        queued, ctx.reference_items = ctx.reference_items, ReferenceQueue()
        for model, dataset, subset, key, reference in queued:
            rec = store.get(GENERATIONS, key)
            if rec is not None:
                item = (model, dataset, subset, rec["answer"], reference)
                seen.add(item)
                yield item
        queued.clear()  # scored: freed before the games are sorted and rated

    history = runlog.history(ctx.config.output_dir) if isinstance(store, RunStore) else RunHistory()
    sums = reference_metrics(items())
    ctx.scored = (seen, sums)
    games = columns_of(ctx.games)
    ctx.games = games  # type: ignore[assignment]  # columns now: the builder's arrays freed
    tally = Tally(games, ctx.usage, ctx.failures, ctx.missing, (), ctx.queries, ctx.started,
                  ctx.failure_summary(), history, ctx.stop.summary() if ctx.stop is not None else None,
                  metric_sums=sums)
    return assemble(ctx.config, ctx.config.output_dir, tally)


def leaves_snapshot(ctx: RunContext) -> bool:
    """Whether this run leaves a results snapshot (arena_engine.snapshot): a local run over its own
    folder (a part's or a batch pass's folder is read by the pass that ends the run)."""
    store = ctx.store
    return (ctx.part is None and ctx.batch is None and isinstance(store, RunStore) and not store.readonly
            and snapshot_eligible(ctx.config))


def save_snapshot(ctx: RunContext) -> str | None:
    """Walk the checkpoints once, as `report` would, and save that walk's snapshot, so `report`,
    `rate` and a rerun of the finished run read it instead of walking. The run's own tally is not
    saved: it counts what this process sent, and a resumed run's games come in another order. The
    reference metrics are reused when the walk scores the very answers the run scored."""
    store = ctx.store
    assert isinstance(store, RunStore)
    tally = tally_from_store(store, ctx.config, imported=ctx.imported, copy=False)
    if tally.walked is not None:  # else a snapshot already describes the folder
        seen, sums = ctx.scored
        walked = ItemsDigest()
        for item in tally.reference_items:
            walked.add(item)
        if walked == seen:
            tally.metric_sums = sums
        complete(store, ctx.config, tally)
    # the run's results are those of the snapshot's inputs when its games are the walk's
    return tally.inputs if same_games(tally.games, ctx.games) else None


def may_be_finished(ctx: RunContext) -> bool:
    """Whether this arena first asks the checkpoints whether anything is left: a local run over its
    own folder that holds answers (a part or a batch pass sends its own way; a 0.1.0 folder is
    migrated by the sending path; an empty folder has everything left)."""
    return (ctx.part is None and ctx.batch is None and isinstance(ctx.store, RunStore)
            and ctx.store.count(GENERATIONS) > 0 and not any(ctx.legacy.values()))


def nothing_left(ctx: RunContext, tally: Tally) -> bool:
    """Whether a run over this walk would send nothing: no answer or verdict missing, no failure to
    ask again, and (--retry-excluded) no unparseable verdict."""
    if tally.missing or tally.failures:
        return False
    return not (ctx.retry_excluded and any_excluded(tally.games))


def show_reused(ctx: RunContext, tally: Tally) -> None:
    """A finished run's rerun: its usage and stages as a run reusing everything shows them."""
    ctx.usage.clear()
    ctx.usage.update(tally.usage)
    for m in ctx.config.models:
        u = tally.usage[m.name]
        ctx.stages[m.name] = StageProgress(f"generate {m.name}", total=u.reused, done=u.reused, reused=u.reused)
    for slot in ctx.slots:
        u = tally.usage[slot.role]
        ctx.stages[slot.role] = StageProgress(f"judge {slot.cfg.name}", total=u.reused, done=u.reused,
                                              reused=u.reused)


def rerun_results(ctx: RunContext, tally: Tally) -> ArenaResults:
    """A finished run's rerun: the walk's results (its snapshot kept or left)."""
    tally.history = runlog.history(ctx.config.output_dir)
    store = ctx.store
    assert isinstance(store, RunStore)
    complete(store, ctx.config, tally)
    return assemble(ctx.config, ctx.config.output_dir, tally)
