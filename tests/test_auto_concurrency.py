"""Concurrency that fits the server when the config sets none: a one-slot server is not flooded with
queued requests, a server with many slots is filled."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from shape_server import completion, shape_server

from arena_engine.client import ChatClient, Endpoint
from arena_engine.config import config_from_dict
from arena_engine.endpoint_config import AUTO_MAX, AUTO_START, Limits
from arena_engine.limits import ConcurrencyGate
from arena_engine.sim.config import Latency, SimConfig
from arena_engine.sim.process import SimProcess

pytestmark = pytest.mark.anyio

SERVICE = 0.02  # seconds the server spends on one request


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def _server(wait: Callable[[], Awaitable[None]]) -> AsyncIterator[str]:
    """A chat endpoint answering "ok" after ``await wait()``; yields the base URL."""

    async def answer(_: dict[str, Any]) -> dict[str, Any]:
        await wait()
        return completion("ok")

    async with shape_server(answer) as server:
        yield server.url


async def _chats(url: str, n: int, limits: Limits, *, model: str = "m") -> tuple[list[float], float, ChatClient]:
    ep = Endpoint(name="m", api_url=url, model=model, limits=limits)
    async with ChatClient(ep) as client:
        t0 = time.monotonic()
        results = await asyncio.gather(*(client.chat([{"role": "user", "content": f"q{i}"}]) for i in range(n)))
        took = time.monotonic() - t0
    assert all(r.ok for r in results)
    return [r.latency for r in results], took, client


def test_no_concurrency_in_the_config_means_auto_up_to_the_ceiling() -> None:
    base = {"datasets": [{"path": "."}], "judge": {"name": "j", "api_url": "http://127.0.0.1:9/v1"},
            "run": {"output_dir": "out"}}
    cfg = config_from_dict({**base, "models": [{"name": "a", "api_url": "http://127.0.0.1:9/v1"},
                                               {"name": "b", "api_url": "http://127.0.0.1:9/v1", "concurrency": 8}]},
                           source="<test>")
    a, b = (m.endpoint.limits for m in cfg.models)
    assert (a.auto, a.concurrency) == (True, AUTO_MAX)
    assert (b.auto, b.concurrency) == (False, 8)


def test_the_gate_grows_while_latency_holds_and_shrinks_when_it_climbs() -> None:
    gate = ConcurrencyGate(AUTO_MAX, auto=True)
    assert gate.cap == AUTO_START
    for seq in range(200):  # a server with room: latency flat
        gate.on_success(seq, 0.05)
    assert gate.cap > 100
    grown = gate.size
    gate._issued = 1000
    for seq in range(1000, 1040):  # latency climbs: requests queue at the server
        gate.on_success(seq, 0.05 * (1 + (seq - 1000) / 4))
    assert gate.size < grown / 2 and gate.cuts >= 1


@pytest.mark.exclusive
async def test_a_one_slot_server_keeps_its_latency() -> None:
    lock = asyncio.Lock()

    async def one_slot() -> None:
        async with lock:  # like a local model server with one slot: the others wait in its queue
            await asyncio.sleep(SERVICE)

    async with _server(one_slot) as url:
        auto, took_auto, _ = await _chats(url, 150, Limits(concurrency=AUTO_MAX, auto=True))
        fixed, took_fixed, _ = await _chats(url, 150, Limits(concurrency=32))
    p50_auto, p50_fixed = statistics.median(auto), statistics.median(fixed)
    print(f"\none slot: p50 auto {1000 * p50_auto:.0f} ms vs fixed 32 {1000 * p50_fixed:.0f} ms; "
          f"wall {took_auto:.2f} vs {took_fixed:.2f} s")
    assert p50_auto < 0.4 * p50_fixed  # 32 queued requests each: ~32 x SERVICE
    assert took_auto < 1.3 * took_fixed  # and no slower in all: the server is the bottleneck either way


@pytest.mark.exclusive
async def test_a_server_with_many_slots_is_filled() -> None:
    # The server runs in its own process, as a provider does: in this process its CPU would share the
    # client's event loop, and the loop's own delays would read as the server queueing.
    with SimProcess(SimConfig.demo(latency=Latency("fixed", 0.05))) as sim:  # every request at once, 50 ms
        url = sim.url
        autos, fixed, caps = [], [], []
        for _ in range(3):  # alternated, best of each: a load spike on this shared box hits one rep, not the figure
            _, took, client = await _chats(url, 1200, Limits(concurrency=AUTO_MAX, auto=True), model="sim-base")
            autos.append(took)
            caps.append(client.limiter.gate.cap)
            fixed.append((await _chats(url, 1200, Limits(concurrency=128), model="sim-base"))[1])
    print(f"\nmany slots: auto {min(autos):.2f} s (caps {caps}) vs fixed 128 {min(fixed):.2f} s")
    assert max(caps) >= 64  # it grew from 8 to fill the server
    assert min(autos) < 1.5 * min(fixed)
