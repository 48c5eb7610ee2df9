"""Rate limits shared by many processes: a broker leases admissions in batches to each worker.

One :class:`LeaseBroker` (in a distributed run: a Ray actor) keeps the rate windows of every endpoint
for the whole cluster. A worker's :class:`LeaseClient` asks it for a *batch*: ``k`` request slots (and
their estimated tokens) usable during one short span ``[start, start + span]``. The worker spends them
locally with no further round trip, and reports what it really used with its next call, which refunds
unused slots and settles token estimates against what the server counted.

Why the cluster-wide window holds exactly: the broker records a batch at ``start`` in a
:class:`~arena_engine.windows.WindowLimit` whose window is the endpoint's window plus ``span`` (plus the
usual margin). The batch's sends all fall in ``[start, start + span]``, so the sends inside any real
window of length P come from batches recorded within a window of length P + span: at most the limit.
The cost is ``(span + LEASE_JITTER) / P`` of the throughput (0.6% for a minute's window).

Holds (a 429 with Retry-After) are shared too: a worker that is told to wait tells the broker, and
every worker learns it with its next batch. Concurrency is not leased (a round trip per request would
be too dear): the driver splits each endpoint's concurrency between the workers.

Time crosses processes as wall-clock seconds (``time.time()``); each worker converts to its monotonic
clock. Machines of one cluster agree within milliseconds (NTP), well inside the window margin.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from ..endpoint_config import Limits
from ..windows import Grant, WindowLimit

#: Longest span of one batch, and its largest fraction of the endpoint's window.
MAX_SPAN = 0.25
SPAN_FRACTION = 0.05
#: Added to the broker's windows on top of the span and WindowLimit's own margin: a send can leave a
#: busy worker's event loop some milliseconds after its slot was checked, and workers on other machines
#: reach the server along different paths. Smaller margins let sends through over the limit when runs
#: share a machine (benchmarks/README.md, *Figures behind design choices*); this one costs 0.17% of a
#: minute's window.
LEASE_JITTER = 0.1


def lease_span(limits: Limits) -> float:
    rw = limits.request_window()
    period = rw[1] if rw is not None else limits.window
    return min(MAX_SPAN, period * SPAN_FRACTION)


@dataclass(frozen=True)
class LeaseReply:
    """A batch: ``requests`` slots and ``tokens`` tokens, usable from ``start`` to ``start + span``
    (wall clock); ``hold_until`` is the endpoint's shared hold (wall clock, or -inf)."""

    lease_id: int
    start: float
    span: float
    requests: int
    tokens: float
    hold_until: float


class _EndpointBudget:
    __slots__ = ("grants", "hold_until", "requests", "span", "tokens")

    def __init__(self, limits: Limits) -> None:
        self.span = lease_span(limits)
        rw = limits.request_window()
        stretch = self.span + LEASE_JITTER
        self.requests = WindowLimit(rw[0], rw[1] + stretch) if rw is not None else None
        tw = limits.token_window()
        self.tokens = WindowLimit(tw[0], tw[1] + stretch) if tw is not None else None
        self.hold_until = -math.inf
        self.grants: dict[int, tuple[float, Grant | None, Grant | None]] = {}


