"""Per-endpoint admission control: a concurrency cap, request- and token-rate windows, hold-backs.

Layers, bottom up (the bookkeeping is plain sync code; only `EndpointLimiter.acquire` awaits):

    WindowLimit       (windows) at most `limit` units in ANY window of `period` seconds, paced evenly (GCRA)
    ConcurrencyGate   (gate) a FIFO semaphore whose size can shrink on 429 and grow back (AIMD)
    (pacing)          the tick a held-back request is sent on; one shared loop timer per tick
    EndpointLimiter   gate -> hold-back deadline -> request window -> token window; one wait per request,
                      and what the server's `x-ratelimit-*` headers teach (the probe, learned windows)

`EndpointLimiter` is the `arena_engine.admission.Admission` every `ChatClient` uses unless it is given
another one.

Why not aiolimiter: its bucket starts empty (a full extra burst passes at start: 1,182 req/s for a
1,000/s limit) and its waiters poll (57 wake-ups per acquisition under uvloop when binding). Here a
request *reserves* its admission time with O(1) sync bookkeeping and then sleeps exactly once until
that time; requests due within the same `ADMISSION_TICK` share one timer, so a binding limit costs at
most one timer per request, and a fraction of one when requests fall due faster than one per tick.

The windows are `arena_engine.windows`, the gate `arena_engine.gate`, the send times and shared timers
`arena_engine.pacing`; this module puts them together (and re-exports them for older imports).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

from arena_engine.endpoint_config import DEFAULT_CONCURRENCY, MINUTE, Limits
from arena_engine.gate import ConcurrencyGate
from arena_engine.pacing import ADMISSION_TICK, Wakeups, send_time, tick_of
from arena_engine.windows import Grant, WindowLimit

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


class Ticket:
    """What `EndpointLimiter.acquire` hands out; give it back with `EndpointLimiter.release`."""

    __slots__ = ("requests", "sent", "seq", "tokens")

    def __init__(self, seq: int, requests: Grant | None, tokens: Grant | None) -> None:
        self.seq = seq
        self.requests = requests
        self.tokens = tokens
        self.sent = False


class EndpointLimiter:
    """Admission for one endpoint: concurrency slot, then hold-back deadline, then RPM and TPM windows.

    `acquire(tokens)` waits for a concurrency slot, reserves the request in both rate windows at the same
    time (so the request is recorded in each window at the moment it is actually sent) and sleeps once
    until then. `hold(until)` stops every new request until `until` (a 429 with Retry-After); requests
    already waiting for their reserved time re-check it when they wake. Create it inside the running loop.

    With `learn`, the server's own quota paces the endpoint where the config gives no limit: the first
    request goes alone (a probe) until an answer says what the server allows; `observe` then installs a
    window of the advertised `x-ratelimit-limit-*` per minute (`learned`), and holds the endpoint when
    `x-ratelimit-remaining-*` is about to run out.

    It implements `arena_engine.admission.Admission` (what a `ChatClient` calls).
    """

    __slots__ = (
        "_clock",
        "_probe_timer",
        "_slack",
        "_sleep",
        "_wakeups",
        "blocked_until",
        "gate",
        "holds",
        "late_wakeups",
        "learn",
        "learned",
        "limits",
        "requests",
        "tick",
        "tokens",
    )

    def __init__(
        self,
        limits: Limits,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        learn: bool = False,
    ) -> None:
        self.limits = limits
        self.learn = learn
        self.learned: dict[str, float] = {}  # kind ("requests"/"tokens") -> limit per minute learned
        self._clock: Clock = clock or time.monotonic
        # by default requests due at the same tick share one loop timer; a given `sleep` (a test's fake
        # time) is called once per waiting request instead
        self._wakeups = Wakeups(sleep)
        self._sleep = self._wakeups.sleep
        self.gate = ConcurrencyGate(limits.concurrency, adaptive=limits.adaptive, auto=limits.auto)
        rw = limits.request_window()
        tw = limits.token_window()
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
        self.tick = tick_of(self.requests or self.tokens)

    @property
    def timers(self) -> int:
        """Wake-up timers set for requests held back by a window or a hold."""
        return self._wakeups.count

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
        return self.tokens is not None

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

    def _pace_after(self, until: float) -> None:
        """The windows resume at their paced rate when a hold ends, not with a burst."""
        if self.requests is not None:
            self.requests.restart_at(until)
        if self.tokens is not None:
            self.tokens.restart_at(until)

    def try_acquire(self, tokens: float = 0.0) -> Ticket | None:
        """The ticket of a request of about `tokens` tokens that may be sent at once (a free slot, no hold,
        room in the windows now), else None with nothing changed: then `await acquire(tokens)`. The
        common unthrottled case then costs no coroutine."""
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
        seq = self._take_slot(probe)
        if seq is None:
            seq = await self.gate.acquire()
        return await self._acquire_windows(seq, tokens)

    def _take_slot(self, probe: bool) -> int | None:
        """A concurrency slot without waiting (the common case), or the parked probe's for its retry."""
        if probe and self.gate.parked:
            return self.gate.take_parked()
        return self.gate.try_acquire()

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
                t = send_time(due, now, self.requests, self.tokens, self.tick)
                if token_window is not None:
                    tg = token_window.commit(tokens, t, due)
                if requests is not None:
                    rg = requests.commit(1.0, t, due)
                if t <= now:
                    return Ticket(seq, rg, tg)
                try:
                    await self._wakeups.until(t, now, due)
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

    def _refund(self, rg: Grant | None, tg: Grant | None) -> None:
        if rg is not None and self.requests is not None:
            self.requests.settle(rg, 0.0)
        if tg is not None and self.tokens is not None:
            self.tokens.settle(tg, 0.0)

    def release(self, ticket: Ticket, *, used_tokens: float | None = None, sent: bool = True) -> None:
        """Give the slot back. `used_tokens` settles the token estimate; `sent=False` refunds the grants."""
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
