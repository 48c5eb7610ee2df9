"""Per-endpoint admission control: a concurrency cap, request- and token-rate windows, hold-backs.

Layers, bottom up (the bookkeeping is plain sync code; only `EndpointLimiter.acquire` awaits):

    WindowLimit       at most `limit` units in ANY window of `period` seconds, paced evenly (GCRA)
    ConcurrencyGate   a FIFO semaphore whose size can shrink on 429 and grow back (AIMD)
    EndpointLimiter   gate -> hold-back deadline -> request window -> token window; one wait per request

Why not aiolimiter: its bucket starts empty (a full extra burst passes at start: 1,182 req/s for a
1,000/s limit) and its waiters poll (57 wake-ups per acquisition under uvloop when binding). Here a
request *reserves* its admission time with O(1) sync bookkeeping and then sleeps exactly once until
that time; requests due within the same `ADMISSION_TICK` share one timer, so a binding limit costs at
most one timer per request, and a fraction of one when requests fall due faster than one per tick.

The window guarantee is exact, not average: each `WindowLimit` keeps a log of the admissions still
inside the window and never admits a unit that would push the sum over `limit` in any window of
`period` (+ a small safety margin for clock jitter between us and the server). On top of that, pacing
(GCRA with a burst tolerance of one second's worth, at most 2% of the window) spreads admissions evenly instead of firing the whole
minute's budget at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, Protocol

from arena_engine.endpoint_config import AUTO_START, DEFAULT_CONCURRENCY, MINUTE, Limits
from arena_engine.errors import ConfigError


class LeaseSlot(Protocol):
    """One request's admission out of a shared (cluster-wide) budget: when it may go, and until when."""

    @property
    def at(self) -> float: ...

    @property
    def expires(self) -> float: ...


class LeaseClient(Protocol):
    """Admission from a budget shared with other processes (`leases.LeaseClient` implements it): the
    limiter asks it for a slot per request instead of counting its own windows."""

    hold_until: float

    async def take(self, tokens: float) -> LeaseSlot: ...

    def release(self, slot: Any, *, sent: bool, used_tokens: float | None = None) -> None: ...  # a slot take gave

    def hold(self, until: float) -> None: ...

__all__ = [
    "ADMISSION_TICK",
    "DEFAULT_CONCURRENCY",
    "ConcurrencyGate",
    "EndpointLimiter",
    "Grant",
    "Limits",
    "Ticket",
    "WindowLimit",
]

#: Added to every window (1% of it, within 20-100 ms) so that jitter between the reserved time and the
#: send (and the server's clock) cannot put `limit + 1` sends into one window. A request that wakes
#: later than this margin after its reserved time does not send: it queues again.
MIN_WINDOW_MARGIN = 0.02
MAX_WINDOW_MARGIN = 0.1
WINDOW_MARGIN_FRACTION = 0.01
#: Time slices of a window log: bounds its memory whatever the limit.
WINDOW_BUCKETS = 100
#: Largest default burst, as a fraction of the window. Under steady demand the burst is spent at the
#: start of every window and the window log then stalls for as long at its end, so a window straddling
#: the stall holds about (1 - fraction) of the limit: 2% keeps every window >= 0.95 of the limit.
MAX_BURST_FRACTION = 0.02
#: A request that must wait for a window is sent on the next multiple of this tick (of the request window's
#: length divided into equal ticks, so the window's own pacing stays on the grid) when requests fall due
#: closer together than a tick and the request waits a tick or more anyway: those due in the same tick
#: share one timer and wake in one pass of the event loop. At 100/s one wake-up then serves two
#: requests, at 1,000/s twenty. It costs at most one tick of waiting, only to requests queued behind a
#: window, and no throughput: pacing goes on from the time each request was due, the window log
#: records the time it is really sent, and a request that would wait less than a tick (its slot is
#: needed back soon) goes when it is due.
ADMISSION_TICK = 0.02
#: Multiplicative decrease of the adaptive concurrency on a 429 (additive increase: +1 per window).
ADAPTIVE_BACKOFF = 0.5
#: Latency (a short moving average) may rise to this multiple of its long-run average before slots are cut.
LATENCY_TOLERANCE = 1.5
#: The moving averages' weights per answer: the short one follows ~10 answers, the long one ~500.
SHORT_WEIGHT = 0.1
LONG_WEIGHT = 0.002
#: Burst of a window learned from a server's `x-ratelimit-limit-*` header, in seconds of its rate: a
#: quarter of a second keeps every second within 1.25x the per-second share (a configured window keeps
#: one second's worth: its limit was chosen by the user, a learned one is the server's hard wall).
LEARNED_BURST_SECONDS = 0.25
#: `x-ratelimit-remaining-*` at or below this fraction of the limit (at least 1 unit) counts as "about
#: to run out": the endpoint is held until the server has refilled past it (see `EndpointLimiter.observe`).
LOW_WATER_FRACTION = 0.01
#: Longest the probe (the first request of an endpoint without a configured rpm) goes alone: a server
#: that is slow to answer, or hangs, must not hold the whole endpoint back for its read timeout.
PROBE_TIMEOUT = 2.0

