"""Leased rate limits: shards of one run, each with its own limiter, stay under each endpoint's limit
together only because they lease from one broker (here in-process; in a Ray run, an actor)."""

from __future__ import annotations

import math
from pathlib import Path

import anyio
import pytest
from distributed_support import RATES, limited_config, limited_sim, window_excess

from arena_engine.distributed import JUDGE, worker_config
from arena_engine.distributed.leases import LeaseBroker, LeaseClient, LeaseReply, batch_cap
from arena_engine.distributed.worker import leased_admission
from arena_engine.limits import Limits
from arena_engine.pipeline import Arena
from arena_engine.sim.process import SimProcess
from arena_engine.store import RunStore
from arena_engine.store.layered import WORKERS_DIR, LayeredStore, merge_worker_stores

SHARDS = 2


async def _run_shards(cfg, broker: LeaseBroker | None) -> int:  # type: ignore[no-untyped-def]
    """Run the config as SHARDS sharded arenas at once in this process; returns the failures."""
    failures = 0

    async def fetch(endpoint: str, k: int, tokens: float, settle: list[tuple[int, int, float]]) -> LeaseReply:
        assert broker is not None
        return broker.lease(endpoint, k, tokens, settle)

    def hold(endpoint: str, until: float) -> None:
        assert broker is not None
        broker.hold(endpoint, until)

    async def shard(i: int) -> None:
        nonlocal failures
        wcfg = worker_config(cfg, SHARDS, i) if broker is not None else cfg
        roles = {m.name: m.endpoint.limits for m in cfg.models} | {JUDGE: cfg.judge.endpoint.limits}
        leases = {} if broker is None else leased_admission(wcfg, {
            role: LeaseClient(role, fetch, notify_hold=hold, max_batch=batch_cap(lim, SHARDS))
            for role, lim in roles.items()})
        store = LayeredStore(cfg.output_dir, i, SHARDS)
        async with Arena(wcfg, part=(i, SHARDS), store=store, admission=leases) as arena:
            await arena.run()
            failures += arena.snapshot().errors

    async with anyio.create_task_group() as tg:
        for i in range(SHARDS):
            tg.start_soon(shard, i)
    return failures


def test_shards_leasing_from_one_broker_keep_every_endpoint_under_its_limit(tmp_path: Path) -> None:
    with SimProcess(limited_sim()) as sim:
        cfg = limited_config(sim.url, tmp_path, "run", queries=10)
        roles = {m.name: m.endpoint.limits for m in cfg.models} | {JUDGE: cfg.judge.endpoint.limits}
        broker = LeaseBroker(roles)
        failures = anyio.run(_run_shards, cfg, broker)
        stats = sim.stats(times=True)
    assert failures == 0
    assert stats["status"].get("429", 0) == 0, stats["status"]
    assert window_excess(stats, RATES) == {}
    assert broker.leases > 0
    # every answer is in a shard's checkpoints; opening the run folder folds them in
    with RunStore(cfg.output_dir) as store:
        assert merge_worker_stores(store) == store.count("generations") + store.count("judgments")
        assert store.count("generations") == 3 * 20 and store.count("judgments") == 4 * 20
    assert not (cfg.output_dir / WORKERS_DIR).exists()


def test_without_the_broker_the_same_shards_overrun_the_limit(tmp_path: Path) -> None:
    """The control: each shard alone keeps its limit, so two of them send twice the rate."""
    with SimProcess(limited_sim()) as sim:
        cfg = limited_config(sim.url, tmp_path, "run", queries=10)
        anyio.run(_run_shards, cfg, None)
        stats = sim.stats(times=True)
    assert stats["status"].get("429", 0) > 0 or window_excess(stats, RATES)


def test_broker_batches_respect_the_window_and_refund_unused_slots() -> None:
    now = [1000.0]
    limits = Limits(concurrency=4, rpm=600.0, window=1.0)  # 10 per second
    broker = LeaseBroker({"m": limits}, clock=lambda: now[0])
    a = broker.lease("m", 10, 0.0)
    assert a.requests == 10 and a.start == now[0] and a.span == pytest.approx(0.05)
    b = broker.lease("m", 5, 0.0)
    # the first batch filled the (stretched) window: the next starts when it leaves it
    assert b.start >= a.start + 1.0 + a.span
    # a batch never used goes back to the window at once (settled with 0 used)
    now[0] = b.start + 1.2 + b.span  # 'b' has left the window too
    broker.settle("m", [(b.lease_id, 0, 0.0)])
    c = broker.lease("m", 10, 0.0)
    assert c.start == now[0] and c.requests == 10
    broker.hold("m", now[0] + 5.0)
    d = broker.lease("m", 1, 0.0, [(c.lease_id, 10, 0.0)])
    assert d.start >= now[0] + 5.0 and d.hold_until == now[0] + 5.0
    assert math.isinf(LeaseBroker({"free": Limits()}).lease("free", 3, 0.0).tokens)


def test_token_leases_settle_to_what_the_server_counted() -> None:
    now = [50.0]

    def broker_after_first_batch() -> tuple[LeaseBroker, LeaseReply]:
        broker = LeaseBroker({"m": Limits(tpm=6000.0, window=1.0)}, clock=lambda: now[0])  # 100 tokens/s
        a = broker.lease("m", 4, 100.0)  # 4 requests estimated at 25 tokens each: the whole window
        assert a.tokens == 100.0 and a.start == now[0]
        return broker, a

    broker, a = broker_after_first_batch()
    assert broker.lease("m", 2, 50.0, [(a.lease_id, 4, 100.0)]).start > now[0] + 1.0  # full until a leaves
    broker, a = broker_after_first_batch()
    # the server counted 40 tokens for the first batch: 60 come back, so the next batch goes as soon as
    # the pacing of those 40 allows (0.4 s), not when the batch leaves the window (1.07 s)
    assert broker.lease("m", 2, 50.0, [(a.lease_id, 4, 40.0)]).start < now[0] + 0.5


def test_a_writer_is_refused_while_shard_workers_read_the_run_folder(tmp_path: Path) -> None:
    from arena_engine.errors import CheckpointError

    with RunStore(tmp_path / "run") as store:
        store.put("generations", b"k" * 16, {"answer": "kept"})
    reader = LayeredStore(tmp_path / "run", 0, 2).open()
    try:
        assert reader.get("generations", b"k" * 16) == {"answer": "kept"}
        with pytest.raises(CheckpointError, match="in use by the workers of a distributed run"):
            RunStore(tmp_path / "run").open()
        with pytest.raises(CheckpointError, match="open read-only"):
            reader.base.put("generations", b"j" * 16, {})
        reader.put("generations", b"j" * 16, {"answer": "new"})  # goes to the shard's own store
    finally:
        reader.close()
    with RunStore(tmp_path / "run") as store:  # the readers are gone: the writer gets in
        assert merge_worker_stores(store) == 1
        assert store.get("generations", b"j" * 16) == {"answer": "new"}
