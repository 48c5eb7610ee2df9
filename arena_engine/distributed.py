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

A driver that dies (SIGKILL, lost machine) stops its workers' sending within a second. Each worker's
progress report is a heartbeat it awaits: a failed one (the coordinator actor dies with the driver that
owns it), or on the driver's machine the driver's pid ending, cancels the worker's run at once; a
heartbeat unanswered for :data:`DRIVER_TIMEOUT` pauses all sending until one is answered (its lease on
sending has lapsed), and after :data:`DRIVER_GIVE_UP` the worker stops. What was stored stays stored. A
local cluster the driver started itself is ended by a watchdog process (:mod:`arena_engine.ray_reaper`)
when the driver dies; a cluster it joined is left alone.
The run folder must be on storage every node sees (one machine, NFS, ...); the API keys must be set in
the environment of every node (a local cluster started here inherits this process's environment).
Ray is an optional extra: ``pip install 'arena-engine[ray]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import anyio

from .client import Endpoint
from .config import RunConfig
from .datasets import iter_queries
from .errors import ArenaError, ConfigError
from .from_store import results_of_folder
from .leases import LeaseBroker, LeaseClient, batch_cap
from .limits import Limits
from .pipeline import Arena, loop_options
from .progress import ProgressEvent, StageProgress
from .ray_reaper import PROC, alive, start_time
from .results import ArenaResults
from .roles import JUDGE as JUDGE  # the first judge's endpoint role (tests and callers import it here)
from .roles import judge_role
from .runfolder import save_config
from .store import RunStore
from .store.shards import LayeredStore, merge_shards
from .usage import EndpointUsage

log = logging.getLogger(__name__)

#: How often the driver polls the workers' progress (seconds).
PROGRESS_EVERY = 0.5
#: How often a worker sends its progress to the coordinator and awaits the reply (its heartbeat), and
#: how long it goes without a reply before it stops sending new requests until one comes (seconds).
HEARTBEAT_EVERY = 0.25
DRIVER_TIMEOUT = 0.75
#: How often a worker checks its lease (the age of the last reply), and on the driver's machine the
#: driver's pid (seconds).
LEASE_TICK = DRIVER_POLL = 0.05
#: How long a worker waits, sending nothing, for a silent driver before it stops for good (seconds; a
#: driver that lives after all sees the task fail and Ray runs it again, resuming from its checkpoints).
DRIVER_GIVE_UP = 60.0
#: Times Ray starts a worker task again after its process or node died (or it lost a driver that lives).
WORKER_RETRIES = 3


def _require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray backend needs Ray: pip install 'arena-engine[ray]'") from None
    return ray


# ---------------------------------------------------------------------------------------- config


def _endpoints(cfg: RunConfig) -> dict[str, Endpoint]:
    """Endpoint role -> endpoint: every model that sends requests, and every judge."""
    roles = {m.name: m.endpoint for m in cfg.models if m.evalscope_report is None}
    for i, j in enumerate(cfg.panel_judges):
        roles[judge_role(i, j.name)] = j.endpoint
    return roles


def _share(limit: int, workers: int, index: int) -> int:
    """Worker ``index``'s part of a concurrency limit (the parts sum to the limit when it allows)."""
    return max(1, limit // workers + (1 if index < limit % workers else 0))


def worker_config(cfg: RunConfig, workers: int, index: int) -> RunConfig:
    """The config worker ``index`` runs: each endpoint's concurrency is its share of the limit."""

    def split(ep: Endpoint) -> Endpoint:
        return replace(ep, limits=replace(ep.limits, concurrency=_share(ep.limits.concurrency, workers, index)))

    models = tuple(replace(m, endpoint=split(m.endpoint)) if m.evalscope_report is None else m for m in cfg.models)
    judges = tuple(replace(j, endpoint=split(j.endpoint)) for j in cfg.judges)
    return replace(cfg, models=models, judge=replace(cfg.judge, endpoint=split(cfg.judge.endpoint)), judges=judges)


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


@dataclass(frozen=True)
class DriverInfo:
    """Where the driver runs: its Ray node and pid (a worker on that node watches the pid as well)."""

    node_id: str
    pid: int


class DriverLost(ArenaError):
    """A worker stopped because its driver is gone, or did not answer for DRIVER_GIVE_UP. Ray retries
    the task if the driver lives after all (the worker resumes from its shard's checkpoints)."""


async def _watch_pid(pid: int) -> str | None:
    """Return once process ``pid`` has ended; None at once if it cannot be seen from here (another pid
    namespace: then only the heartbeat tells)."""
    started = start_time(pid) if PROC.is_dir() else None  # /proc tells a reused pid from the driver's
    if (PROC.is_dir() and started is None) or not alive(pid, started):
        return None
    while alive(pid, started):
        await anyio.sleep(DRIVER_POLL)
    return f"the driver (pid {pid}) ended"


async def _watch_heartbeat(heartbeat: Callable[[], Awaitable[Any]], pause: Callable[[float], None],
                           clock: Callable[[], float]) -> str:
    """Await ``heartbeat()`` every HEARTBEAT_EVERY seconds: the worker's lease on sending. While the last
    reply is DRIVER_TIMEOUT old, nothing new is sent (``pause``); return, saying why, once the coordinator
    is known to be dead or the silence reaches DRIVER_GIVE_UP."""
    ray = _require_ray()
    unavailable = getattr(ray.exceptions, "ActorUnavailableError", ())  # Ray >= 2.30
    last_reply = clock()
    died = anyio.Event()
    reason = ""

    async def beat() -> None:
        nonlocal last_reply, reason
        while True:
            try:
                with anyio.move_on_after(DRIVER_TIMEOUT):  # then ask again; the lease below decides
                    await heartbeat()
                    last_reply = clock()
            except unavailable:
                pass  # unreachable for now, it may come back: the lease decides
            except ray.exceptions.RayActorError:
                reason = "the driver's coordinator died (it dies with the driver)"
                died.set()
                return
            except ray.exceptions.RayError:
                pass
            await anyio.sleep(HEARTBEAT_EVERY)

    async with anyio.create_task_group() as tg:
        tg.start_soon(beat)
        paused = False
        while not died.is_set():
            silent = clock() - last_reply
            if silent >= DRIVER_GIVE_UP:
                reason = f"no answer from the driver's coordinator for {silent:.0f} s"
                break
            if silent >= DRIVER_TIMEOUT:  # the lease lapsed: renewed while the silence lasts
                pause(3 * LEASE_TICK)
                if not paused:
                    log.warning("no answer from the driver for %.1f s: sending nothing until it answers", silent)
                paused = True
            elif paused:
                log.warning("the driver answers again: sending resumes")
                paused = False
            with anyio.move_on_after(LEASE_TICK):
                await died.wait()
        tg.cancel_scope.cancel()
    return reason


async def watch_driver(heartbeat: Callable[[], Awaitable[Any]], pause: Callable[[float], None],
                       driver: DriverInfo | None, *, clock: Callable[[], float] = time.monotonic) -> str:
    """Return, saying why, once the driver is lost: its coordinator died or has not answered for
    DRIVER_GIVE_UP (after DRIVER_TIMEOUT, ``pause`` keeps anything new from being sent), or (a worker on
    the driver's node) the driver's pid ended. ``clock`` ages the replies; it must count the seconds the
    loop's timers count (tests pass a virtual loop's)."""
    reason: list[str] = []
    async with anyio.create_task_group() as tg:

        async def first(watch: Callable[[], Awaitable[str | None]]) -> None:
            why = await watch()
            if why is not None:
                reason.append(why)
                tg.cancel_scope.cancel()

        tg.start_soon(first, partial(_watch_heartbeat, heartbeat, pause, clock))
        if driver is not None and driver.node_id == _require_ray().get_runtime_context().get_node_id():
            tg.start_soon(first, partial(_watch_pid, driver.pid))
    return reason[0]


@dataclass
class ShardSummary:
    """What a worker hands back: its usage per endpoint role and its failures (the results themselves
    are in its checkpoints)."""

    index: int
    usage: dict[str, EndpointUsage]
    failures: int
    pid: int


def run_shard(cfg: RunConfig, index: int, count: int, coordinator: Any, caps: dict[str, int],
              driver: DriverInfo | None = None) -> ShardSummary:
    """Worker ``index`` of ``count`` (runs in a Ray worker process)."""
    return anyio.run(_run_shard, cfg, index, count, coordinator, caps, driver, backend_options=loop_options())


async def _run_shard(cfg: RunConfig, index: int, count: int, coordinator: Any,
                     caps: dict[str, int], driver: DriverInfo | None) -> ShardSummary:
    async def fetch(endpoint: str, k: int, tokens: float, settle: list[tuple[int, int, float]]) -> Any:
        return await coordinator.lease.remote(endpoint, k, tokens, settle)

    def notify_hold(endpoint: str, until: float) -> None:
        coordinator.hold.remote(endpoint, until)

    leases = {role: LeaseClient(role, fetch, notify_hold=notify_hold, max_batch=caps[role])
              for role, ep in _endpoints(cfg).items() if _rate_limited(ep.limits)}
    store = LayeredStore(cfg.output_dir, index, count, fsync_interval=cfg.fsync_interval)
    arena = Arena(cfg, shard=(index, count), store=store, leases=leases)
    lost: list[str] = []
    finished = False
    async with arena, anyio.create_task_group() as tg:

        async def heartbeat() -> None:  # the progress report, answered
            await coordinator.progress.remote(index, *_stage_rows(arena))

        async def watch() -> None:
            lost.append(await watch_driver(heartbeat, arena.pause_sending, driver))
            tg.cancel_scope.cancel()  # nothing more is sent; what was stored stays stored

        tg.start_soon(watch)
        try:
            await arena.run()
            finished = True
        finally:
            tg.cancel_scope.cancel()
    if lost and not finished:
        log.warning("ray worker %d stopped: %s", index, lost[0])
        raise DriverLost(f"ray worker {index} stopped: {lost[0]}")
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


class _Connection:
    """This process's ``ray.init`` ... ``ray.shutdown``, on a thread of its own that lives in between.

    On Linux Ray has the kernel kill the processes of a cluster it starts when the *thread* that started
    them ends (``PR_SET_PDEATHSIG``): a cluster started on a thread that then ended was SIGKILLed at once
    (tried). So ``ray.init`` must not run on one of anyio's pooled threads, which retire after 10 s idle.
    Off the main thread, Ray also leaves our SIGINT/SIGTERM handling alone. A local cluster started here
    gets a watchdog that ends it if this process dies (:mod:`arena_engine.ray_reaper`).
    """

    def __init__(self, address: str | None) -> None:
        self._address = address
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="ray-connection", daemon=True)

    async def start(self) -> None:
        self._thread.start()
        await anyio.to_thread.run_sync(self._ready.wait)
        if self._error is not None:
            raise self._error

    async def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            await anyio.to_thread.run_sync(self._thread.join)

    def _main(self) -> None:
        ray = _require_ray()
        try:
            quiet = logging.ERROR if logging.getLogger().level > logging.DEBUG else logging.INFO
            ray.init(address=self._address, include_dashboard=False, log_to_driver=False, logging_level=quiet)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        reaper = None
        try:
            reaper = _start_reaper(ray)
        except OSError as exc:
            log.warning("could not start the watchdog of the local Ray cluster: %s", exc)
        self._ready.set()
        self._stop.wait()
        try:
            ray.shutdown()
        finally:
            if reaper is not None:
                reaper.terminate()
                reaper.wait()


def _start_reaper(ray: Any) -> subprocess.Popen[bytes] | None:
    """The watchdog for a local cluster ``ray.init`` has just started here (None if it joined one)."""
    if not sys.platform.startswith("linux"):
        return None  # elsewhere Ray starts its own reaper, which ends its process group
    try:
        node = ray._private.worker._global_node
        started = bool(node.all_processes.get("raylet"))
        session = node.get_session_dir_path()
    except AttributeError:  # a Ray without these: no watchdog
        return None
    if not started:  # joined a running cluster: not ours to end
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "arena_engine.ray_reaper", str(os.getpid()), session,
         os.path.abspath(os.path.dirname(ray.__file__))],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True, cwd="/",
    )


