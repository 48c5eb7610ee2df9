"""A client whose process does not run for longer than its read timeout (no CPU under load, a GC pause,
SIGSTOP) must not time out an answer that arrived meanwhile: the server has answered it, and sending it
again pays for it twice. The simulator runs in its own process, so it answers while the client is frozen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from arena_engine.client import ChatClient, Endpoint, RetryPolicy, Timeouts
from arena_engine.sim import Latency, SimConfig, SimModel
from arena_engine.sim.process import SimProcess
from tests.fake_time import settle
from tests.waiting import wait_until_async

pytestmark = pytest.mark.anyio

READ = 0.3  # the read timeout; the freeze is several of them


def freeze(seconds: float) -> None:
    """Hold the event loop for ``seconds`` of wall time: to the client's code and clock it is a process
    that did not run (no CPU, a GC pause, SIGSTOP), while the simulator, in its own process, goes on.
    This is the scenario itself, so it takes real time: a fake clock would not leave an answer unread in
    the socket when the watchdog wakes."""
    time.sleep(seconds)


@pytest.fixture(params=[("asyncio", {}), ("asyncio", {"use_uvloop": True})], ids=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    if request.param[1]:
        pytest.importorskip("uvloop")
    return request.param


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with SimProcess(SimConfig(models=(SimModel("m"),), latency=Latency("fixed", 0.0))) as proc:
        yield proc


async def test_an_answer_that_arrives_while_the_client_is_frozen_is_taken_not_paid_twice(sim: SimProcess) -> None:
    policy = RetryPolicy(max_attempts=3, max_time=20.0, base_delay=0.01, max_delay=0.02)
    ep = Endpoint("sim", sim.url, "m", retry=policy, timeouts=Timeouts(connect=2.0, read=READ, total=10.0))
    sim.reset_stats()
    async with ChatClient(ep) as client:
        assert (await client.chat([{"role": "user", "content": "warm the connection"}])).ok
        task = asyncio.ensure_future(client.chat([{"role": "user", "content": "answered during the freeze"}]))
        # its request is on the kept-alive connection now
        await wait_until_async(lambda: client.stats.in_flight > 0, 10, "the request to be sent", interval=0)
        freeze(4 * READ)  # the loop does not run: the answer arrives and waits in the socket
        r = await task
    stats = sim.stats()
    assert r.ok and r.attempts == 1, r
    assert stats["requests"] == 2 and stats["duplicate_200"] == 0, stats


async def test_a_hang_still_times_out_after_a_freeze(sim: SimProcess) -> None:
    # the lateness moves the deadlines, it does not switch the timeout off: silence after the freeze ends it
    from arena_engine.read_timeout import ReadWatchdog

    dog = ReadWatchdog(READ, time.monotonic)

    async def attempt() -> str:
        watch = dog.start(time.monotonic())
        try:
            await asyncio.Event().wait()  # a hang: nothing ever comes
        except asyncio.CancelledError:
            if dog.absorb(watch):
                return "timed out"
            raise
        finally:
            dog.stop(watch)
        return "not timed out"

    t0 = time.monotonic()
    task = asyncio.ensure_future(attempt())
    await settle()  # the attempt waits and the watchdog ticks
    freeze(4 * READ)
    assert await asyncio.wait_for(task, 5.0) == "timed out"
    waited = time.monotonic() - t0
    # before: it fired on waking, 4 x READ in; now it waits for READ of running time (minus the tick)
    assert 4 * READ + READ / 2 <= waited < 4 * READ + READ + 1.0, waited
    dog.close()