class LeaseBroker:
    """The cluster's rate windows, one per endpoint name. Plain bookkeeping: call it from one thread (a
    Ray actor runs its methods one at a time)."""

    def __init__(self, limits: dict[str, Limits], *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._budgets = {name: _EndpointBudget(lim) for name, lim in limits.items()}
        self._next_id = 0
        self.leases = 0

    def lease(self, endpoint: str, requests: int, tokens: float,
              settle: list[tuple[int, int, float]] | None = None) -> LeaseReply:
        """Reserve up to ``requests`` slots and ``tokens`` tokens at the earliest time they fit.

        ``settle`` reports finished batches of this worker: (lease_id, slots used, tokens used)."""
        b = self._budgets[endpoint]
        now = self._clock()
        for lease_id, used, used_tokens in settle or ():
            self._settle(b, lease_id, used, used_tokens)
        t = b.hold_until if b.hold_until > now else now
        n = max(1, int(requests))
        if b.requests is not None:
            n = min(n, int(b.requests.limit))
            t = b.requests.earliest(n, t)
        tg = rg = None
        if b.tokens is not None:
            tokens = min(tokens, b.tokens.limit)
            t = b.tokens.earliest(tokens, t)
            tg = b.tokens.commit(tokens, t)
        if b.requests is not None:
            rg = b.requests.commit(n, t)
        self._next_id += 1
        self.leases += 1
        b.grants[self._next_id] = (t, rg, tg)
        if len(b.grants) > 4096:  # batches never reported (a worker died): forget the oldest
            for old in list(b.grants)[:1024]:
                del b.grants[old]
        return LeaseReply(self._next_id, t, b.span, n, tokens if b.tokens is not None else math.inf,
                          b.hold_until)

    def _settle(self, b: _EndpointBudget, lease_id: int, used: int, used_tokens: float) -> None:
        found = b.grants.pop(lease_id, None)
        if found is None:
            return
        _, rg, tg = found
        if rg is not None and b.requests is not None and used < rg.amount:
            b.requests.settle(rg, float(used))  # slots never sent go back to the window
        if tg is not None and b.tokens is not None:
            b.tokens.settle(tg, used_tokens)

    def settle(self, endpoint: str, settle: list[tuple[int, int, float]]) -> None:
        b = self._budgets[endpoint]
        for lease_id, used, used_tokens in settle:
            self._settle(b, lease_id, used, used_tokens)

    def hold(self, endpoint: str, until: float) -> None:
        """Nothing new is leased for ``endpoint`` before ``until`` (wall clock)."""
        b = self._budgets[endpoint]
        if until > b.hold_until:
            b.hold_until = until


Fetch = Callable[[str, int, float, list[tuple[int, int, float]]], Awaitable[LeaseReply]]
Notify = Callable[[str, float], None]


class _Batch:
    __slots__ = ("end", "lease_id", "left", "outstanding", "start", "tokens_left", "used", "used_tokens")

    def __init__(self, reply: LeaseReply, offset: float) -> None:
        self.lease_id = reply.lease_id
        self.start = reply.start - offset
        self.end = self.start + reply.span
        self.left = reply.requests
        self.tokens_left = reply.tokens
        self.used = 0
        self.used_tokens = 0.0
        self.outstanding = 0


class LeaseSlot:
    """One request's admission out of a batch; give it back with :meth:`LeaseClient.release`."""

    __slots__ = ("batch", "tokens")

    def __init__(self, batch: _Batch, tokens: float) -> None:
        self.batch = batch
        self.tokens = tokens

    @property
    def at(self) -> float:
        return self.batch.start

    @property
    def expires(self) -> float:
        return self.batch.end


class LeaseClient:
    """A worker's side of one endpoint's leases. ``fetch(endpoint, k, tokens, settle)`` asks the broker
    (a Ray actor call, or a direct call in tests); ``notify_hold(endpoint, until)`` forwards a hold.

    Create and use inside one event loop. ``take(tokens)`` hands out the next slot (fetching a batch
    sized to the current demand when the last one is spent or expired); the caller sleeps until
    ``slot.at`` and must not send after ``slot.expires``.
    """

    def __init__(self, endpoint: str, fetch: Fetch, *, notify_hold: Notify | None = None,
                 max_batch: int = 1 << 30, clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        self._fetch = fetch
        self._notify_hold = notify_hold
        self._clock = clock
        self._offset = time.time() - clock()  # wall = monotonic + offset
        self.max_batch = max(1, max_batch)
        self._batch: _Batch | None = None
        self._done: deque[_Batch] = deque()  # spent batches with slots still out
        self._settle: list[tuple[int, int, float]] = []
        self._lock = anyio.Lock()
        self._demand = 0
        self.hold_until = -math.inf  # monotonic; the latest hold the broker told us about
        self.fetches = 0

    async def take(self, tokens: float) -> LeaseSlot:
        self._demand += 1
        try:
            while True:
                b = self._batch
                now = self._clock()
                if b is not None and b.left > 0 and b.tokens_left >= tokens and now <= b.end:
                    b.left -= 1
                    b.tokens_left -= tokens
                    b.outstanding += 1
                    return LeaseSlot(b, tokens)
                async with self._lock:
                    if self._batch is b:  # nobody refilled it while we waited for the lock
                        await self._refill(tokens)
        finally:
            self._demand -= 1

    async def _refill(self, tokens: float) -> None:
        old = self._batch
        self._batch = None
        if old is not None:
            self._retire(old)
        k = min(self.max_batch, max(1, self._demand))
        settle, self._settle = self._settle, []
        reply = await self._fetch(self.endpoint, k, tokens * k, settle)
        self.fetches += 1
        if reply.hold_until > -math.inf:
            self.hold_until = max(self.hold_until, reply.hold_until - self._offset)
        self._batch = _Batch(reply, self._offset)

    def _retire(self, b: _Batch) -> None:
        if b.outstanding:
            self._done.append(b)
        else:
            self._settle.append((b.lease_id, b.used, b.used_tokens))

    def release(self, slot: LeaseSlot, *, sent: bool, used_tokens: float | None = None) -> None:
        b = slot.batch
        b.outstanding -= 1
        if sent:
            b.used += 1
            b.used_tokens += slot.tokens if used_tokens is None else used_tokens
        if b.outstanding == 0 and b is not self._batch and b in self._done:
            self._done.remove(b)
            self._settle.append((b.lease_id, b.used, b.used_tokens))

    def hold(self, until: float) -> None:
        """A 429 told this worker to wait until ``until`` (monotonic): tell the broker."""
        if self._notify_hold is not None:
            self._notify_hold(self.endpoint, until + self._offset)

    def pending_settlements(self) -> list[tuple[int, int, float]]:
        """Batches to report before the worker stops (the current one is closed first)."""
        if self._batch is not None:
            self._retire(self._batch)
            self._batch = None
        settle, self._settle = self._settle, []
        return settle


def batch_cap(limits: Limits, workers: int) -> int:
    """Largest batch one worker asks for: its share of what one span admits at the full rate."""
    rw = limits.request_window()
    if rw is None:
        return 1 << 30
    per_span = rw[0] * lease_span(limits) / rw[1]
    return max(1, math.floor(per_span / max(1, workers)))


__all__ = ["LeaseBroker", "LeaseClient", "LeaseReply", "LeaseSlot", "batch_cap", "lease_span"]
