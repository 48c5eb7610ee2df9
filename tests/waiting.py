"""Waiting for something another process, thread or task does: poll a condition until it holds.

A test that needs "the child wrote X" or "the server saw N requests" waits for exactly that, not for a
guessed number of seconds: it goes on as soon as the condition holds, and when it never does it fails
saying what it waited for. These two functions are the only places the tests poll the wall clock.
"""

from __future__ import annotations

import contextlib
import inspect
import subprocess
import time
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["serves", "wait_until", "wait_until_async"]


def _timed_out(timeout: float, what: str) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.005) -> None:
    """Return once ``predicate()`` is true, checking every ``interval`` seconds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what)
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], object | Awaitable[object]], timeout: float, what: str,
                           interval: float = 0.005) -> None:
    """:func:`wait_until` for a task: the loop runs while it waits. ``predicate`` may be a coroutine
    function (say, one that makes a request each time it is asked)."""
    deadline = anyio.current_time() + timeout
    while True:
        got = predicate()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return
        if anyio.current_time() > deadline:
            raise _timed_out(timeout, what)
        await anyio.sleep(interval)


def serves(proc: subprocess.Popen[bytes], probe: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Wait until the server process ``proc`` answers ``probe()`` (which raises OSError until it does):
    True once it has, False if it exits first or stays silent for ``timeout`` seconds."""
    answered = False

    def up() -> bool:
        nonlocal answered
        with contextlib.suppress(OSError):
            probe()
            answered = True
        return answered or proc.poll() is not None

    with contextlib.suppress(AssertionError):
        wait_until(up, timeout, "a server to answer", interval)
    return answered
