"""The arena run as a small lifecycle: open the store and the sources, run the stages, close.

``async with Arena(config) as arena: results = await arena.run()``. Opening (``opening``) reads what
must be checked before anything is sent and builds each endpoint's client; ``queries`` runs the work
plan (the query workers, their answer sources and battles); ``finish`` turns what the run counted into
its results and leaves the results snapshot. Results read back without sending (``report``, ``rate``,
a finished rerun, ``offline=True``) come from ``from_store.results_from_store``, not from the stages.

Nothing the results need is imported before the first request: the rating, leaderboard and metrics
modules (numba and its compiled kernels) are loaded in a thread once the first request is on its way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from ..config import RunConfig
from ..errors import ArgumentError, ConfigError, UsageError, unwrap
from ..from_store import results_from_store, tally_from_store
from ..progress import ProgressEvent, StageProgress
from ..results import ArenaResults
from ..store import RunStore
from ..store.layered import LayeredStore
from ..usage import EndpointUsage
from . import finish, opening
from .context import RunContext
from .queries import QueryWork

if TYPE_CHECKING:
    from ..admission import Admission
    from ..batch.session import BatchChat, BatchSession
    from ..client import ChatClient


class Arena:
    """One arena run over one run folder. ``arena.events()`` yields progress snapshots while it runs.
    No global state: two arenas in one process are independent.

    A distributed run's worker passes ``part=(i, n)`` (the queries whose position % n == i), ``store``
    (its :class:`LayeredStore`; the run folder and its config.json are then the driver's business) and
    ``admission`` (endpoint role -> the admission its client uses instead of a local limiter).
    """

    def __init__(self, config: RunConfig, *, offline: bool = False, progress_interval: float = 0.5,
                 part: tuple[int, int] | None = None, store: LayeredStore | None = None,
                 admission: Mapping[str, Admission[Any]] | None = None, retry_excluded: bool = False,
                 batch: BatchSession | None = None) -> None:
        if part is not None and not 0 <= part[0] < part[1]:
            raise ArgumentError("part must be (index, count) with 0 <= index < count (a distributed worker's share, "
                                f"its shard of the queries), got {part}")
        if part is not None and config.stop.active:
            raise ConfigError("'arena.stop' decides on the whole run's queries in one order and cannot be "
                              "split over Ray workers; run it without --backend ray")
        self.config = config
        self.run_dir = config.output_dir
        self.progress_interval = progress_interval
        self.ctx = RunContext(config, offline=offline, part=part, retry_excluded=retry_excluded, batch=batch)
        self._given_store = store
        self._admission = dict(admission or {})
        self._stack: AsyncExitStack | None = None
        self._log = finish.RunLog(self.ctx)

    @property
    def usage(self) -> dict[str, EndpointUsage]:
        return self.ctx.usage

    @property
    def stages(self) -> dict[str, StageProgress]:
        return self.ctx.stages

    @property
    def clients(self) -> dict[str, ChatClient | BatchChat]:
        """Each endpoint role's client while the arena is open."""
        return self.ctx.clients

    @property
    def store(self) -> RunStore | LayeredStore:
        """The run folder's open checkpoints (for write_reports inside ``async with``)."""
        if self.ctx.store is None:
            raise UsageError("the arena is not open: use 'async with Arena(config) as arena:'")
        return self.ctx.store

    async def __aenter__(self) -> Arena:
        ctx = self.ctx
        opening.check_keys(ctx)
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await opening.open_store(ctx, stack, self._given_store)
            await opening.read_inputs(ctx, own_folder=self._given_store is None)
            await opening.open_clients(ctx, stack, self._admission)
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.ctx.finished.set()
        if self._stack is not None:
            with anyio.CancelScope(shield=True):
                await self._stack.__aexit__(None, None, None)
            self._stack = None

    def pause_sending(self, seconds: float) -> None:
        """Send nothing new (no request, no retry) for ``seconds``; requests in flight finish and are
        stored. A distributed worker does this while its driver is silent."""
        for client in self.ctx.clients.values():
            client.limiter.pause(seconds)

    def snapshot(self) -> ProgressEvent:
        ctx = self.ctx
        return ProgressEvent(stages=tuple(ctx.stages.values()),
                             retries=sum(getattr(c.stats, "retries", 0) for c in ctx.clients.values()),
                             errors=ctx.failures, finished=ctx.finished.is_set(), elapsed=time.monotonic() - ctx.started)

    async def events(self) -> AsyncIterator[ProgressEvent]:
        """Progress snapshots every ``progress_interval`` seconds, and a final one when the run ends."""
        while not self.ctx.finished.is_set():
            yield self.snapshot()
            with anyio.move_on_after(self.progress_interval):
                await self.ctx.finished.wait()
        yield self.snapshot()

    def failure_summary(self) -> list[str]:
        """One line per endpoint and kind of failure of this run, with its count."""
        return self.ctx.failure_summary()

    async def run(self) -> ArenaResults:
        """Run (or resume) the whole arena and return the results."""
        ctx = self.ctx
        if ctx.store is None:
            raise UsageError("use 'async with Arena(config) as arena:' before arena.run()")
        ctx.started = time.monotonic()
        if ctx.offline:  # nothing is sent: the results are those of the checkpoints
            assert isinstance(ctx.store, RunStore), "an offline arena reads a run folder's own store"
            ctx.finished.set()
            return await anyio.to_thread.run_sync(results_from_store, ctx.store, self.config)
        if finish.may_be_finished(ctx):
            assert isinstance(ctx.store, RunStore)
            tally = await anyio.to_thread.run_sync(partial(tally_from_store, ctx.store, self.config,
                                                           imported=ctx.imported, copy=False))
            if finish.nothing_left(ctx, tally):  # a finished run's rerun: its results, without a task per query
                self._log.note("start")
                finish.show_reused(ctx, tally)
                ctx.finished.set()
                self._log.note("end")
                return await anyio.to_thread.run_sync(finish.rerun_results, ctx, tally)
        try:
            async with anyio.create_task_group() as tg:
                ctx.run_scope = tg.cancel_scope
                tg.start_soon(self._warm_when_sending)  # load the rating/metrics kernels while requests run
                work = QueryWork(ctx)
                await work.prepare()
                self._log.note("start")  # the datasets are valid: from here on this process may send
                await work.run()
                ctx.sending.set()  # nothing was sent (a finished run): load them now
        except BaseExceptionGroup as group:
            error = unwrap(group)
            if error is group:
                raise
            raise error from None  # callers get the ArenaError itself, not a task group's wrapping
        finally:
            ctx.finished.set()
            self._log.note("end")
        results = await anyio.to_thread.run_sync(finish.results, ctx)
        if finish.leaves_snapshot(ctx):
            results.inputs = await anyio.to_thread.run_sync(finish.save_snapshot, ctx)
        return results

    async def _warm_when_sending(self) -> None:
        """Once the first request is on its way (so that importing numba does not delay it), load the
        numba kernels the results need in a thread while the requests run: ~1 s that would otherwise
        follow the run."""
        await self.ctx.sending.wait()
        from ..kernels import warm

        rating = self.config.rating
        await anyio.to_thread.run_sync(warm, rating.method, rating.interval, abandon_on_cancel=True)


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
