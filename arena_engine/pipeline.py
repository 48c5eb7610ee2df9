"""The streaming arena pipeline: generation and judging at once, checkpointed, resumable.

Queries are read lazily into a bounded stream; a pool of query workers takes them one at a time. For a
query, every model's answer is requested at once, and each battle's two judge calls (both orders) leave
the moment its two answers exist, while other queries are still being generated. There is no barrier
between stages, and memory is bounded by the number of queries in flight, not by the dataset.

Every finished request is written to the run folder's checkpoints before its result moves on, so a
rerun reuses it and sends only the rest. Results read back without sending (``report``, ``rate``, a
finished rerun, ``offline=True``) come from ``from_store.results_from_store``, not from this pipeline.

Nothing the results need is imported before the first request: the rating, leaderboard and metrics
modules (numba and its compiled kernels) are loaded in a thread once the first request is on its way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from . import runlog
from .batch.session import DEFERRED, BatchChat
from .battles import ExclusionReason, Game
from .client import RETRY_BUDGET_EXHAUSTED, ChatClient, ChatResult
from .config import ModelConfig, RunConfig
from .datasets import Query
from .errors import ArgumentError, ConfigError, UsageError, VerdictError, unwrap
from .from_store import (
    FAILURES,
    cascade_goes_on,
    complete,
    count_record,
    import_record,
    iter_run_queries,
    judge_slots,
    load_imports,
    results_from_store,
    tally_from_store,
    verdict_game,
)
from .from_store import (
    JudgeSlot as JudgeSlot,
)
from .identity import (
    GENERATIONS,
    JUDGMENTS,
    Request,
    find_generation,
    find_judgment,
    generation_request,
    holds_legacy,
    judge_identity,
    judgment_request,
    model_identity,
    retry_key,
)
from .inflight import InFlight
from .judge import (
    DEFAULT_SYSTEM_PROMPT,
    VERDICT_SCHEMA,
    parse_verdict,
    prompt_text,
    retry_budget,
    retry_messages,
)
from .limits import Limits
from .pairing import pairs_of
from .progress import ProgressEvent, StageProgress
from .results import (
    ArenaResults as ArenaResults,  # the results' types live in results.py; importable here too
)
from .results import MetricSums as MetricSums
from .results import PanelResults as PanelResults
from .results import Tally, assemble, reference_metrics
from .roles import JUDGE as JUDGE
from .roles import is_judge_role as is_judge_role
from .roles import judge_role as judge_role
from .runfolder import save_config
from .runlog import RunHistory
from .snapshot import ItemsDigest
from .snapshot import eligible as snapshot_eligible
from .store import RunStore, content_key
from .store.shards import LayeredStore, merge_shards
from .usage import EndpointUsage as EndpointUsage

if TYPE_CHECKING:
    from .admission import Admission
    from .batch.session import BatchSession
    from .evalscope_import import ImportedAnswer
    from .stopping.hook import AdaptiveRun, GameLog

log = logging.getLogger(__name__)

def _game_order(g: Game) -> tuple[Any, ...]:
    return (g.dataset, g.subset, g.candidate, g.opponent, g.query_id, g.candidate_is_a, g.judge or "", g.outcome
            if g.outcome is not None else 9, g.reason or "", g.judgment_key or "")


class Arena:
    """One arena run over one run folder.

    ``async with Arena(config) as arena: results = await arena.run()``; ``arena.events()`` yields
    progress snapshots while it runs. No global state: two arenas in one process are independent.

    A distributed run's worker passes ``shard=(i, n)`` (the queries whose position % n == i), ``store``
    (its :class:`LayeredStore`; the run folder and its config.json are then the driver's business) and
    ``leases`` (endpoint role -> LeaseClient: model names, and ``JUDGE`` for the judge).
    """

    def __init__(self, config: RunConfig, *, offline: bool = False, progress_interval: float = 0.5,
                 shard: tuple[int, int] | None = None, store: LayeredStore | None = None,
                 leases: Mapping[str, Admission[Any]] | None = None, retry_excluded: bool = False,
                 batch: BatchSession | None = None) -> None:
        if shard is not None and not 0 <= shard[0] < shard[1]:
            raise ArgumentError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
        if shard is not None and config.stop.active:
            raise ConfigError("'arena.stop' decides on the whole run's queries in one order and cannot be "
                              "split over Ray workers; run it without --backend ray")
        self.config = config
        self.offline = offline
        self.shard = shard  # (i, n): this arena handles the queries whose position % n == i
        self.progress_interval = progress_interval
        self.run_dir = config.output_dir
        self._stack: AsyncExitStack | None = None
        self._store: RunStore | LayeredStore | None = None
        self._given_store = store
        self._run_scope: anyio.CancelScope | None = None
        self._failed_judgments: dict[tuple[str, str, str, str, str, bool, str | None], str] | None = None
        self._leases = dict(leases or {})
        self._batch = batch  # endpoints in batch mode (arena_engine.batch.session): None sends everything live
        self.deferred = 0  # requests this pass handed to a batch instead of answering
        self._deferred_battles: set[tuple[str, str, str, str, str]] = set()
        self._clients: dict[str, ChatClient | BatchChat] = {}
        self._imported: dict[str, dict[tuple[str, str, str], ImportedAnswer]] = {}
        self._games: list[Game] = []
        self._stop: AdaptiveRun | None = None  # [arena.stop]: set once the queries are counted
        self._folded = anyio.Event()  # an adaptive run completed a block (its next blocks may be sent)
        self._game_log: GameLog | None = None  # an adaptive run's games, also kept per query until it is done
        self._finished = anyio.Event()
        self._sending = anyio.Event()  # the first request was handed to a client: time to load the kernels
        self._started = time.monotonic()
        self._failures = 0
        self._missing = 0
        self.usage: dict[str, EndpointUsage] = {}
        self.stages: dict[str, StageProgress] = {}
        self._reference_items: list[tuple[str, str, str, bytes, str]] = []  # (model, dataset, subset, key, ref)
        self._scored: tuple[ItemsDigest, dict[tuple[str, str, str], MetricSums]] = (ItemsDigest(), {})
        self._queries: dict[tuple[str, str], int] = {}
        self._judge_system = config.judge.system_prompt or DEFAULT_SYSTEM_PROMPT
        self.retry_excluded = retry_excluded and not offline  # ask the judge again for unparseable verdicts
        self._identities = {m.name: model_identity(config, m) for m in config.models}
        self._judge_identity = judge_identity(config.judge)
        self._slots, self._order = judge_slots(config)
        self._cascade = bool(config.panel.cascade) and len(self._slots) > 1
        self._tag_judge = len(self._slots) > 1  # games say which judge made them (None: the one judge)
        self._schema_failed: set[str] = set()  # judges whose endpoint failed on the schema a parse retry added
        self._in_flight = InFlight()
        self._run_id = uuid.uuid4().hex
        self._run_logged = False
        self._failure_kinds: dict[tuple[str, str, str], int] = {}
        self._skipped: dict[tuple[str, str], int] = {}  # (model, why) -> requests not sent
        self._logged_failure: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Arena:
        missing = [] if self.offline else self.config.missing_keys()
        if missing:
            raise ConfigError(
                f"environment variable(s) {', '.join(missing)} not set: they hold the API keys named by "
                "'api_key_env' in the config; export them and run again"
            )
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._given_store is not None:
                store: RunStore | LayeredStore = self._given_store
                await anyio.to_thread.run_sync(store.open)
                self._store = store
                stack.push_async_callback(self._close_store)
            else:
                main = RunStore(self.run_dir, fsync_interval=self.config.fsync_interval)
                await anyio.to_thread.run_sync(main.open)
                self._store = main
                stack.push_async_callback(self._close_store)
                # a distributed run that stopped early left its shards' checkpoints beside ours
                await anyio.to_thread.run_sync(merge_shards, main)
            # 0.1.0 keys are tried only where that release began the folder (not on every new request)
            folder = self._store.base if isinstance(self._store, LayeredStore) else self._store
            self._legacy = {kind: holds_legacy(folder, kind) for kind in (GENERATIONS, JUDGMENTS)}
            if not self.offline:  # an offline run reads them in results_from_store
                self._imported = await anyio.to_thread.run_sync(partial(load_imports, self.config))
            if self.config.panel.human_labels is not None and not self.offline:  # a bad label stops the run before anything is sent
                from .judge_quality import read_human_labels

                await anyio.to_thread.run_sync(read_human_labels, self.config.panel.human_labels,
                                               [m.name for m in self.config.models])
            if not self.offline:
                if self._given_store is None:
                    save_config(self.config, self.run_dir)
                batch_roles = set() if self._batch is None else set(self._batch.roles)
                if any(ep.batch is not None for ep in self._endpoints()) and self._batch is None:
                    raise ConfigError("endpoints in mode = \"batch\" run through arena_engine.batch.session."
                                      "run_batched (what `arena-engine run` does), not a bare Arena")
                for m in self.config.models:
                    if m.name in batch_roles and self._batch is not None:
                        self._clients[m.name] = self._batch.client(m.name, self._store)
                    elif m.evalscope_report is None:
                        client = ChatClient(m.endpoint, admission=self._leases.get(m.name))
                        self._clients[m.name] = await stack.enter_async_context(client)
                for slot in self._slots:
                    if slot.role in batch_roles and self._batch is not None:
                        self._clients[slot.role] = self._batch.client(slot.role, self._store)
                        continue
                    judge = ChatClient(slot.cfg.endpoint, admission=self._leases.get(slot.role))
                    self._clients[slot.role] = await stack.enter_async_context(judge)
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    def _endpoints(self) -> list[Any]:
        return [m.endpoint for m in self.config.models if m.evalscope_report is None] + \
            [s.cfg.endpoint for s in self._slots]

    async def _close_store(self) -> None:
        """Close the checkpoints in a thread and wait for it to finish even through cancellation.

        anyio's shielded scope does not stop a native ``task.cancel()`` (an embedding service cancelling
        the task that runs the arena): the wait for the thread was cut short, the lock stayed held and a
        reopen of the folder in the same process failed with "in use". So the close is awaited through
        every cancellation, which is then raised once it is done."""
        if self._store is None:
            return
        closing = asyncio.get_running_loop().run_in_executor(None, self._store.close)
        cancelled = False
        while not closing.done():
            try:
                await asyncio.shield(closing)
            except asyncio.CancelledError:
                cancelled = True
        closing.result()  # a failure to close (a full disk) is raised as it is
        if cancelled:
            raise asyncio.CancelledError

    async def __aexit__(self, *exc: object) -> None:
        self._finished.set()
        if self._stack is not None:
            with anyio.CancelScope(shield=True):
                await self._stack.__aexit__(None, None, None)
            self._stack = None

    @property
    def store(self) -> RunStore | LayeredStore:
        """The run folder's open checkpoints (for write_reports inside ``async with``)."""
        if self._store is None:
            raise UsageError("the arena is not open: use 'async with Arena(config) as arena:'")
        return self._store

    def pause_sending(self, seconds: float) -> None:
        """Send nothing new (no request, no retry) for ``seconds``; requests in flight finish and are
        stored. A distributed worker does this while its driver is silent."""
        for client in self._clients.values():
            client.limiter.pause(seconds)

    # ------------------------------------------------------------------------------------- progress

    def snapshot(self) -> ProgressEvent:
        stats = [c.stats for c in self._clients.values()]
        return ProgressEvent(
            stages=tuple(self.stages.values()),
            retries=sum(getattr(s, "retries", 0) for s in stats),
            errors=self._failures,
            finished=self._finished.is_set(),
            elapsed=time.monotonic() - self._started,
        )

    async def events(self) -> AsyncIterator[ProgressEvent]:
        """Progress snapshots every ``progress_interval`` seconds, and a final one when the run ends."""
        while not self._finished.is_set():
            yield self.snapshot()
            with anyio.move_on_after(self.progress_interval):
                await self._finished.wait()
        yield self.snapshot()

    # ------------------------------------------------------------------------------------------ run

    def _iter_all(self) -> Iterator[Query]:
        return iter_run_queries(self.config, self.shard)

    def _pairs(self, q: Query) -> list[tuple[str, str]]:
        return pairs_of(self.config, q)

    async def run(self) -> ArenaResults:
        """Run (or resume) the whole arena and return the results."""
        if self._store is None:
            raise UsageError("use 'async with Arena(config) as arena:' before arena.run()")
        self._started = time.monotonic()
        if self.offline:  # nothing is sent: the results are those of the checkpoints
            assert isinstance(self._store, RunStore), "an offline arena reads a run folder's own store"
            self._finished.set()
            return await anyio.to_thread.run_sync(results_from_store, self._store, self.config)
        if self._nothing_to_send_yet():
            assert isinstance(self._store, RunStore)
            tally = await anyio.to_thread.run_sync(partial(tally_from_store, self._store, self.config,
                                                           imported=self._imported, copy=False))
            if self._nothing_left(tally):  # a finished run's rerun: its results, without a task per query
                return await self._finished_results(tally)
        try:
            async with anyio.create_task_group() as tg:
                self._run_scope = tg.cancel_scope
                # load the compiled rating/metrics kernels while the requests are in flight
                if self.offline:  # nothing will be sent: load them while the checkpoints are read
                    self._sending.set()
                tg.start_soon(self._warm_when_sending)
                await self._run_queries()
                self._sending.set()  # nothing was sent (a finished run): load them now
        except BaseExceptionGroup as group:
            error = unwrap(group)
            if error is group:
                raise
            raise error from None  # callers get the ArenaError itself, not a task group's wrapping
        finally:
            self._finished.set()
            self._log_run("end")
        results = await anyio.to_thread.run_sync(self._results)
        if self._snapshots():
            results.inputs = await anyio.to_thread.run_sync(self._save_snapshot)
        return results

    def _results(self) -> ArenaResults:
        assert self._store is not None
        store = self._store
        seen = ItemsDigest()

        def items() -> Iterator[tuple[str, str, str, str, str]]:  # read one by one while the metrics are scored
            queued, self._reference_items = self._reference_items, []
            for model, dataset, subset, key, reference in queued:
                rec = store.get(GENERATIONS, key)
                if rec is not None:
                    item = (model, dataset, subset, rec["answer"], reference)
                    seen.add(item)
                    yield item
            queued.clear()  # scored: freed before the games are sorted and rated

        history = runlog.history(self.run_dir) if isinstance(self._store, RunStore) else RunHistory()
        sums = reference_metrics(items())
        self._scored = (seen, sums)
        tally = Tally(self._games, self.usage, self._failures, self._missing, (), self._queries, self._started,
                      self.failure_summary(), history, self._stop.summary() if self._stop is not None else None,
                      metric_sums=sums)
        return assemble(self.config, self.run_dir, tally)

    def _snapshots(self) -> bool:
        """Whether this run leaves a results snapshot (arena_engine.snapshot): a local run over its own
        folder (a shard's or a batch pass's folder is read by the pass that ends the run)."""
        store = self._store
        return (self.shard is None and self._batch is None and isinstance(store, RunStore) and not store.readonly
                and snapshot_eligible(self.config))

    def _save_snapshot(self) -> str | None:
        """Walk the checkpoints once, as `report` would, and save that walk's snapshot, so `report`,
        `rate` and a rerun of the finished run read it instead of walking. The run's own tally is not
        saved: it counts what this process sent, and a resumed run's games come in another order. The
        reference metrics are reused when the walk scores the very answers the run scored."""
        assert isinstance(self._store, RunStore)
        tally = tally_from_store(self._store, self.config, imported=self._imported, copy=False)
        if tally.walked is not None:  # else a snapshot already describes the folder
            seen, sums = self._scored
            walked = ItemsDigest()
            for item in tally.reference_items:
                walked.add(item)
            if walked == seen:
                tally.metric_sums = sums
            complete(self._store, self.config, tally)
        # the run's results are those of the snapshot's inputs when its games are the walk's
        return tally.inputs if sorted(tally.games, key=_game_order) == sorted(self._games, key=_game_order) else None

    def _nothing_to_send_yet(self) -> bool:
        """Whether this arena first asks the checkpoints whether anything is left: a local run over its
        own folder that holds answers (a shard or a batch pass sends its own way; a 0.1.0 folder is
        migrated by the sending path; an empty folder has everything left)."""
        return (self.shard is None and self._batch is None and isinstance(self._store, RunStore)
                and self._store.count(GENERATIONS) > 0 and not any(self._legacy.values()))

    def _nothing_left(self, tally: Tally) -> bool:
        """Whether a run over this walk would send nothing: no answer or verdict missing, no failure to
        ask again, and (--retry-excluded) no unparseable verdict."""
        if tally.missing or tally.failures:
            return False
        return not (self.retry_excluded and any(g.outcome is None for g in tally.games))

    async def _finished_results(self, tally: Tally) -> ArenaResults:
        """A finished run's rerun: the walk's results, its stages as a run reusing everything shows them."""
        self._log_run("start")
        self.usage = tally.usage
        for m in self.config.models:
            u = tally.usage[m.name]
            self.stages[m.name] = StageProgress(f"generate {m.name}", total=u.reused, done=u.reused, reused=u.reused)
        for slot in self._slots:
            u = tally.usage[slot.role]
            self.stages[slot.role] = StageProgress(f"judge {slot.cfg.name}", total=u.reused, done=u.reused,
                                                   reused=u.reused)
        self._finished.set()
        self._log_run("end")
        tally.history = runlog.history(self.run_dir)
        assert isinstance(self._store, RunStore)
        await anyio.to_thread.run_sync(complete, self._store, self.config, tally)
        return await anyio.to_thread.run_sync(assemble, self.config, self.run_dir, tally)

    def _log_run(self, event: str) -> None:
        """Note this process's start and end in the run folder (a local, sending run only)."""
        store = self._store
        if self.offline or not isinstance(store, RunStore) or store.readonly:
            return
        if event == "start":
            self._run_logged = True
        elif not self._run_logged:
            return
        rec: dict[str, Any] = {"run_id": self._run_id, "event": event, "pid": os.getpid(), "time": time.time()}
        if event == "end":
            rec["requests"] = {u.name: u.requests for u in self.usage.values()}
            rec["attempts"] = {u.name: u.attempts for u in self.usage.values()}
        runlog.append(self.run_dir, rec)

    async def _run_queries(self) -> None:
        cfg = self.config
        # A first pass validates every dataset line (nothing is sent if one is bad) and counts the work.
        counts = await anyio.to_thread.run_sync(self._count_queries)
        n_queries = sum(counts.values())
        self._queries = counts
        if cfg.stop.active:  # adaptive judging holds the queries in memory to walk them in its seeded order
            from .stopping.hook import AdaptiveRun, GameLog

            queries = await anyio.to_thread.run_sync(lambda: list(self._iter_all()))
            self._stop = AdaptiveRun(cfg, queries)
            self._games = self._game_log = GameLog()
        self._log_run("start")  # the datasets are valid: from here on this process may send
        for m in cfg.models:
            self.stages[m.name] = StageProgress(f"generate {m.name}", total=n_queries)
            self.usage[m.name] = EndpointUsage(m.name)
        pairs_per_query = len(cfg.candidates) if cfg.mode == "baseline" else _n_pairs(len(cfg.models), cfg.max_pairs_per_query)
        for slot in self._slots:  # a cascade's later judges: their totals grow as battles reach them
            later = self._cascade and slot is not self._order[0]
            self.stages[slot.role] = StageProgress(f"judge {slot.cfg.name}",
                                                   total=0 if later else 2 * pairs_per_query * n_queries)
            self.usage[slot.role] = EndpointUsage(slot.cfg.name)

        in_flight = cfg.queries_in_flight or max(
            8, 2 * max(_planned(m.endpoint.limits) for m in cfg.models)
            + sum(_planned(slot.cfg.endpoint.limits) for slot in self._slots)
        )
        in_flight = max(1, min(in_flight, n_queries))  # never more workers than there is work
        send, recv = anyio.create_memory_object_stream[Query](in_flight)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._produce, send)
            for _ in range(in_flight):
                tg.start_soon(self._work, recv.clone())
            recv.close()

    def _count_queries(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for q in self._iter_all():
            counts[(q.dataset, q.subset)] = counts.get((q.dataset, q.subset), 0) + 1
        return counts

    async def _produce(self, send: ObjectSendStream[Query]) -> None:
        async with send:
            if self._stop is not None:
                await self._produce_adaptive(send)
                return
            for q in self._iter_all():
                await send.send(q)

    async def _produce_adaptive(self, send: ObjectSendStream[Query]) -> None:
        """Block k of the seeded order once the blocks up to k - 2 are complete (stopping.schedule), for the
        candidates still active: what is sent depends on completed prefixes only, never on timing."""
        assert self._stop is not None
        schedule = self._stop.schedule
        k = 0
        while True:
            while not schedule.ready(k):
                self._folded = anyio.Event()
                await self._folded.wait()
            if k < schedule.blocks:
                self._shrink_totals(k)
            if schedule.finished(k):
                return
            for q in self._stop.block(k):
                await send.send(q)
            k += 1

    def _shrink_totals(self, k: int) -> None:
        """Progress totals without what block k will not send (once nothing is active: every block left)."""
        assert self._stop is not None
        schedule = self._stop.schedule
        active = schedule.active(k)
        units = len(schedule.candidates)
        for b in range(k, schedule.blocks) if not active else (k,):
            size = len(schedule.block_range(b))
            needed = self._stop.models_for(active)
            for m in self.config.models:
                if m.name not in needed:
                    self.stages[m.name].total -= size
            for slot in self._order[:1] if self._cascade else self._order:
                self.stages[slot.role].total -= 2 * (units - len(active)) * size

    async def _work(self, recv: ObjectReceiveStream[Query]) -> None:
        async with recv:
            async for q in recv:
                await self._process(q)
                self._query_done(q)

    def _query_done(self, q: Query) -> None:
        """An adaptive run hears that every game of ``q`` is in (a sending run and a replay alike)."""
        if self._stop is not None:
            assert self._game_log is not None
            if self._stop.done(q, self._game_log.take((q.dataset, q.subset, q.id))):
                self._folded.set()

    def _models_of(self, q: Query) -> tuple[list[ModelConfig], list[tuple[str, str]]]:
        """The models asked for an answer to ``q`` and its battles (an adaptive run: the active candidates'
        and the baseline's, which is asked only because some candidate still needs it)."""
        pairs = self._pairs(q)
        if self._stop is None:
            return list(self.config.models), pairs
        needed, pairs = self._stop.battles(q, pairs)
        return [m for m in self.config.models if m.name in needed], pairs

    async def _process(self, q: Query) -> None:
        answers: dict[str, dict[str, Any] | None] = {}
        models, pairs = self._models_of(q)
        ready = {m.name: anyio.Event() for m in models}
        counted: set[bytes] = set()  # records of this query already counted in the usage
        async with anyio.create_task_group() as tg:
            for m in models:
                tg.start_soon(self._answer, m, q, answers, ready[m.name], counted)
            for cand, opp in pairs:
                tg.start_soon(self._battle, q, cand, opp, answers, ready, counted)

    # ----------------------------------------------------------------------------------- generation

    async def _answer(self, m: ModelConfig, q: Query, answers: dict[str, dict[str, Any] | None], ready: anyio.Event,
                      counted: set[bytes]) -> None:
        try:
            answers[m.name] = await self._generate(m, q, counted)
        finally:
            ready.set()

    def _count(self, usage: EndpointUsage, key: bytes, rec: Mapping[str, Any], counted: set[bytes]) -> None:
        """Count a record in the usage once per query, however many battles use it."""
        count_record(usage, key, rec, counted)

    def _import(self, m: ModelConfig, q: Query) -> dict[str, Any] | None:
        """An answer from an EvalScope run (paired with the query by its text: ImportIndex), stored like a generation."""
        assert self._store is not None
        stage = self.stages[m.name]
        stage.done += 1
        key, rec = import_record(m, q, self._imported[m.name].get((q.dataset, q.subset, q.id)))
        if rec is None:
            stage.failed += 1
            self._missing += 1
            return None
        if self._store.get(GENERATIONS, key) is None:
            self._save(GENERATIONS, key, rec)
        else:
            stage.reused += 1
        self.usage[m.name].use(rec)
        if q.reference is not None:
            self._reference_items.append((m.name, q.dataset, q.subset, key, q.reference))
        return {**rec, "key": key.hex()}

    def _find_generation(self, m: ModelConfig, req: Request) -> dict[str, Any] | None:
        """The stored answer (a 0.1.0 record is copied under its new key: see arena_engine.identity)."""
        assert self._store is not None
        rec, migrated = find_generation(self._store, m, req, legacy=self._legacy[GENERATIONS])
        if migrated and rec is not None:
            self._save(GENERATIONS, req.key, rec)
        return rec

    async def _generate(self, m: ModelConfig, q: Query, counted: set[bytes]) -> dict[str, Any] | None:
        assert self._store is not None
        if m.name in self._imported:
            return self._import(m, q)
        stage, usage = self.stages[m.name], self.usage[m.name]
        req = generation_request(self._identities[m.name], m, q)
        key = req.key
        waited = False
        while True:
            rec = self._find_generation(m, req)
            if rec is not None:
                if not waited:
                    stage.reused += 1
                    usage.reused += 1
                break
            down = self._needed_endpoint_down(m)
            if down is not None:  # its answer could not be judged: do not pay for it
                self._skipped[(m.name, down)] = self._skipped.get((m.name, down), 0) + 1
                self._missing += 1
                stage.done += 1
                stage.failed += 1
                return None
            busy = self._in_flight.claim(key)
            if busy is None:
                try:
                    rec = await self._send_generation(m, q, req)
                finally:
                    self._in_flight.release(key)
                if rec is None:
                    return None
                break
            await busy.wait()  # the same request is being sent for another model: use its answer
            waited = True
        return self._use_answer(m, q, key, rec, counted)

    def _use_answer(self, m: ModelConfig, q: Query, key: bytes, rec: dict[str, Any],
                    counted: set[bytes]) -> dict[str, Any]:
        """An answer the results use (sent now or stored): counted, and queued for the reference metrics."""
        stage = self.stages[m.name]
        self._count(self.usage[m.name], key, rec, counted)
        stage.done += 1
        stage.prompt_tokens += int(rec.get("prompt_tokens") or 0)
        stage.completion_tokens += int(rec.get("completion_tokens") or 0)
        if q.reference is not None:  # scored after the run, off the request path
            self._reference_items.append((m.name, q.dataset, q.subset, key, q.reference))
        return {**rec, "key": key.hex()}

    def _needed_endpoint_down(self, m: ModelConfig) -> str | None:
        """Why ``m``'s answer could not be used: the judge's or (for a candidate) the baseline's endpoint
        has stopped answering (its circuit is open); None while they are up."""
        for slot in self._slots:
            judge = self._clients.get(slot.role)
            if judge is not None and judge.health.is_open:
                return f"judge {slot.cfg.name} endpoint down"
        cfg = self.config
        if cfg.mode == "baseline" and m.name != cfg.baseline:
            base = self._clients.get(cfg.baseline)
            if base is not None and base.health.is_open:
                return f"baseline {cfg.baseline} endpoint down"
        return None

    async def _send_generation(self, m: ModelConfig, q: Query, req: Request) -> dict[str, Any] | None:
        stage, usage = self.stages[m.name], self.usage[m.name]
        self._sending.set()
        result = await self._clients[m.name].chat(req.messages, req.params)
        if result.error == DEFERRED:  # queued for the endpoint's next batch: this query waits for a later pass
            self.deferred += 1
            return None
        self._account(usage, result)
        if not result.ok or result.content is None:
            self._record_failure("generation", m.name, q, result)
            stage.done += 1
            stage.failed += 1
            return None
        rec = {
            "v": 2, "model": m.name, "identity": self._identities[m.name], "endpoint_model": m.endpoint.model,
            "dataset": q.dataset, "subset": q.subset,
            "query_id": q.id, "question": q.question, "answer": result.content,
            "finish_reason": result.finish_reason, "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens, "latency": round(result.latency, 6),
            "attempts": result.attempts, "time": time.time(),
        }
        if result.reasoning:  # a reasoning model's thinking: kept, never shown to the judge
            rec["reasoning"] = result.reasoning
        self._save(GENERATIONS, req.key, rec)
        return rec

    def _save(self, kind: str, key: bytes, rec: dict[str, Any]) -> None:
        """Checkpoint a record. If that fails (disk full, read-only), stop the whole run at once: every
        task's next await is cancelled, so no request is sent whose answer could not be saved."""
        assert self._store is not None
        try:
            self._store.put(kind, key, rec)
        except BaseException:
            if self._run_scope is not None and not self.offline:  # offline saves run in the replay's thread
                self._run_scope.cancel()
            raise

    def _account(self, usage: EndpointUsage, result: ChatResult) -> None:
        """Count a request this process sent (what the results use is counted by EndpointUsage.use)."""
        usage.requests += 1
        usage.attempts += result.attempts
        usage.sent_prompt_tokens += result.prompt_tokens
        usage.sent_completion_tokens += result.completion_tokens
        if not result.ok:
            usage.failures += 1

    def _record_failure(self, stage: str, who: str, q: Query, result: ChatResult, **extra: Any) -> None:
        assert self._store is not None
        self._failures += 1
        rec = {"stage": stage, "endpoint": who, "dataset": q.dataset, "subset": q.subset, "query_id": q.id,
               "error": result.error, "status": result.status, "attempts": result.attempts, "time": time.time(), **extra}
        self._save(FAILURES, content_key(rec), rec)
        kind = _failure_kind(result.error)
        self._failure_kinds[(stage, who, kind)] = self._failure_kinds.get((stage, who, kind), 0) + 1
        if (stage, who) not in self._logged_failure:  # one line per endpoint; the run's end gives the counts
            self._logged_failure.add((stage, who))
            ep = self._judge_endpoint(who) if stage == "judgment" else self.config.model(who).endpoint
            log.warning("%s %s (%s, model %s) failed on %s/%s#%s: %s (further failures of this endpoint are counted "
                        "at the end, not logged)", stage, who, ep.api_url, ep.model, q.dataset, q.subset, q.id, result.error)

    def _judge_endpoint(self, name: str) -> Any:
        for slot in self._slots:
            if slot.cfg.name == name:
                return slot.cfg.endpoint
        return self.config.judge.endpoint

    def failure_summary(self) -> list[str]:
        """One line per endpoint and kind of failure of this run, with its count."""
        lines = []
        for (stage, who, kind), n in sorted(self._failure_kinds.items()):
            ep = self._judge_endpoint(who) if stage == "judgment" else self.config.model(who).endpoint
            lines.append(f"{who} ({ep.api_url}, model {ep.model}): {n} request(s) failed for good: {kind}")
        for (who, why), n in sorted(self._skipped.items()):
            lines.append(f"{who}: {n} request(s) not sent: {why}")
        return lines

    # -------------------------------------------------------------------------------------- judging

    async def _battle(self, q: Query, cand: str, opp: str, answers: dict[str, dict[str, Any] | None],
                      ready: dict[str, anyio.Event], counted: set[bytes]) -> None:
        await ready[cand].wait()
        await ready[opp].wait()
        a_c, a_o = answers.get(cand), answers.get(opp)
        if a_c is None or a_o is None:
            self._no_answer_games(q, cand, opp, cand if a_c is None else opp)
            return
        if not self._cascade:  # every judge judges the battle, all at once
            async with anyio.create_task_group() as tg:
                for slot in self._order:
                    tg.start_soon(self._judge_game, slot, q, cand, opp, a_c, a_o, True, counted)
                    tg.start_soon(self._judge_game, slot, q, cand, opp, a_c, a_o, False, counted)
            return
        async def game(slot: JudgeSlot, candidate_is_a: bool, outcomes: dict[bool, int | None]) -> None:
            outcomes[candidate_is_a] = await self._judge_game(slot, q, cand, opp, a_c, a_o, candidate_is_a, counted)

        for i, slot in enumerate(self._order):  # a cascade: the next judge only when this one left it open
            outcomes: dict[bool, int | None] = {}
            async with anyio.create_task_group() as tg:
                tg.start_soon(game, slot, True, outcomes)
                tg.start_soon(game, slot, False, outcomes)
            if (q.dataset, q.subset, q.id, cand, opp) in self._deferred_battles:
                return  # this judge's verdicts come in a batch: the next judge waits for a later pass
            if not self._goes_on(i, q, cand, opp, outcomes.get(True), outcomes.get(False)):
                return

    def _goes_on(self, i: int, q: Query, cand: str, opp: str, first: int | None, second: int | None) -> bool:
        """Whether a cascade sends the battle on from its i-th judge (and counts the next judge's games)."""
        if not cascade_goes_on(self.config, self._order, i, q, cand, opp, first, second):
            return False
        self.stages[self._order[i + 1].role].total += 2
        return True

    def _no_answer_games(self, q: Query, cand: str, opp: str, missing: str) -> None:
        for slot in self._order[:1] if self._cascade else self._order:
            self.stages[slot.role].done += 2
            for candidate_is_a in (True, False):
                self._games.append(Game(q.dataset, q.subset, q.id, cand, opp, candidate_is_a, None,
                                        f"{ExclusionReason.NO_ANSWER}: {missing}", judge=self._tag(slot)))

    def _tag(self, slot: JudgeSlot) -> str | None:
        return slot.cfg.name if self._tag_judge else None

    def _find_judgment(self, slot: JudgeSlot, req: Request) -> tuple[bytes, dict[str, Any] | None, int]:
        """(key of the latest stored verdict, its record, how many re-asks the chain holds)."""
        assert self._store is not None
        found, rec, n, migrated = find_judgment(self._store, slot.cfg, req, legacy=self._legacy[JUDGMENTS])
        if migrated and rec is not None:
            self._save(JUDGMENTS, req.key, rec)
        return found, rec, n

    async def _judge_game(self, slot: JudgeSlot, q: Query, cand: str, opp: str, a_c: dict[str, Any],
                          a_o: dict[str, Any], candidate_is_a: bool, counted: set[bytes]) -> int | None:
        """One game judged (or its stored verdict used); its outcome from the candidate's side."""
        assert self._store is not None
        cfg = slot.cfg
        stage, usage = self.stages[slot.role], self.usage[slot.role]
        first, second = (a_c, a_o) if candidate_is_a else (a_o, a_c)
        req = judgment_request(cfg, slot.identity, slot.system, q, first["answer"], second["answer"])
        base = req.key
        waited = False
        while True:
            key, rec, retries = self._find_judgment(slot, req)
            if rec is not None and rec.get("verdict") is None and self.retry_excluded and not waited:
                key, rec = retry_key(base, retries + 1), None  # --retry-excluded: ask again, keep the old record
            if rec is not None:
                break
            busy = self._in_flight.claim(key)
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
                rec, error = await self._ask_judge(slot, req.messages, req.params)
                if rec is not None:
                    rec.update({
                        "v": 2, "judge": cfg.name, "identity": slot.identity, "dataset": q.dataset,
                        "subset": q.subset, "query_id": q.id, "a": first["model"], "b": second["model"],
                        "a_key": first["key"], "b_key": second["key"], "time": time.time(),
                    })
                    if key != base:
                        rec["retry_of"] = base.hex()
                    self._save(JUDGMENTS, key, rec)
            finally:
                self._in_flight.release(key)
            if rec is None and error.error == DEFERRED:
                self.deferred += 1
                self._deferred_battles.add((q.dataset, q.subset, q.id, cand, opp))
                return None
            if rec is None:
                self._record_failure("judgment", cfg.name, q, error, candidate=cand, opponent=opp,
                                     candidate_is_a=candidate_is_a)
                stage.done += 1
                stage.failed += 1
                self._games.append(Game(q.dataset, q.subset, q.id, cand, opp, candidate_is_a, None,
                                        f"{ExclusionReason.JUDGE_REQUEST_FAILED}: {error.error}", judge=self._tag(slot)))
                return None
        return self._use_verdict(slot, q, cand, opp, candidate_is_a, key, rec, counted)

    def _use_verdict(self, slot: JudgeSlot, q: Query, cand: str, opp: str, candidate_is_a: bool, key: bytes,
                     rec: dict[str, Any], counted: set[bytes]) -> int | None:
        """A verdict the results use (sent now or stored): counted, and its game kept."""
        stage = self.stages[slot.role]
        self._count(self.usage[slot.role], key, rec, counted)
        stage.done += 1
        stage.prompt_tokens += int(rec.get("prompt_tokens") or 0)
        stage.completion_tokens += int(rec.get("completion_tokens") or 0)
        game = verdict_game(q, cand, opp, candidate_is_a, key, rec, self._tag(slot))
        self._games.append(game)
        return game.outcome

    async def _ask_judge(self, slot: JudgeSlot, messages: list[dict[str, Any]],
                         params: dict[str, Any]) -> tuple[dict[str, Any] | None, ChatResult]:
        """Ask the judge, asking again (at most `parse_retries` times) in a way that can help: a reply cut
        off by the completion budget once with twice the budget (`judge.retry_budget`); an unreadable
        verdict with the reply quoted and the format repeated (`judge.retry_messages`) and, when the
        request had no response_format, constrained to the verdict schema (the client steps down to the
        shape the endpoint takes; if the endpoint fails on it the arena stops adding it). A retry that
        would resend a request already answered at temperature 0 is not sent. (None, the failed result)
        if the request itself failed for good (the caller records it with its reason)."""
        client = self._clients[slot.role]
        usage = self.usage[slot.role]
        tries = 1 + max(0, slot.cfg.parse_retries)
        deterministic = params.get("temperature", 1.0) == 0
        ask_messages, ask_params = messages, params
        grown = False
        reason = ""
        unread: ChatResult | None = None  # the last reply that held no verdict
        prompt_tokens = completion_tokens = 0
        attempt = 0
        while attempt < tries:
            attempt += 1
            self._sending.set()
            result = await client.chat(ask_messages, ask_params)
            if result.error == DEFERRED:  # queued for the judge's next batch (a later pass reads it)
                return None, result
            self._account(usage, result)
            prompt_tokens += result.prompt_tokens
            completion_tokens += result.completion_tokens
            cut = result.finish_reason == "length"
            bigger = retry_budget(ask_params) if cut and not grown else None
            if not result.ok:
                if bigger is not None and attempt < tries:  # e.g. a reasoning model's thinking used it all
                    reason, ask_params, grown = f"cut off by the completion budget: {result.error}", bigger, True
                    continue
                if unread is not None and "response_format" in ask_params and "response_format" not in params:
                    # the endpoint failed on the schema this retry added: never add it again
                    self._schema_failed.add(slot.role)
                    ask_params = {k: v for k, v in ask_params.items() if k != "response_format"}
                    continue
                if unread is None:
                    return None, result
                break  # a retry failed: the game keeps the reason its last reply was unreadable
            try:
                parsed = parse_verdict(result.content, prompt_text(ask_messages))
            except VerdictError as exc:
                unread = result
                reason = f"{exc} (cut off by the completion budget)" if cut else str(exc)
                if bigger is not None:
                    ask_params, grown = bigger, True
                    continue
                again = retry_messages(messages, result.content, str(exc))
                again_params = ask_params
                if "response_format" not in ask_params and slot.role not in self._schema_failed:
                    again_params = {**ask_params, "response_format": VERDICT_SCHEMA}
                if deterministic and again == ask_messages and again_params == ask_params:
                    break  # the same request again at temperature 0 would get the same reply
                ask_messages, ask_params = again, again_params
                continue
            return {"verdict": parsed.verdict.label, "reasoning": parsed.reasoning, "raw": result.content,
                    "error": None, "tries": attempt, "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens, "latency": round(result.latency, 6),
                    "finish_reason": result.finish_reason, "thinking": result.reasoning}, result
        last = unread or result
        return {"verdict": None, "reasoning": "", "raw": last.content, "error": reason, "tries": attempt,
                "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "latency": round(last.latency, 6), "finish_reason": last.finish_reason,
                "thinking": last.reasoning}, last

    # -------------------------------------------------------------------------------------- results

    async def _warm_when_sending(self) -> None:
        """Once the first request is on its way (so that importing numba does not delay it), load the
        kernels in a thread while the requests run."""
        await self._sending.wait()
        await anyio.to_thread.run_sync(self._warm_kernels, abandon_on_cancel=True)

    def _warm_kernels(self) -> None:
        """Load (or compile) the numba kernels the results need: ~1 s that would otherwise follow the run."""
        from .kernels import warm

        warm(self.config.rating.method, self.config.rating.interval)



def _failure_kind(error: str | None) -> str:
    """The kind a failure is counted under: its reason code ("http_404", "timeout"), and for a spent retry
    budget the last attempt's code as well ("retry_budget_exhausted: http_429"), which says the cause."""
    parts = (error or "error").split(": ", 2)
    return ": ".join(parts[:2]) if parts[0] == RETRY_BUDGET_EXHAUSTED and len(parts) > 1 else parts[0].split(":", 1)[0]


#: What an endpoint without a configured concurrency (its gate follows latency up to AUTO_MAX) counts
#: for when the number of queries in flight is planned: enough for the gate to grow well past where most
#: servers stop, without thousands of queries waiting at a gate that starts at 8 slots.
AUTO_PLANNED_CONCURRENCY = 128


def _planned(limits: Limits) -> int:
    return min(limits.concurrency, AUTO_PLANNED_CONCURRENCY) if limits.auto else limits.concurrency


def _n_pairs(k: int, cap: int | None) -> int:
    n = k * (k - 1) // 2
    return min(n, cap) if cap is not None else n


def loop_options() -> dict[str, Any]:
    """anyio's asyncio backend options: uvloop's event loop when it is installed (the `fast` extra)."""
    try:
        import uvloop
    except ImportError:
        return {}
    return {"loop_factory": uvloop.new_event_loop}


def run_arena(config: RunConfig, *, offline: bool = False) -> ArenaResults:
    """Run an arena from synchronous code (scripts): the sync entry point (``arena_engine.run_arena``
    also writes the reports when asked: arena_engine.scripts).

    Inside a running event loop (a notebook, an async service) this is an :class:`ArenaError`: use
    ``await Arena(...).run()`` there.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise UsageError(
            "run_arena() cannot run inside a running event loop (a notebook or an async service): "
            "use `async with Arena(config) as arena: results = await arena.run()` there "
            "(in short, `await Arena(...).run()`), then `write_reports(results)`"
        )

    async def main() -> ArenaResults:
        async with Arena(config, offline=offline) as arena:
            return await arena.run()

    return anyio.run(main, backend_options=loop_options())
