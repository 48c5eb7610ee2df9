"""What a `ChatClient` needs from whatever admits its requests to an endpoint: the `Admission` protocol.

A client asks its admission for a ticket before every attempt and gives the ticket back after it, and
tells it what the server said: an answer (with its latency), a "slow down" (429, 503), a wait the
server asked for, what its `x-ratelimit-*` headers report. Two implement it:

    arena_engine.limits.EndpointLimiter     this process's own windows (the client's default)
    arena_engine.distributed                a Ray run's workers: the windows the whole cluster shares

The client never looks inside a ticket (`TicketT`): it is whatever the admission needs back.

Probing: an admission that does not know an endpoint's limits yet may let one request go alone (the
probe) until an answer says what the server allows. The client reports when the probe is on the wire
(`probe_sent`), ends the probe when an answer settles it (`end_probe`), or parks it when a "slow down"
taught nothing (`park_probe`): its retry then acquires with `probe=True` and goes before anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, TypeVar

__all__ = ["Admission"]

TicketT = TypeVar("TicketT")


class Admission(Protocol[TicketT]):
    """Admission of one endpoint's requests (see the module's docstring)."""

    # ------------------------------------------------------------------ one request

    @property
    def needs_tokens(self) -> bool:
        """Whether `acquire` wants the request's estimated tokens (else 0 is passed)."""
        ...

    def try_acquire(self, tokens: float = 0.0) -> TicketT | None:
        """A ticket if the request may go at once, else None with nothing changed (then `acquire`)."""
        ...

    async def acquire(self, tokens: float = 0.0, *, probe: bool = False) -> TicketT:
        """Wait until a request of about `tokens` tokens may be sent now; `probe`: the parked probe's retry."""
        ...

    def release(self, ticket: TicketT, *, used_tokens: float | None = None, sent: bool = True) -> None:
        """The attempt is over: `sent` whether it went out, `used_tokens` what the server counted."""
        ...

    def on_success(self, ticket: TicketT | None = None, latency: float | None = None) -> None:
        """The request was answered after `latency` seconds."""
        ...

    def on_rate_limited(self, ticket: TicketT) -> None:
        """The request got a 429 (or a 503): fewer at once, where the admission adapts."""
        ...

    # ------------------------------------------------------------------ the whole endpoint

    def hold(self, until: float) -> None:
        """The server asked to wait: admit nothing new before clock time `until`."""
        ...

    def pause(self, seconds: float) -> None:
        """Admit nothing new for `seconds`: this process's own choice, not a server's hold."""
        ...

    # ------------------------------------------------------------------ the server's quota

    @property
    def learned(self) -> Mapping[str, float]:
        """Limits per minute learned from the server's headers, by kind ("requests", "tokens")."""
        ...

    def running_out(self, kind: str, limit: float | None, remaining: float) -> bool:
        """Whether `remaining` of `kind` is low enough that `observe` wants the reset time too."""
        ...

    def observe(self, kind: str, limit: float | None, remaining: float | None, reset: float | None,
                now: float) -> None:
        """What an answer's `x-ratelimit-{limit,remaining,reset}-<kind>` headers said (reset in seconds)."""
        ...

    # ------------------------------------------------------------------ the probe

    @property
    def probing(self) -> bool:
        """Whether the first request is still alone on the wire."""
        ...

    @property
    def probe_parked(self) -> bool:
        """Whether the probe was told "not now" and its retry goes first."""
        ...

    def probe_sent(self) -> None: ...

    def end_probe(self) -> None: ...

    def park_probe(self) -> None: ...
