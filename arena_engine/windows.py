"""Rate windows: at most `limit` units in ANY window of `period` seconds, paced evenly (GCRA).

The window guarantee is exact, not average: each `WindowLimit` keeps a log of the admissions still
inside the window and never admits a unit that would push the sum over `limit` in any window of
`period` (+ a small safety margin for clock jitter between us and the server). On top of that, pacing
(GCRA with a burst tolerance of one second's worth, at most 2% of the window) spreads admissions evenly instead of firing the whole
minute's budget at once.

Pure sync bookkeeping, no clock and no loop: `arena_engine.limits.EndpointLimiter` keeps one per
request and token limit of an endpoint, and a distributed run's broker one per endpoint for the cluster.
"""

from __future__ import annotations

import math
from collections import deque

from arena_engine.endpoint_config import MINUTE
from arena_engine.errors import ConfigError

__all__ = ["Grant", "WindowLimit"]

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
