"""Bounded concurrency over a lazily read stream, for tests and benchmarks that drive a ChatClient
directly (the engine itself runs worker pools in pipeline.py): at most `limit` calls at once, results in
completion order through a bounded buffer."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import anyio

from arena_engine.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")


class BoundedResults(AsyncIterator[R]):
    """The results of `map_bounded`, in completion order, through a bounded buffer.

    A deque and one future per wait, not an anyio memory stream: a stream's `receive()` yields to the
    loop once before it even looks (a whole extra task step per result when the reader keeps up) and
    allocates an Event per wait; at concurrency 256 the reader waits for nearly every result."""

    __slots__ = ("_getter", "_items", "_putters", "_senders", "size")

    def __init__(self, size: int, senders: int) -> None:
        self.size = size
        self._items: deque[R] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self._senders = senders  # workers that may still put

    @property
    def buffered(self) -> int:
        """Results waiting to be read."""
        return len(self._items)

    @property
    def blocked_workers(self) -> int:
        """Workers waiting for room in the buffer (the reader is the bottleneck)."""
        return len(self._putters)

    def __aiter__(self) -> BoundedResults[R]:
        return self

    async def __anext__(self) -> R:
        items = self._items
        while not items:
            if self._senders == 0:
                raise StopAsyncIteration
            getter = self._getter = asyncio.get_running_loop().create_future()
            try:
                await getter
            finally:
                self._getter = None
        putters = self._putters
        while putters:  # room again: let the first blocked worker in
            putter = putters.popleft()
            if not putter.done():
                putter.set_result(None)
                break
        return items.popleft()

    def _wake_reader(self) -> None:
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def _try_put(self, item: R) -> bool:
        """Buffer `item` if there is room (the common case: no extra loop pass); False if full."""
        if len(self._items) >= self.size:
            return False
        self._items.append(item)
        self._wake_reader()
        return True

    async def _put(self, item: R) -> None:
        """Buffer `item`, waiting for room."""
        while not self._try_put(item):
            putter = asyncio.get_running_loop().create_future()
            self._putters.append(putter)
            try:
                await putter
            except asyncio.CancelledError:
                with suppress(ValueError):
                    self._putters.remove(putter)
                raise

    def _sender_done(self) -> None:
        self._senders -= 1
        if self._senders == 0:
            self._wake_reader()


_END = object()


@asynccontextmanager
async def map_bounded(
    items: Iterable[T] | AsyncIterable[T],
    fn: Callable[[T], Awaitable[R]],
    *,
    limit: int,
    buffer: int | None = None,
) -> AsyncIterator[BoundedResults[R]]:
    """Run `fn` over `items` with at most `limit` calls at once; results arrive in completion order.

    `items` is read lazily (one item per free worker), results wait in a buffer of `buffer` (default
    `limit`) entries, so memory stays bounded however long the input is. Use as::

        async with map_bounded(queries, ask, limit=64) as results:
            async for result in results:
                ...

    Leaving the block early cancels the remaining work. An exception in `fn` cancels the rest and
    propagates out of the block (in an ExceptionGroup, as anyio task groups do).
    """
    if limit < 1:
        raise ConfigError(f"limit must be >= 1, not {limit!r}")
    if buffer is not None and buffer < 1:
        raise ConfigError(f"buffer must be >= 1, not {buffer!r}")
    results: BoundedResults[R] = BoundedResults(limit if buffer is None else buffer, limit)

    sync_source: Iterator[T] | None = None
    async_source: AsyncIterator[T] | None = None
    if isinstance(items, AsyncIterable):
        async_source = aiter(items)
    else:
        sync_source = iter(items)  # read inline by the workers: no coroutine per item
    lock = anyio.Lock()

    async def next_async() -> Any:
        assert async_source is not None
        async with lock:  # an async generator cannot be advanced by two workers at once
            return await anext(async_source, _END)

    async def worker() -> None:
        try:
            while True:
                item = next(sync_source, _END) if sync_source is not None else await next_async()
                if item is _END:
                    return
                result = await fn(item)  # type: ignore[arg-type]  # not _END here
                if not results._try_put(result):
                    await results._put(result)
        finally:
            results._sender_done()

    async with anyio.create_task_group() as tg:
        for _ in range(limit):
            tg.start_soon(worker)
        try:
            yield results
        finally:
            tg.cancel_scope.cancel()
