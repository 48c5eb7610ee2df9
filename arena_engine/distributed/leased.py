"""A worker's admission to an endpoint whose rate windows the cluster shares: `LeasedLimiter`.

It is an `arena_engine.limits.EndpointLimiter` (the same concurrency gate, holds, pauses, probe and
quota learning, so it implements `arena_engine.admission.Admission` the same way) whose configured
request and token windows are not counted here but leased from the cluster's broker: every admission
is a slot of a leased batch (`arena_engine.distributed.leases.LeaseClient`), and a hold is forwarded to
the broker, which tells every worker with its next batch.

Windows learned from a server's `x-ratelimit-*` headers stay local to this limiter (the broker keeps
only the configured limits): each worker of a distributed run paces itself to the whole learned limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..endpoint_config import Limits
from ..limits import Clock, EndpointLimiter, Ticket
from ..windows import Grant
from .leases import LeaseClient, LeaseSlot

__all__ = ["LeasedLimiter", "LeasedTicket"]


class LeasedTicket(Ticket):
    """A `Ticket` that also holds its slot of a leased batch."""

    __slots__ = ("slot",)

    def __init__(self, seq: int, requests: Grant | None, tokens: Grant | None, slot: LeaseSlot) -> None:
        super().__init__(seq, requests, tokens)
        self.slot = slot


class LeasedLimiter(EndpointLimiter):
    """An `EndpointLimiter` whose configured windows are the cluster's, leased through `lease`."""

    __slots__ = ("lease",)

    def __init__(
        self,
        limits: Limits,
        *,
        lease: LeaseClient,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        learn: bool = False,
    ) -> None:
        super().__init__(limits, clock=clock, sleep=sleep, learn=learn)
        self.lease = lease
        self.requests = self.tokens = None  # the configured windows are the broker's
        self._regrid()

    @property
    def needs_tokens(self) -> bool:
        return self.tokens is not None or self.limits.tpm is not None

    def hold(self, until: float) -> None:
        """Admit nothing new before `until`, and tell the broker (every worker then holds too)."""
        if until > self.blocked_until:
            super().hold(until)
            self.lease.hold(until)

    def try_acquire(self, tokens: float = 0.0) -> Ticket | None:
        return None  # a slot comes out of a batch, which may have to be fetched: always `acquire`

    async def acquire(self, tokens: float = 0.0, *, probe: bool = False) -> Ticket:
        seq = self._take_slot(probe)
        if seq is None:
            seq = await self.gate.acquire()
        if self.requests is None and self.tokens is None:
            return await self._acquire_leased(seq, tokens)
        # learned windows (local) first, then the cluster's slot: its span is short, so the send stays
        # close to the local reservation
        local = await self._acquire_windows(seq, tokens)
        try:
            ticket = await self._acquire_leased(seq, tokens)
        except BaseException:
            self._refund(local.requests, local.tokens)
            raise
        ticket.requests, ticket.tokens = local.requests, local.tokens
        return ticket

    async def _acquire_leased(self, seq: int, tokens: float) -> LeasedTicket:
        """A slot out of a leased batch: wait for its start, never send after its end."""
        lease = self.lease
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
                return LeasedTicket(seq, None, None, slot)
        except BaseException:
            self.gate.release()
            raise

    def release(self, ticket: Ticket, *, used_tokens: float | None = None, sent: bool = True) -> None:
        if isinstance(ticket, LeasedTicket):
            self.lease.release(ticket.slot, sent=sent, used_tokens=used_tokens)
        super().release(ticket, used_tokens=used_tokens, sent=sent)
