"""The concurrency gate: a FIFO semaphore whose size can shrink on 429 and grow back (AIMD), or follow
the endpoint's latency (`auto`), with a one-slot probe mode for an endpoint whose limits are unknown.

Plain asyncio futures (one per waiter, woken in order), no polling; `arena_engine.limits.EndpointLimiter`
takes a slot here before it looks at any rate window.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import suppress

from arena_engine.endpoint_config import AUTO_START
from arena_engine.errors import ConfigError

__all__ = ["ConcurrencyGate"]

#: Multiplicative decrease of the adaptive concurrency on a 429 (additive increase: +1 per window).
ADAPTIVE_BACKOFF = 0.5
#: Latency (a short moving average) may rise to this multiple of its long-run average before slots are cut.
LATENCY_TOLERANCE = 1.5
#: The moving averages' weights per answer: the short one follows ~10 answers, the long one ~500.
SHORT_WEIGHT = 0.1
LONG_WEIGHT = 0.002


class ConcurrencyGate:
    """A FIFO semaphore of size `limit`; with `adaptive`, the size follows AIMD between 1 and `limit`.

    `on_rate_limited(seq)` halves the size, but only for a request issued after the last cut (so a burst
    of 429s from one round of requests cuts once); `on_success()` adds 1/size, i.e. one slot per round.

    With `auto` (adaptive too), the size starts at AUTO_START and also follows latency, so a one-slot
    local server and a provider with thousands of slots both run near their best untuned: while the
    short moving average of latency stays within LATENCY_TOLERANCE of its long-run average, the size
    grows by one per answer until the first cut (doubling per round) and by one per round after it;
    when latency climbs past that (requests queue at the server), the size is cut in proportion, at
    most to half and once per round.
    """

    __slots__ = ("_cut_seq", "_issued", "_long", "_short", "_slow_start", "_waiters", "adaptive", "auto", "cap",
                 "cuts", "in_use", "max_limit", "parked", "probing", "size")

    def __init__(self, limit: int, *, adaptive: bool = False, auto: bool = False) -> None:
        if limit < 1:
            raise ConfigError(f"concurrency must be >= 1, not {limit!r}")
        self.max_limit = limit
        self.auto = auto
        self.adaptive = adaptive or auto
        self.size = float(min(limit, AUTO_START) if auto else limit)
        self.cap = int(self.size)
        self.in_use = 0
        self.cuts = 0  # times the size was cut (429/503 or latency)
        self._issued = 0  # sequence number of the next slot handed out
        self._cut_seq = 0
        self._short = self._long = 0.0  # moving averages of latency (0: no answer yet)
        self._slow_start = auto
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.probing = False  # one slot only, whatever the size (see `probe`)
        self.parked = False  # no slot at all: the probe's retry is due and goes first (see `park`)

    def _resize(self, size: float) -> None:
        self.size = size
        if self.probing:
            self.cap = 0 if self.parked else 1
        else:
            self.cap = int(size) if size >= 1.0 else 1  # the current number of slots

    def probe(self) -> None:
        """One slot until `end_probe`: the first request goes alone (to learn the server's limits)."""
        self.probing = True
        self._resize(self.size)

    def park(self) -> None:
        """The probe was told "not now" and will retry: hand its slot to nobody else meanwhile (call
        before releasing it); `take_parked` gives the retry its slot back ahead of the queue."""
        if self.probing:
            self.parked = True
            self._resize(self.size)

    def take_parked(self) -> int:
        self.parked = False
        self._resize(self.size)
        self.in_use += 1
        seq = self._issued
        self._issued = seq + 1
        return seq

    def end_probe(self) -> None:
        if self.probing:
            self.probing = self.parked = False
            self._resize(self.size)
            self._wake()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> int | None:
        """Take a free slot without waiting (none is free, or others queue first: None)."""
        if self.in_use >= self.cap or self._waiters:
            return None
        self.in_use += 1
        seq = self._issued
        self._issued = seq + 1
        return seq

    async def acquire(self) -> int:
        """Wait for a slot (FIFO); returns the slot's sequence number for `on_rate_limited`."""
        seq = self.try_acquire()
        if seq is not None:
            return seq
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed to us just before the cancellation
            else:
                with suppress(ValueError):
                    self._waiters.remove(fut)
            raise
        seq = self._issued
        self._issued = seq + 1
        return seq

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        cap = self.cap
        while waiters and self.in_use < cap:
            fut = waiters.popleft()
            if not fut.done():
                self.in_use += 1
                fut.set_result(None)

    def on_rate_limited(self, seq: int) -> bool:
        """A request holding slot `seq` got a 429 (or a 503). Returns True if the size was cut."""
        return self._cut(seq, ADAPTIVE_BACKOFF)

    def _cut(self, seq: int, factor: float) -> bool:
        if not self.adaptive or seq < self._cut_seq:
            return False  # a request of a round already cut for
        self._resize(max(1.0, self.size * factor))
        self._cut_seq = self._issued
        self._slow_start = False
        self.cuts += 1
        return True

    def on_success(self, seq: int = -1, latency: float | None = None) -> None:
        """The request holding slot `seq` was answered after `latency` seconds."""
        if not self.adaptive:
            return
        if self.auto and latency is not None and latency > 0:
            if self._short == 0.0:
                self._short = self._long = latency
            else:
                self._short += (latency - self._short) * SHORT_WEIGHT
                self._long += (latency - self._long) * LONG_WEIGHT
            ratio = LATENCY_TOLERANCE * self._long / self._short
            if ratio < 1.0:  # requests queue at the server: fewer slots
                if self._cut(seq, max(ADAPTIVE_BACKOFF, ratio)):
                    self._long = max(self._long, self._short / 2)  # a long-run average left far behind catches up
                return
        if self.size < self.max_limit:
            step = 1.0 if self._slow_start else 1.0 / self.size
            self._resize(min(float(self.max_limit), self.size + step))
            self._wake()

    def __repr__(self) -> str:
        return (
            f"ConcurrencyGate(in_use={self.in_use}, cap={self.cap}/{self.max_limit}, waiting={self.waiting})"
        )
