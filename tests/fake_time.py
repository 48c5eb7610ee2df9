"""Time that passes only when a test says so, for code that takes a clock and a sleep, or runs on a loop.

- :class:`FakeTime`: a clock and a ``sleep`` to hand to code under test (``EndpointLimiter(clock=...,
  sleep=...)``, ``SimServer(clock=...)``); its sleeps return only when the test calls :meth:`advance`.
- :func:`step` lets every other ready task run once; :func:`settle` lets the loop run until nothing is
  left to do (bar timers and I/O).
- :func:`run_virtual`: ``anyio.run`` on a loop whose clock jumps to the next timer whenever nothing is
  ready, so code that waits on the loop's clock (``anyio.sleep``, ``move_on_after``) runs its seconds
  in no time, in the same order. For code waiting on timers only, not on I/O or threads.

These are the only places the tests yield to the loop or fake a sleep.
"""

from __future__ import annotations

import asyncio
import heapq
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

__all__ = ["FakeTime", "VirtualClockLoop", "run_virtual", "settle", "step"]

T = TypeVar("T")

#: Loop iterations :func:`settle` runs: enough for the chains of wake-ups the tests set off.
SETTLE_STEPS = 20


async def step() -> None:
    """Let every other task that is ready run once (one pass of the loop)."""
    await asyncio.sleep(0)


async def settle() -> None:
    """Let the loop run until the tasks have done all they can without time passing."""
    for _ in range(SETTLE_STEPS):
        await step()


class FakeTime:
    """A clock plus a `sleep` that returns only when `advance` moves time past its deadline."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._n = 0
        self.sleeps = 0

    def clock(self) -> float:
        return self.now

    @property
    def sleeping(self) -> int:
        """Sleeps not yet over."""
        return sum(not fut.done() for _, _, fut in self._timers)

    async def sleep(self, delay: float) -> None:
        self.sleeps += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._n += 1
        heapq.heappush(self._timers, (self.now + delay, self._n, fut))
        await fut

    async def advance(self, dt: float) -> None:
        """Move time on by ``dt``, waking each sleep that ends on the way (at its own time) and letting
        the loop settle after each."""
        target = self.now + dt
        while self._timers and self._timers[0][0] <= target:
            when, _, fut = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not fut.done():
                fut.set_result(None)
            await settle()
        self.now = target
        await settle()


class _JumpingSelector(selectors.BaseSelector):
    """The loop's selector: when nothing is ready and the loop would wait for its next timer, the
    clock jumps to that timer instead."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        self._loop = loop
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:  # no timer at all: only I/O can wake the loop
            return self._real.select(None)
        self._loop.now += timeout
        return []

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual and moves only to the next due timer (see the module)."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now


def run_virtual(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``anyio.run(func, *args)`` on a :class:`VirtualClockLoop`; ``anyio.current_time()`` is its clock."""
    return anyio.run(func, *args, backend="asyncio", backend_options={"loop_factory": VirtualClockLoop})
