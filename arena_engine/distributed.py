"""The Ray backend: one config's queries spread over the workers of a Ray cluster.

    arena-engine run CONFIG --backend ray [--address ADDR] [--workers N]

The driver (this process):

1. opens the run folder once (folding in shards a stopped run left), saves config.json, checks every
   dataset line, and starts one *coordinator* actor: the cluster's :class:`~arena_engine.leases.LeaseBroker`
   (shared request/token windows and Retry-After holds) that also collects progress;
2. starts N worker tasks. Worker i runs the ordinary async :class:`~arena_engine.pipeline.Arena` over
   the queries whose position % N == i, with each endpoint's concurrency split between the workers and
   its rate windows leased from the coordinator. It writes its own checkpoints in
   ``RUN_DIR/shards/i-of-N/`` and reads earlier runs' records from the run folder (read only);
3. when every worker is done, folds the shard checkpoints into the run folder and computes the
   ratings and reports once, from the checkpoints, exactly as ``arena-engine report`` does.

A worker that dies (node lost, process killed) is retried by Ray (``max_retries``) and resumes from its
shard's checkpoints: finished requests are not sent again. A stopped run resumes on either backend.
The run folder must be on storage every node sees (one machine, NFS, ...); the API keys must be set in
the environment of every node (a local cluster started here inherits this process's environment).
Ray is an optional extra: ``pip install 'arena-engine[ray]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import anyio

from .client import Endpoint
from .config import RunConfig
from .datasets import iter_queries
from .errors import ArenaError, ConfigError
from .leases import LeaseBroker, LeaseClient, batch_cap
from .limits import Limits
from .pipeline import JUDGE, Arena, ArenaResults, loop_options
from .progress import ProgressEvent, StageProgress
from .runfolder import save_config
from .store import RunStore
from .store.shards import LayeredStore, merge_shards
from .usage import EndpointUsage

log = logging.getLogger(__name__)

#: How often workers send progress to the coordinator, and the driver polls it (seconds).
PROGRESS_EVERY = 0.5
#: Times Ray starts a worker task again after its process or node died.
WORKER_RETRIES = 3


def _require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray backend needs Ray: pip install 'arena-engine[ray]'") from None
    return ray


# ---------------------------------------------------------------------------------------- config


def _endpoints(cfg: RunConfig) -> dict[str, Endpoint]:
    """Endpoint role -> endpoint: every model that sends requests, and the judge."""
    roles = {m.name: m.endpoint for m in cfg.models if m.evalscope_report is None}
    roles[JUDGE] = cfg.judge.endpoint
    return roles


def _share(limit: int, workers: int, index: int) -> int:
    """Worker ``index``'s part of a concurrency limit (the parts sum to the limit when it allows)."""
    return max(1, limit // workers + (1 if index < limit % workers else 0))


def worker_config(cfg: RunConfig, workers: int, index: int) -> RunConfig:
    """The config worker ``index`` runs: each endpoint's concurrency is its share of the limit."""

    def split(ep: Endpoint) -> Endpoint:
        return replace(ep, limits=replace(ep.limits, concurrency=_share(ep.limits.concurrency, workers, index)))

    models = tuple(replace(m, endpoint=split(m.endpoint)) if m.evalscope_report is None else m for m in cfg.models)
    return replace(cfg, models=models, judge=replace(cfg.judge, endpoint=split(cfg.judge.endpoint)))


def _rate_limited(limits: Limits) -> bool:
    return limits.rpm is not None or limits.tpm is not None


# ------------------------------------------------------------------------------------ coordinator


class Coordinator(LeaseBroker):
    """The lease broker of a distributed run, plus the workers' latest progress (a Ray actor)."""

    def __init__(self, limits: dict[str, Limits]) -> None:
        super().__init__(limits)
        self._progress: dict[int, tuple[list[tuple[Any, ...]], int, int]] = {}

    def progress(self, index: int, stages: list[tuple[Any, ...]], retries: int, errors: int) -> None:
        self._progress[index] = (stages, retries, errors)

    def snapshot(self) -> dict[int, tuple[list[tuple[Any, ...]], int, int]]:
        return self._progress


def _stage_rows(arena: Arena) -> tuple[list[tuple[Any, ...]], int, int]:
    ev = arena.snapshot()
    rows = [(s.name, s.total, s.done, s.reused, s.failed, s.prompt_tokens, s.completion_tokens)
            for s in ev.stages]
    return rows, ev.retries, ev.errors


# ----------------------------------------------------------------------------------------- worker


@dataclass
class ShardSummary:
    """What a worker hands back: its usage per endpoint role and its failures (the results themselves
    are in its checkpoints)."""

    index: int
    usage: dict[str, EndpointUsage]
    failures: int
    pid: int


def run_shard(cfg: RunConfig, index: int, count: int, coordinator: Any, caps: dict[str, int]) -> ShardSummary:
    """Worker ``index`` of ``count`` (runs in a Ray worker process)."""
    return anyio.run(_run_shard, cfg, index, count, coordinator, caps, backend_options=loop_options())


async def _run_shard(cfg: RunConfig, index: int, count: int, coordinator: Any,
                     caps: dict[str, int]) -> ShardSummary:
    async def fetch(endpoint: str, k: int, tokens: float, settle: list[tuple[int, int, float]]) -> Any:
        return await coordinator.lease.remote(endpoint, k, tokens, settle)

    def notify_hold(endpoint: str, until: float) -> None:
        coordinator.hold.remote(endpoint, until)

    leases = {role: LeaseClient(role, fetch, notify_hold=notify_hold, max_batch=caps[role])
              for role, ep in _endpoints(cfg).items() if _rate_limited(ep.limits)}
    store = LayeredStore(cfg.output_dir, index, count, fsync_interval=cfg.fsync_interval)
    arena = Arena(cfg, shard=(index, count), store=store, leases=leases)
    async with arena, anyio.create_task_group() as tg:

        async def report() -> None:
            while True:
                coordinator.progress.remote(index, *_stage_rows(arena))
                await anyio.sleep(PROGRESS_EVERY)

        tg.start_soon(report)
        try:
            await arena.run()
        finally:
            tg.cancel_scope.cancel()
    coordinator.progress.remote(index, *_stage_rows(arena))
    for role, lc in leases.items():
        settle = lc.pending_settlements()
        if settle:
            coordinator.settle.remote(role, settle)
    return ShardSummary(index, arena.usage, arena.snapshot().errors, os.getpid())


# ----------------------------------------------------------------------------------------- driver


class RayProgress:
    """The workers' progress summed per stage, as :meth:`Arena.events` gives it (for the console)."""

    def __init__(self, coordinator: Any, workers: int) -> None:
        self._coordinator = coordinator
        self._workers = workers
        self._started = time.monotonic()
        self._stages: dict[str, StageProgress] = {}
        self.finished = anyio.Event()

    async def _poll(self) -> ProgressEvent:
        ray = _require_ray()
        try:
            found = await anyio.to_thread.run_sync(ray.get, self._coordinator.snapshot.remote())
        except Exception:  # the coordinator is gone at the very end: keep the last figures
            found = {}
        totals: dict[str, list[int]] = {}
        retries = errors = 0
        for rows, r, e in found.values():
            retries += r
            errors += e
            for name, *figures in rows:
                acc = totals.setdefault(name, [0] * 6)
                for i, v in enumerate(figures):
                    acc[i] += v
        for name, (total, done, reused, failed, pt, ct) in totals.items():
            s = self._stages.setdefault(name, StageProgress(name, started=self._started))
            s.total, s.done, s.reused, s.failed, s.prompt_tokens, s.completion_tokens = total, done, reused, failed, pt, ct
        return ProgressEvent(stages=tuple(self._stages.values()), retries=retries, errors=errors,
                             finished=self.finished.is_set(), elapsed=time.monotonic() - self._started)

    async def events(self) -> AsyncIterator[ProgressEvent]:
        while not self.finished.is_set():
            yield await self._poll()
            with anyio.move_on_after(PROGRESS_EVERY):
                await self.finished.wait()
        yield await self._poll()


def _prepare(cfg: RunConfig) -> None:
    """Before any worker starts: the folder is usable and not in use, earlier shards are folded in, the
    config is saved, and every dataset line is valid (nothing is sent if one is bad)."""
    missing = cfg.missing_keys()
    if missing:
        raise ConfigError(
            f"environment variable(s) {', '.join(missing)} not set: they hold the API keys named by "
            "'api_key_env' in the config; export them and run again"
        )
    with RunStore(cfg.output_dir, fsync_interval=cfg.fsync_interval) as store:
        merge_shards(store)
        save_config(cfg, cfg.output_dir)
    for d in cfg.datasets:
        for _ in iter_queries(d.path, dataset=d.name, subsets=d.subsets, allow_empty=d.allow_empty):
            pass


def _raise_worker_error(exc: BaseException) -> None:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ArenaError):
        raise cause from None
    raise ArenaError(f"a ray worker failed: {exc}") from exc


