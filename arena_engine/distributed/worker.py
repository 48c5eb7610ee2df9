"""A worker of a Ray run: its share of the config, and its run over its part of the queries with the
rate windows leased from the coordinator (which is the cluster's lease broker)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import anyio

from ..config import RunConfig
from ..endpoint_config import Endpoint, Limits
from ..roles import judge_role
from ..run import Arena, loop_options
from ..store.layered import LayeredStore
from ..usage import EndpointUsage
from .leased import LeasedLimiter
from .leases import LeaseBroker, LeaseClient
from .watch import DriverInfo, DriverLost, watch_driver

log = logging.getLogger(__name__)


def endpoint_roles(cfg: RunConfig) -> dict[str, Endpoint]:
    """Endpoint role -> endpoint: every model that sends requests, and every judge."""
    roles = {m.name: m.endpoint for m in cfg.models if m.evalscope_report is None}
    for i, j in enumerate(cfg.panel_judges):
        roles[judge_role(i, j.name)] = j.endpoint
    return roles


def leased_admission(cfg: RunConfig, leases: Mapping[str, LeaseClient]) -> dict[str, LeasedLimiter]:
    """Endpoint role -> the admission of its requests in a worker running ``cfg``: the endpoint's limits
    (the worker's share of its concurrency), learned quotas, and the rate windows leased through
    ``leases[role]``. Roles without a lease are admitted by the client's own limiter."""
    endpoints = endpoint_roles(cfg)
    return {role: LeasedLimiter(endpoints[role].limits, lease=lease, learn=True) for role, lease in leases.items()}


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

    admission = leased_admission(cfg, {
        role: LeaseClient(role, fetch, notify_hold=notify_hold, max_batch=caps[role])
        for role, ep in endpoint_roles(cfg).items() if _rate_limited(ep.limits)})
    store = LayeredStore(cfg.output_dir, index, count, fsync_interval=cfg.fsync_interval)
    arena = Arena(cfg, part=(index, count), store=store, admission=admission)
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
    for role, limiter in admission.items():
        settle = limiter.lease.pending_settlements()
        if settle:
            coordinator.settle.remote(role, settle)
    return ShardSummary(index, arena.usage, arena.snapshot().errors, os.getpid())
