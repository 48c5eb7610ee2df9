"""Single-flight: a request whose key is already being sent is not sent a second time.

Two battles can need the byte-identical judge prompt at the same moment (two candidates gave the same
answer), and two configured models can share answers (``reuse_answers_of``). The first asker claims the
key and sends; later askers wait for it and then read its checkpointed record. If the first asker ends
without a record (its request failed, or it was cancelled), the next waiter claims the key and sends.

The event a waiter sleeps on is made only when a second asker comes: nearly every key is claimed
once, and an event per request was a measurable part of a run's CPU (benchmarks/README.md).
"""

from __future__ import annotations

import asyncio


class InFlight:
    """Keys being sent right now, each with the event its waiters sleep on (None: nobody waits yet)."""

    def __init__(self) -> None:
        self._events: dict[bytes, asyncio.Event | None] = {}

    def claim(self, key: bytes) -> asyncio.Event | None:
        """None: the caller now owns ``key`` and must :meth:`release` it. Otherwise the event to wait on
        (then look the record up again, and claim again if there is none)."""
        if key not in self._events:
            self._events[key] = None
            return None
        event = self._events[key]
        if event is None:
            event = self._events[key] = asyncio.Event()
        return event

    def release(self, key: bytes) -> None:
        event = self._events.pop(key)
        if event is not None:
            event.set()

    def __len__(self) -> int:
        return len(self._events)
