"""Single-flight: a request whose key is already being sent is not sent a second time.

Two battles can need the byte-identical judge prompt at the same moment (two candidates gave the same
answer), and two configured models can share answers (``reuse_answers_of``). The first asker claims the
key and sends; later askers wait for it and then read its checkpointed record. If the first asker ends
without a record (its request failed, or it was cancelled), the next waiter claims the key and sends.
"""

from __future__ import annotations

import anyio


class InFlight:
    """Keys being sent right now, each with the event its waiters sleep on."""

    def __init__(self) -> None:
        self._events: dict[bytes, anyio.Event] = {}

    def claim(self, key: bytes) -> anyio.Event | None:
        """None: the caller now owns ``key`` and must :meth:`release` it. Otherwise the event to wait on
        (then look the record up again, and claim again if there is none)."""
        event = self._events.get(key)
        if event is None:
            self._events[key] = anyio.Event()
        return event

    def release(self, key: bytes) -> None:
        self._events.pop(key).set()

    def __len__(self) -> int:
        return len(self._events)
