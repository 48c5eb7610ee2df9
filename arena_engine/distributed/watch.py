"""How a Ray worker notices that its driver is gone: a heartbeat it awaits (the progress report), and on
the driver's machine the driver's pid. See the package's docstring for what happens then."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio

from ..errors import ArenaError, ConfigError
from .reaper import PROC, alive, start_time

log = logging.getLogger(__name__)

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


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray backend needs Ray: pip install 'arena-engine[ray]'") from None
    return ray


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
    ray = require_ray()
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
        if driver is not None and driver.node_id == require_ray().get_runtime_context().get_node_id():
            tg.start_soon(first, partial(_watch_pid, driver.pid))
    return reason[0]

