"""Read timeouts for every request in flight with one timer, not one (or three) per request.

aiohttp's `sock_read` timeout re-arms a loop timer at the request's start, on every chunk received and
at the end of the body. Under uvloop each re-arm allocates a TimerHandle and a libuv timer and cancels
the previous one, which was a large part of the engine's CPU per request at high concurrency
(benchmarks/README.md, *Figures behind design choices*).

`ReadWatchdog` keeps the same promise, "no `timeout` seconds without receiving data", for all of a
client's attempts with one task that wakes every `tick` seconds (a tenth of the timeout, between
10 ms and 1 s) only while attempts are in flight. Per attempt it costs a small object in a set:

    watch = watchdog.start(now)                # before sending: headers are due by now + timeout
    try:
        async with session.post(...) as resp:
            watchdog.receiving(watch, resp.content, clock())   # headers in: now the body must progress
            raw = await resp.read()
    except asyncio.CancelledError:
        if not watchdog.absorb(watch):        # our timeout: carry on as a timed-out attempt
            raise                             # anybody else's cancellation propagates
        ...
    finally:
        watchdog.stop(watch)

When a watch expires the watchdog cancels the attempt's task, as aiohttp's own timeouts do, and
`absorb` takes that one cancellation back (`Task.uncancel`), so a cancellation from outside (the
caller's, a task group's) is never mistaken for a timeout. A timeout fires between `timeout` and
`timeout + tick` seconds after the last data, counting only time the loop was running: when the
watchdog wakes more than a tick late (the process got no CPU, was stopped, or the loop was held), the
lateness is added to every deadline and the answers that arrived meanwhile are read before anything
fires. Without that, a client frozen for a second timed out every attempt in flight on resuming,
answers already in its socket included, and paid for them again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import StreamReader

__all__ = ["ReadWatchdog", "Watch"]

MIN_TICK = 0.01
MAX_TICK = 1.0
TICKS_PER_TIMEOUT = 10


class Watch:
    """One attempt being watched."""

    __slots__ = ("absorbed", "body", "cancelling", "deadline", "fired", "seen", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.cancelling = task.cancelling()  # cancellations already pending before ours
        self.body: StreamReader | None = None
        self.seen = 0
        self.fired = False
        self.absorbed = False


class ReadWatchdog:
    """Cancels an attempt that receives nothing for `timeout` seconds (see the module docstring)."""

    __slots__ = ("_clock", "_task", "_watches", "expired", "tick", "timeout")

    def __init__(self, timeout: float, clock: Callable[[], float]) -> None:
        self.timeout = timeout
        self.tick = min(MAX_TICK, max(MIN_TICK, timeout / TICKS_PER_TIMEOUT))
        self._clock = clock
        self._watches: set[Watch] = set()
        self._task: asyncio.Task[None] | None = None
        self.expired = 0  # attempts cancelled for want of data

    def start(self, now: float) -> Watch:
        """Watch the current task's attempt, which starts at `now` (response headers due by now + timeout)."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("ReadWatchdog.start must be called from inside a task")
        watch = Watch(task, now + self.timeout)
        self._watches.add(watch)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return watch

    def receiving(self, watch: Watch, body: StreamReader, now: float) -> None:
        """The headers arrived at `now`; from here on the body must keep arriving."""
        watch.body = body
        watch.seen = body.total_bytes
        watch.deadline = now + self.timeout

    def absorb(self, watch: Watch) -> bool:
        """In an `except CancelledError`: True if the cancellation is this watchdog's timeout (and is now
        taken back), False if it came from elsewhere and must propagate."""
        if not watch.fired or watch.absorbed:
            return False
        watch.absorbed = True
        return watch.task.uncancel() <= watch.cancelling

    def stop(self, watch: Watch) -> None:
        """The attempt is over (however it ended). Idempotent."""
        self._watches.discard(watch)
        if watch.fired and not watch.absorbed:  # aiohttp swallowed our cancellation: take it back
            watch.absorbed = True
            watch.task.uncancel()

    def close(self) -> None:
        """Stop the watchdog task (the client is closing). Does not wait: a client closed by a
        cancellation must still get on to closing its session."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def _run(self) -> None:
        try:
            skipped = False
            while self._watches:
                due = self._clock() + self.tick
                await asyncio.sleep(self.tick)
                now = self._clock()
                late = now - due
                if late > self.tick:
                    # The loop did not run for `late` seconds (the process was starved of CPU or stopped, a
                    # GC pause, a callback holding the loop): the attempts' sockets were not read either,
                    # and an answer that arrived meanwhile sits unread. That time does not count against the
                    # server, and what arrived is read (one tick) before anything is timed out; firing now
                    # re-sent requests the server had already answered (and paid for).
                    for watch in self._watches:
                        watch.deadline += late
                    if not skipped:  # a loop late at every tick still times out (deadlines move by `late`)
                        skipped = True
                        continue
                skipped = False
                for watch in [w for w in self._watches if w.deadline <= now]:
                    body = watch.body
                    if body is not None and body.total_bytes != watch.seen:  # data came in: re-arm
                        watch.seen = body.total_bytes
                        watch.deadline = now + self.timeout
                        continue
                    watch.fired = True
                    self._watches.discard(watch)
                    self.expired += 1
                    watch.task.cancel()
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    def __repr__(self) -> str:
        return f"ReadWatchdog(timeout={self.timeout:g}s, watching={len(self._watches)}, expired={self.expired})"