Clock = Callable[[], float]


class _Bucket:
    """Admissions within one `window / WINDOW_BUCKETS` slice of time, expiring together with the latest."""

    __slots__ = ("amount", "at", "live", "start")

    def __init__(self, at: float, amount: float) -> None:
        self.start = at  # first admission in the bucket
        self.at = at  # latest admission in the bucket: the whole bucket leaves the window with it
        self.amount = amount
        self.live = True  # still in the window log


class Grant:
    """One admission recorded in a `WindowLimit`: `amount` units at time `at`."""

    __slots__ = ("_bucket", "amount", "at")

    def __init__(self, at: float, amount: float, bucket: _Bucket) -> None:
        self.at = at
        self.amount = amount
        self._bucket = bucket

    def __repr__(self) -> str:
        return f"Grant(at={self.at:.6f}, amount={self.amount:g})"


class WindowLimit:
    """At most `limit` units admitted in any window of `period` seconds; admissions paced evenly.

    Pure bookkeeping: `reserve(amount, now)` returns the `Grant` whose `at` is the earliest time the
    amount may be sent (>= now); the caller must send no earlier than that. Reservations are made in
    time order (each `at` >= the previous one), which keeps every operation O(1) amortised. The log
    holds at most ~`WINDOW_BUCKETS` buckets whatever the limit: admissions close in time share a
    bucket that leaves the window when its *latest* admission does (never early: the guarantee stays
    exact; at most 1/WINDOW_BUCKETS of the window is lost when binding).
    `settle(grant, actual)` corrects an estimate (tokens) once the real amount is known; `settle(grant, 0)`
    refunds a grant that was never used.
    """

    __slots__ = (
        "_bucket_width",
        "_interval",
        "_log",
        "_tat",
        "_tolerance",
        "_total",
        "last_at",
        "limit",
        "margin",
        "paced_at",
        "period",
        "window",
    )

    def __init__(self, limit: float, period: float = MINUTE, *, burst: float | None = None) -> None:
        if not (limit > 0 and math.isfinite(limit)):
            raise ConfigError(f"rate limit must be a positive number, not {limit!r}")
        if not (period > 0 and math.isfinite(period)):
            raise ConfigError(f"rate period must be a positive number of seconds, not {period!r}")
        self.limit = float(limit)
        self.period = float(period)
        self.margin = min(max(MIN_WINDOW_MARGIN, period * WINDOW_MARGIN_FRACTION), MAX_WINDOW_MARGIN)
        self.window = period + self.margin
        self._interval = self.window / self.limit  # seconds per unit at the sustained rate
        if burst is None:  # one second's worth, at most 2% of the window
            burst = self.limit * min(1.0 / period, MAX_BURST_FRACTION)
        burst = min(max(burst, 1.0), self.limit)
        self._tolerance = (burst - 1.0) * self._interval
        self._tat = -math.inf  # GCRA theoretical arrival time
        self.paced_at = -math.inf  # when the latest reservation fell due (`last_at` may be a later tick)
        # the latest admission time recorded: later ones must not be earlier (the log stays in time order)
        self.last_at = -math.inf
        self._bucket_width = self.window / WINDOW_BUCKETS
        self._log: deque[_Bucket] = deque()
        self._total = 0.0  # sum of amounts in the log

    def earliest(self, amount: float, now: float) -> float:
        """The earliest time >= now at which `amount` fits. Drops entries that leave the window by then."""
        limit = self.limit
        if amount > limit:
            amount = limit
        t = now
        if self._tat - self._tolerance > t:
            t = self._tat - self._tolerance
        if self.paced_at > t:
            t = self.paced_at
        log = self._log
        window = self.window
        while log and (log[0].at <= t - window or self._total + amount > limit):
            b = log.popleft()
            b.live = False
            self._total -= b.amount
            if b.at + window > t:
                t = b.at + window
        if not log:
            self._total = 0.0
        return t

    def admits_now(self, amount: float, now: float) -> bool:
        """Whether `earliest(amount, now)` would be `now`, without its side effects: only entries that have
        left the window by `now` are dropped (`earliest` also drops entries still in the window, on the
        promise that the caller commits at the later time it returns)."""
        if amount > self.limit:
            amount = self.limit
        if self._tat - self._tolerance > now or self.paced_at > now or self.last_at > now:
            return False
        self._expire(now)
        return self._total + amount <= self.limit

    def _expire(self, now: float) -> None:
        """Drop the entries that have left the window by `now` (safe: every later admission is at >= now)."""
        log = self._log
        horizon = now - self.window
        while log and log[0].at <= horizon:
            b = log.popleft()
            b.live = False
            self._total -= b.amount
        if not log:
            self._total = 0.0

    def commit(self, amount: float, at: float, paced: float | None = None) -> Grant:
        """Record `amount` admitted at `at`, which must be >= `earliest(amount, ...)` just computed and >=
        `last_at`. `paced` is that earliest time when the caller sends later than it (a shared wake-up
        tick): the pacing continues from it, so waiting for the tick costs no throughput."""
        if paced is None:
            paced = at
        if amount > self.limit:
            amount = self.limit
        log = self._log
        if log and at - log[-1].start < self._bucket_width:
            b = log[-1]
            b.at = at
            b.amount += amount
        else:
            b = _Bucket(at, amount)
            log.append(b)
        self._total += amount
        self.paced_at = paced
        self.last_at = at
        self._tat = (self._tat if self._tat > paced else paced) + amount * self._interval
        return Grant(at, amount, b)

    def restart_at(self, t: float) -> None:
        """Pace from `t` with no burst: after a hold (a 429) the first admission goes at `t` and the
        next ones one interval apart, not a burst's worth at once."""
        tat = t + self._tolerance
        if tat > self._tat:
            self._tat = tat

    def reserve(self, amount: float, now: float) -> Grant:
        """`earliest` then `commit`: reserve `amount` at the first time it fits."""
        return self.commit(amount, self.earliest(amount, now))

    def take_late(self, amount: float, now: float) -> Grant | None:
        """Admit `amount` at `now` for a request that missed its reserved slot (and refunded it), if every
        window containing `now` keeps room: all that is recorded after `now - window` plus `amount` fits.
        Otherwise None (the request must reserve a new slot). Lets a stalled process catch up."""
        amount = min(amount, self.limit)
        self._expire(now)
        log = self._log
        if self._total + amount > self.limit:
            return None
        if now >= self.paced_at and now >= self.last_at:
            return self.commit(amount, now)
        # slots after `now` are already reserved: count this one with the latest bucket (it then leaves
        # the window later than it needs to, never earlier)
        b = log[-1]
        b.amount += amount
        self._total += amount
        self._tat += amount * self._interval
        return Grant(now, amount, b)

    def settle(self, grant: Grant, actual: float) -> None:
        """Replace the grant's amount by `actual` (e.g. the tokens the server reported; 0 to refund)."""
        actual = min(max(actual, 0.0), self.limit)
        delta = actual - grant.amount
        if delta == 0:
            return
        self._tat += delta * self._interval
        bucket = grant._bucket
        if bucket.live:
            bucket.amount += delta
            self._total += delta
        grant.amount = actual

    def unlog(self, grant: Grant) -> None:
        """Take an unsent grant out of the window log but keep its place in the pacing: a request moved
        behind a hold goes to the end of the queue, so the queue behind it is not pulled forward (that
        would put two sends on one paced slot when the hold ends)."""
        bucket = grant._bucket
        if bucket.live:
            bucket.amount -= grant.amount
            self._total -= grant.amount
        grant.amount = 0.0

    @property
    def in_window(self) -> float:
        """Units recorded in the current window log (for inspection)."""
        return self._total

    def __repr__(self) -> str:
        return (
            f"WindowLimit(limit={self.limit:g}, period={self.period:g}s, in_window={self._total:g}, "
            f"next_free={max(self.paced_at, self._tat - self._tolerance):.3f})"
        )


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