def _raise_worker_error(exc: BaseException) -> None:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ArenaError):
        raise cause from None
    raise ArenaError(f"a ray worker failed: {exc}") from exc


def _add_sent(usage: dict[str, EndpointUsage], summaries: list[ShardSummary]) -> None:
    """results_of_folder counted the records; add what the workers sent."""
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
    connection = _Connection(address) if address is not None or not ray.is_initialized() else None
    coordinator = None
    refs: list[Any] = []
    try:
        if connection is not None:
            await connection.start()
        # a worker on this node also watches our pid (not through Ray Client: the driver is elsewhere)
        client = address is not None and address.startswith("ray://")
        driver = None if client else DriverInfo(ray.get_runtime_context().get_node_id(), os.getpid())
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        limits = {role: ep.limits for role, ep in _endpoints(cfg).items()}
        caps = {role: batch_cap(lim, workers) for role, lim in limits.items()}
        coordinator = ray.remote(num_cpus=0)(Coordinator).remote(limits)
        task = ray.remote(num_cpus=min(1.0, cpus / workers), max_retries=WORKER_RETRIES,
                          retry_exceptions=[DriverLost])(run_shard)
        refs = [task.remote(worker_config(cfg, workers, i), i, workers, coordinator, caps, driver)
                for i in range(workers)]
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
            if connection is not None:
                await connection.stop()
    # ratings and reports once, from the checkpoints (the shards are folded in on open)
    results = await anyio.to_thread.run_sync(results_of_folder, cfg)
    _add_sent(results.usage, summaries)
    results.failures = sum(s.failures for s in summaries)
    return results