def _add_sent(usage: dict[str, EndpointUsage], summaries: list[ShardSummary]) -> None:
    """The final offline pass counted the records; add what the workers sent."""
    for s in summaries:
        for role, u in s.usage.items():
            usage.setdefault(role, EndpointUsage(u.name)).add_sent(u)


async def run_on_ray(cfg: RunConfig, *, address: str | None = None, workers: int = 2,
                     progress: Any = None) -> ArenaResults:
    """Run (or resume) ``cfg`` on a Ray cluster and return the same results a local run gives.

    ``address`` is a running cluster's address (``ray://`` or ``host:port``); without it, an existing
    ``ray.init`` of this process is used, else a local cluster is started and stopped again.
    ``progress`` (optional) is called with a :class:`RayProgress` to display, e.g. ``show_progress``.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}")
    ray = _require_ray()
    await anyio.to_thread.run_sync(_prepare, cfg)
    started_here = False
    if address is not None or not ray.is_initialized():
        # in a thread: Ray must not replace our SIGINT/SIGTERM handling (it only does so on the main thread)
        quiet = logging.ERROR if logging.getLogger().level > logging.DEBUG else logging.INFO
        await anyio.to_thread.run_sync(lambda: ray.init(address=address, include_dashboard=False,
                                                        log_to_driver=False, logging_level=quiet))
        started_here = True
    coordinator = None
    refs: list[Any] = []
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        limits = {role: ep.limits for role, ep in _endpoints(cfg).items()}
        caps = {role: batch_cap(lim, workers) for role, lim in limits.items()}
        coordinator = ray.remote(num_cpus=0)(Coordinator).remote(limits)
        task = ray.remote(num_cpus=min(1.0, cpus / workers), max_retries=WORKER_RETRIES)(run_shard)
        refs = [task.remote(worker_config(cfg, workers, i), i, workers, coordinator, caps) for i in range(workers)]
        watcher = RayProgress(coordinator, workers)
        summaries: list[ShardSummary] = []
        async with anyio.create_task_group() as tg:
            if progress is not None:
                tg.start_soon(progress, watcher)
            try:
                pending = list(refs)
                while pending:
                    ready, pending = await anyio.to_thread.run_sync(
                        partial(ray.wait, pending, num_returns=1, timeout=PROGRESS_EVERY))
                    for ref in ready:
                        try:
                            summaries.append(await anyio.to_thread.run_sync(ray.get, ref))
                        except ray.exceptions.RayError as exc:
                            _raise_worker_error(exc)
            finally:
                watcher.finished.set()
        refs = []
    finally:
        with anyio.CancelScope(shield=True):
            for ref in refs:  # interrupted or failed: stop the other workers (their checkpoints stay)
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            if refs:
                with contextlib.suppress(Exception):
                    await anyio.to_thread.run_sync(lambda: ray.wait(refs, num_returns=len(refs), timeout=10))
            if coordinator is not None:
                with contextlib.suppress(Exception):
                    ray.kill(coordinator)
            if started_here:
                await anyio.to_thread.run_sync(ray.shutdown)
    # ratings and reports once, from the checkpoints (the shards are folded in on open)
    async with Arena(cfg, offline=True) as arena:
        results = await arena.run()
    _add_sent(results.usage, summaries)
    results.failures = sum(s.failures for s in summaries)
    return results
