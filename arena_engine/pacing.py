"""Pacing of the requests a window holds back: the tick they are sent on, and one sleep until then.

A request a window admits later than now is sent at its due time, or on the next tick of a shared grid
(see `ADMISSION_TICK`); requests due on the same tick share one loop timer (`Wakeups`), so a binding
limit costs at most one timer per request, and a fraction of one when requests fall due faster than
one per tick.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

from arena_engine.windows import WindowLimit

__all__ = ["ADMISSION_TICK", "Wakeups", "send_time", "tick_of"]

#: A request that must wait for a window is sent on the next multiple of this tick (of the request window's
#: length divided into equal ticks, so the window's own pacing stays on the grid) when requests fall due
#: closer together than a tick and the request waits a tick or more anyway: those due in the same tick
#: share one timer and wake in one pass of the event loop. At 100/s one wake-up then serves two
#: requests, at 1,000/s twenty. It costs at most one tick of waiting, only to requests queued behind a
#: window, and no throughput: pacing goes on from the time each request was due, the window log
#: records the time it is really sent, and a request that would wait less than a tick (its slot is
#: needed back soon) goes when it is due.
ADMISSION_TICK = 0.02


def tick_of(window: WindowLimit | None) -> float:
    """The grid of shared wake-ups (seconds; 0 without a window): the window's length in equal ticks."""
    return window.window / math.ceil(window.window / ADMISSION_TICK) if window is not None else 0.0


def send_time(due: float, now: float, requests: WindowLimit | None, tokens: WindowLimit | None,
              tick: float) -> float:
    """When a request the windows admit from `due` is sent: with the requests already waiting for a
    later tick; on the next tick when requests fall due closer together than a tick and this one waits
    a tick or more anyway (a queue of waiting requests: their slots are not what bounds the rate, so
    the rate is the same); else at `due`."""
    window = requests or tokens
    if window is None:
        return due
    booked, paced = window.last_at, window.paced_at
    if tokens is not None and tokens is not window:
        booked = max(booked, tokens.last_at)
        paced = max(paced, tokens.paced_at)
    if due <= booked:
        return booked  # the log stays in time order; this request joins that tick's wake-up
    if due - now >= tick and due - paced < tick:
        # a due time a hair past a tick (float noise: a window's length added to a tick) is that
        # tick: up to 1e-6 of a tick (20 ns) early, far inside the windows' safety margin
        return math.ceil(due / tick - 1e-6) * tick
    return due


class Wakeups:
    """Sleeps until a request's send time. By default waits for a tick (a time later than the request's
    own due time) share one loop timer; a given `sleep` (a test's fake time) is called once per wait."""

    __slots__ = ("_loop", "_waiters", "count", "shared", "sleep")

    def __init__(self, sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.shared = sleep is None
        self.sleep = sleep or asyncio.sleep
        self._waiters: dict[float, list[asyncio.Future[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.count = 0  # wake-up timers set

    async def until(self, t: float, now: float, due: float) -> None:
        """Sleep until clock time `t`. Waits for a tick (`t` later than the request's `due`) share one
        loop timer; a wait for the request's own due time sleeps on its own."""
        if not self.shared:
            self.count += 1
            await self.sleep(t - now)
            return
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # used from a new loop: forget the old loop's timers
            self._loop = loop
            self._waiters = {}
        waiters = self._waiters.get(t)
        if waiters is None:
            self.count += 1
            if t == due:
                await asyncio.sleep(t - now)
                return
            waiters = self._waiters[t] = []
            loop.call_later(t - now, self._wake, t)
        fut: asyncio.Future[None] = loop.create_future()
        waiters.append(fut)
        await fut

    def _wake(self, t: float) -> None:
        for fut in self._waiters.pop(t, ()):
            if not fut.done():
                fut.set_result(None)
