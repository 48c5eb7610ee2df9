"""Endpoint health: a circuit breaker that stops sending to an endpoint that cannot answer.

A closed port, an unknown host, a wrong key (401/403), a model the server does not have (404) or a
server that answers something other than JSON fails every request the same way; retrying each request
on its own budget sends thousands of doomed requests and prints a warning for each. After
``threshold`` consecutive attempts that failed that way (and no success between them), the circuit
opens for the rest of the run: the client answers every further request at once with
``endpoint_down: <cause>`` and sends nothing. Rate limits, timeouts and 5xx do not count: they are the
server being busy, not absent.
"""

from __future__ import annotations

import anyio

from .errors import FailureReason
from .replies import NOT_JSON

#: consecutive hard failures that open the circuit
DEFAULT_THRESHOLD = 5
#: failure reasons (prefixes of ``ChatResult.error``) that mean the endpoint cannot answer at all
HARD_FAILURES = ("connect_error", "dns_error", "http_401", "http_403", "http_404", "malformed_json", "not_json")
ENDPOINT_DOWN = FailureReason.ENDPOINT_DOWN.value


def is_hard(reason: str) -> bool:
    return reason.startswith(HARD_FAILURES) or NOT_JSON in reason.split(":", 1)[0]


class EndpointHealth:
    """Consecutive hard failures of one endpoint (sync bookkeeping; ``opened`` wakes sleeping retries)."""

    def __init__(self, threshold: int = DEFAULT_THRESHOLD) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        self.threshold = threshold
        self.consecutive = 0
        self.cause: str | None = None  # the failure that opened the circuit
        self._opened: anyio.Event | None = None

    @property
    def is_open(self) -> bool:
        return self.cause is not None

    def failed(self, reason: str) -> None:
        """An attempt failed with ``reason``; hard failures count towards opening the circuit."""
        if self.cause is not None or not is_hard(reason):
            return
        self.consecutive += 1
        if self.consecutive >= self.threshold:
            self.cause = reason
            if self._opened is not None:
                self._opened.set()

    def succeeded(self) -> None:
        self.consecutive = 0

    async def wait_open(self) -> None:
        """Sleep until the circuit opens (a retry's backoff races this)."""
        if self.cause is not None:
            return
        if self._opened is None:
            self._opened = anyio.Event()
        await self._opened.wait()
