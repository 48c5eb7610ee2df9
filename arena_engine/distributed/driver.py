"""The driver of a Ray run (`run_on_ray`): it prepares the run folder, starts the coordinator and the
workers, shows their progress, and computes the results from the checkpoints once they are done."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anyio

from ..config import RunConfig
from ..datasets import iter_queries
from ..errors import ArenaError, ConfigError
from ..from_store import results_of_folder
from ..progress import ProgressEvent, StageProgress
from ..results import ArenaResults
from ..runfolder import save_config
from ..store import RunStore
from ..store.layered import merge_worker_stores
from ..usage import EndpointUsage
from .leases import batch_cap
from .watch import DriverInfo, DriverLost, require_ray
from .worker import Coordinator, ShardSummary, endpoint_roles, run_shard, worker_config

log = logging.getLogger(__name__)

#: How often the driver polls the workers' progress (seconds).
PROGRESS_EVERY = 0.5
#: Times Ray starts a worker task again after its process or node died (or it lost a driver that lives).
WORKER_RETRIES = 3


class RayProgress:
    """The workers' progress summed per stage, as :meth:`Arena.events` gives it (for the console)."""

    def __init__(self, coordinator: Any, workers: int) -> None:
        self._coordinator = coordinator
        self._workers = workers
        self._started = time.monotonic()
        self._stages: dict[str, StageProgress] = {}
        self.finished = anyio.Event()

    async def _poll(self) -> ProgressEvent:
        ray = require_ray()
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
        merge_worker_stores(store)
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
    gets a watchdog that ends it if this process dies (:mod:`arena_engine.distributed.reaper`).
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
        ray = require_ray()
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
        [sys.executable, "-m", "arena_engine.distributed.reaper", str(os.getpid()), session,
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
    ray = require_ray()
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
        limits = {role: ep.limits for role, ep in endpoint_roles(cfg).items()}
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