class Ticket:
    """What `EndpointLimiter.acquire` hands out; give it back with `EndpointLimiter.release`."""

    __slots__ = ("requests", "sent", "seq", "slot", "tokens")

    def __init__(self, seq: int, requests: Grant | None, tokens: Grant | None,
                 slot: LeaseSlot | None = None) -> None:
        self.seq = seq
        self.requests = requests
        self.tokens = tokens
        self.slot = slot
        self.sent = False


class EndpointLimiter:
    """Admission for one endpoint: concurrency slot, then hold-back deadline, then RPM and TPM windows.

    `acquire(tokens)` waits for a concurrency slot, reserves the request in both rate windows at the same
    time (so the request is recorded in each window at the moment it is actually sent) and sleeps once
    until then. `hold(until)` stops every new request until `until` (a 429 with Retry-After); requests
    already waiting for their reserved time re-check it when they wake. Create it inside the running loop.

    With a `lease` (a distributed run), the request and token windows live in the cluster's broker:
    admissions come out of leased batches instead of local windows, and holds are shared.

    With `learn`, the server's own quota paces the endpoint where the config gives no limit: the first
    request goes alone (a probe) until an answer says what the server allows; `observe` then installs a
    window of the advertised `x-ratelimit-limit-*` per minute (`learned`), and holds the endpoint when
    `x-ratelimit-remaining-*` is about to run out. Learned windows are always local to this limiter,
    also with a lease (the broker keeps only the configured limits): each worker of a distributed run
    paces itself to the whole learned limit.
    """

    __slots__ = (
        "_clock",
        "_probe_timer",
        "_shared_timers",
        "_slack",
        "_sleep",
        "_timer_loop",
        "_waiters",
        "blocked_until",
        "gate",
        "holds",
        "late_wakeups",
        "learn",
        "learned",
        "lease",
        "limits",
        "requests",
        "tick",
        "timers",
        "tokens",
    )

    def __init__(
        self,
        limits: Limits,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        lease: LeaseClient | None = None,
        learn: bool = False,
    ) -> None:
        self.limits = limits
        self.lease = lease
        self.learn = learn
        self.learned: dict[str, float] = {}  # kind ("requests"/"tokens") -> limit per minute learned
        self._clock: Clock = clock or time.monotonic
        # by default requests due at the same tick share one loop timer; a given `sleep` (a test's fake
        # time) is called once per waiting request instead
        self._shared_timers = sleep is None
        self._sleep = sleep or asyncio.sleep
        self._waiters: dict[float, list[asyncio.Future[None]]] = {}
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self.timers = 0  # wake-up timers set for requests held back by a window or a hold
        self.gate = ConcurrencyGate(limits.concurrency, adaptive=limits.adaptive, auto=limits.auto)
        rw = limits.request_window() if lease is None else None
        tw = limits.token_window() if lease is None else None
        self.requests = WindowLimit(*rw) if rw is not None else None
        self.tokens = WindowLimit(*tw) if tw is not None else None
        self.blocked_until = -math.inf
        self.holds = 0
        self.late_wakeups = 0
        self._regrid()
        self._probe_timer: asyncio.TimerHandle | None = None
        if learn and limits.rpm is None:
            self.gate.probe()

    def _regrid(self) -> None:
        margins = [w.margin for w in (self.requests, self.tokens) if w is not None]
        self._slack = min(margins) if margins else math.inf
        grid = self.requests or self.tokens
        # the grid of shared wake-ups (seconds; 0 without a window): the window's length in equal ticks
        self.tick = grid.window / math.ceil(grid.window / ADMISSION_TICK) if grid is not None else 0.0

    @property
    def probing(self) -> bool:
        """Whether the first request is still alone on the wire, waiting to learn the server's limits."""
        return self.gate.probing

    def end_probe(self) -> None:
        """Open the concurrency up (the server's answer said what it allows, or that it says nothing)."""
        self.gate.end_probe()
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None

    def probe_sent(self) -> None:
        """The probe is on the wire: open up anyway after `PROBE_TIMEOUT` if no answer has come."""
        if self._probe_timer is None and self.gate.probing:
            self._probe_timer = asyncio.get_running_loop().call_later(PROBE_TIMEOUT, self.end_probe)

    def park_probe(self) -> None:
        """The probe got a 429 that said nothing about the quota: nothing else goes before its retry,
        which then acquires with `acquire(..., probe=True)` (call before releasing its ticket)."""
        self.gate.park()

    @property
    def probe_parked(self) -> bool:
        return self.gate.parked

    def learn_limit(self, kind: str, limit: float) -> bool:
        """Pace `kind` ("requests" or "tokens") to `limit` per minute, the server's advertised quota, if
        the config gives no limit for it and none was learned yet. Returns whether a window was installed.

        Installed once: a later change of the advertised limit is not followed (grants of the first
        window would otherwise be settled against the second)."""
        if not (limit > 0 and math.isfinite(limit)) or kind in self.learned:
            return False
        burst = limit / MINUTE * LEARNED_BURST_SECONDS
        if kind == "requests":
            if self.limits.rpm is not None or self.requests is not None:
                return False
            self.requests = WindowLimit(max(1.0, math.floor(limit)), MINUTE, burst=burst)
        elif kind == "tokens":
            if self.limits.tpm is not None or self.tokens is not None:
                return False
            self.tokens = WindowLimit(limit, MINUTE, burst=burst)
        else:
            raise ValueError(f"unknown limit kind {kind!r}")
        self.learned[kind] = limit
        self._regrid()
        return True

    def running_out(self, kind: str, limit: float | None, remaining: float) -> bool:
        """Whether `remaining` is under the low-water mark (1% of the limit, at least 1 unit)."""
        known = limit if limit is not None else self.learned.get(kind)
        return remaining < (max(1.0, known * LOW_WATER_FRACTION) if known else 1.0)

    def observe(self, kind: str, limit: float | None, remaining: float | None, reset: float | None,
                now: float) -> None:
        """What a server's `x-ratelimit-{limit,remaining,reset}-<kind>` headers said (reset in seconds).

        Learns `limit` (with `learn`, see `learn_limit`). When `remaining` is at or below the low-water
        mark (1% of the limit, at least 1), holds the endpoint until the server has refilled past it:
        `reset` is the time until the quota is whole again (OpenAI's meaning), so one unit comes back
        every reset / (limit - remaining) seconds; without a known limit, until `reset`."""
        if limit is not None and self.learn:
            self.learn_limit(kind, limit)
        if remaining is None or reset is None or reset <= 0 or not self.running_out(kind, limit, remaining):
            return
        known = limit if limit is not None else self.learned.get(kind)
        low = max(1.0, known * LOW_WATER_FRACTION) if known else 1.0
        if known is not None and known > remaining:
            wait = min(reset, reset / (known - remaining) * math.ceil(low - remaining))
        else:
            wait = reset
        self.hold(now + wait)

    @property
    def needs_tokens(self) -> bool:
        """Whether callers should estimate the request's tokens (only when a token limit is set)."""
        return self.tokens is not None or (self.lease is not None and self.limits.tpm is not None)

    def pause(self, seconds: float) -> None:
        """Admit nothing new for `seconds` from now: this process's own choice (a distributed worker
        whose driver is silent), not a server's hold, so it is neither counted nor shared."""
        self.blocked_until = max(self.blocked_until, self._clock() + seconds)

    def hold(self, until: float) -> None:
        """Admit nothing new before `until` (clock time)."""
        if until > self.blocked_until:
            self.blocked_until = until
            self.holds += 1
            self._pace_after(until)
            if self.lease is not None:
                self.lease.hold(until)

    def _pace_after(self, until: float) -> None:
        """The windows resume at their paced rate when a hold ends, not with a burst."""
        if self.requests is not None:
            self.requests.restart_at(until)
        if self.tokens is not None:
            self.tokens.restart_at(until)

    async def _acquire_leased(self, seq: int, tokens: float, lease: LeaseClient) -> Ticket:
        """A slot out of a leased batch: wait for its start, never send after its end."""
        try:
            while True:
                now = self._clock()
                blocked = max(self.blocked_until, lease.hold_until)
                if blocked > now:
                    await self._sleep(blocked - now)
                    continue
                slot = await lease.take(tokens)
                now = self._clock()
                if slot.at > now:
                    try:
                        await self._sleep(slot.at - now)
                    except BaseException:
                        lease.release(slot, sent=False)
                        raise
                    now = self._clock()
                if now > slot.expires or max(self.blocked_until, lease.hold_until) > now:
                    self.late_wakeups += now > slot.expires
                    lease.release(slot, sent=False)
                    continue
                return Ticket(seq, None, None, slot)
        except BaseException:
            self.gate.release()
            raise

    def try_acquire(self, tokens: float = 0.0) -> Ticket | None:
        """The ticket of a request of about `tokens` tokens that may be sent at once (a free slot, no hold,
        room in the windows now), else None with nothing changed: then `await acquire(tokens)`. The
        common unthrottled case then costs no coroutine."""
        if self.lease is not None:
            return None
        now = self._clock()
        if self.blocked_until > now:
            return None
        seq = self.gate.try_acquire()
        if seq is None:
            return None
        requests = self.requests
        token_window = self.tokens
        if (requests is not None and not requests.admits_now(1.0, now)) or (
            token_window is not None and not token_window.admits_now(tokens, now)
        ):
            self.gate.release()
            return None
        rg = requests.commit(1.0, now) if requests is not None else None
        tg = token_window.commit(tokens, now) if token_window is not None else None
        return Ticket(seq, rg, tg)

    async def acquire(self, tokens: float = 0.0, *, probe: bool = False) -> Ticket:
        """Wait until a request of about `tokens` tokens may be sent now; returns its ticket. `probe`:
        the retry of a parked probe (see `park_probe`) takes the parked slot."""
        if probe and self.gate.parked:
            seq: int | None = self.gate.take_parked()
        else:
            seq = self.gate.try_acquire()  # a free slot without waiting (the common case)
        if seq is None:
            seq = await self.gate.acquire()
        lease = self.lease
        if lease is not None:
            if self.requests is None and self.tokens is None:
                return await self._acquire_leased(seq, tokens, lease)
            # learned windows (local) first, then the cluster's slot: its span is short, so the send
            # stays close to the local reservation
            local = await self._acquire_windows(seq, tokens)
            try:
                ticket = await self._acquire_leased(seq, tokens, lease)
            except BaseException:
                self._refund(local.requests, local.tokens)
                raise
            ticket.requests, ticket.tokens = local.requests, local.tokens
            return ticket
        return await self._acquire_windows(seq, tokens)

    async def _acquire_windows(self, seq: int, tokens: float) -> Ticket:
        """The local hold and windows for a request that holds slot `seq` (released on error)."""
        requests = self.requests
        token_window = self.tokens
        if requests is None and token_window is None and self.blocked_until == -math.inf:
            return Ticket(seq, None, None)  # nothing to wait for but the slot
        try:
            while True:
                now = self._clock()
                due = self.blocked_until if self.blocked_until > now else now
                rg = tg = None
                if requests is not None:
                    due = requests.earliest(1.0, due)
                if token_window is not None:
                    # the request window still admits at any later time: it only ever empties
                    due = token_window.earliest(tokens, due)
                t = self._send_time(due, now)
                if token_window is not None:
                    tg = token_window.commit(tokens, t, due)
                if requests is not None:
                    rg = requests.commit(1.0, t, due)
                if t <= now:
                    return Ticket(seq, rg, tg)
                try:
                    await self._wait(t, now, due)
                except BaseException:
                    self._refund(rg, tg)
                    raise
                now = self._clock()
                if self.blocked_until > now:  # a 429 arrived while we slept: queue again behind the hold
                    if rg is not None and requests is not None:
                        requests.unlog(rg)
                    if tg is not None and token_window is not None:
                        token_window.unlog(tg)
                    continue
                if now - t <= self._slack:
                    return Ticket(seq, rg, tg)
                # we woke too late to use the slot (the loop was starved): sending more than the windows'
                # safety margin after the reserved time could bunch sends past a limit. Go now only if
                # the windows have room around `now`, else reserve a new slot.
                self.late_wakeups += 1
                self._refund(rg, tg)
                rg = requests.take_late(1.0, now) if requests is not None else None
                if requests is None or rg is not None:
                    tg = token_window.take_late(tokens, now) if token_window is not None else None
                    if token_window is None or tg is not None:
                        return Ticket(seq, rg, tg)
                    if rg is not None and requests is not None:
                        requests.settle(rg, 0.0)
        except BaseException:
            self.gate.release()
            raise

    def _send_time(self, due: float, now: float) -> float:
        """When a request the windows admit from `due` is sent: with the requests already waiting for a
        later tick; on the next tick when requests fall due closer together than a tick and this one waits
        a tick or more anyway (a queue of waiting requests: their slots are not what bounds the rate, so
        the rate is the same); else at `due`."""
        window = self.requests or self.tokens
        if window is None:
            return due
        booked, paced = window.last_at, window.paced_at
        if self.tokens is not None and self.tokens is not window:
            booked = max(booked, self.tokens.last_at)
            paced = max(paced, self.tokens.paced_at)
        if due <= booked:
            return booked  # the log stays in time order; this request joins that tick's wake-up
        if due - now >= self.tick and due - paced < self.tick:
            # a due time a hair past a tick (float noise: a window's length added to a tick) is that
            # tick: up to 1e-6 of a tick (20 ns) early, far inside the windows' safety margin
            return math.ceil(due / self.tick - 1e-6) * self.tick
        return due

    async def _wait(self, t: float, now: float, due: float) -> None:
        """Sleep until clock time `t`. Waits for a tick (`t` later than the request's `due`) share one
        loop timer; a wait for the request's own due time sleeps on its own."""
        if not self._shared_timers:
            self.timers += 1
            await self._sleep(t - now)
            return
        loop = asyncio.get_running_loop()
        if loop is not self._timer_loop:  # a limiter used from a new loop: forget the old loop's timers
            self._timer_loop = loop
            self._waiters = {}
        waiters = self._waiters.get(t)
        if waiters is None:
            self.timers += 1
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

    def _refund(self, rg: Grant | None, tg: Grant | None) -> None:
        if rg is not None and self.requests is not None:
            self.requests.settle(rg, 0.0)
        if tg is not None and self.tokens is not None:
            self.tokens.settle(tg, 0.0)

    def release(self, ticket: Ticket, *, used_tokens: float | None = None, sent: bool = True) -> None:
        """Give the slot back. `used_tokens` settles the token estimate; `sent=False` refunds the grants."""
        if ticket.slot is not None and self.lease is not None:
            self.lease.release(ticket.slot, sent=sent, used_tokens=used_tokens)
        if not sent:
            self._refund(ticket.requests, ticket.tokens)
        elif used_tokens is not None and ticket.tokens is not None and self.tokens is not None:
            self.tokens.settle(ticket.tokens, used_tokens)
        self.gate.release()

    def on_rate_limited(self, ticket: Ticket) -> None:
        self.gate.on_rate_limited(ticket.seq)

    def on_success(self, ticket: Ticket | None = None, latency: float | None = None) -> None:
        self.gate.on_success(ticket.seq if ticket is not None else -1, latency)

    def __repr__(self) -> str:
        parts = [repr(self.gate)]
        if self.requests is not None:
            parts.append(f"rpm={self.requests!r}")
        if self.tokens is not None:
            parts.append(f"tpm={self.tokens!r}")
        now = self._clock()
        if self.blocked_until > now:
            parts.append(f"held_for={self.blocked_until - now:.3f}s")
        return f"EndpointLimiter({', '.join(parts)})"
