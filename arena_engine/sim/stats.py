"""Request counters of the simulated endpoint, for tests and benchmarks (sync bookkeeping, O(1) per request).

Per distinct request body (keyed by an 8-byte digest) it counts arrivals and usable 200 answers, so
tests can check that a client never re-sends a request that already succeeded (`duplicate_200`; a 200
the simulator broke on purpose, a malformed body, no choices or a garbage verdict, is no success: a
client is right to send that body again), and it checks that clients honour Retry-After:

- `retry_after_violations`: arrivals of a body before the Retry-After that body was given has passed;
- `endpoint_retry_after_violations`: arrivals while any 429-imposed wait is running, more than
  `grace` seconds after that 429 was sent (requests already in flight get the grace).

The server counts a 200 when its handler returns the answer, which is before the client has read
it: a client whose read timeout fires after that (its process did not run for that long, or this one
stalled between counting and sending) sends the body again, and its second 200 is a `duplicate_200`
although the client never took the first. `answered_bodies` counts each body with a usable 200 once
(what a client can have stored); `duplicate_200_log` keeps the first `DUPLICATE_LOG_MAX` duplicates
with wall times (the earlier 200, the re-send's arrival, the second 200), to tell a re-send after a
client timeout apart from a client re-sending an answer it already had.
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any

_LOW32 = 0xFFFFFFFF
# An arrival this much before the stated Retry-After still counts as on time (timer granularity).
_PER_BODY_TOLERANCE_S = 0.001
#: duplicate 200s described in `duplicate_200_log` (the count itself is never capped)
DUPLICATE_LOG_MAX = 100


class SimStats:
    """Live counters. `clock` is monotonic (waits), `wall` gives the timestamps reported to users."""

    def __init__(
        self,
        *,
        track_bodies: bool = True,
        grace: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._track_bodies = track_bodies
        self._grace = grace
        self._clock = clock
        self._wall = wall
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.per_model: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.duplicate_200 = 0
        self.answered_bodies = 0  # distinct bodies with at least one usable 200
        self.duplicate_requests = 0
        self.retry_after_violations = 0
        self.endpoint_retry_after_violations = 0
        self.first_request: dict[str, float] = {}
        self.last_request: dict[str, float] = {}
        self._times: dict[str, array[float]] = {}
        self._bodies: dict[int, int] = {}  # digest -> received | (answered 200 << 32)
        self._answered_at: dict[int, float] = {}  # digest -> wall time of its last usable 200
        self._resent_at: dict[int, float] = {}  # digest -> wall time it arrived again after a usable 200
        self.duplicate_200_log: list[dict[str, Any]] = []
        self._not_before: dict[int, float] = {}  # digest -> monotonic time its Retry-After ends
        self._sweep_at = 1024
        self._blocks: deque[tuple[float, float]] = deque()  # (sent + grace, wait end), in send order
        self._waits_end = 0.0  # when the last wait told so far ends (monotonic)
        self._arrivals = 0

    # -- events -------------------------------------------------------------------------------------

    def arrive(self, model: str | None, body_key: int) -> int:
        """Count one arriving chat request; returns its occurrence index (0 = first time this body)."""
        now = self._clock()
        self.requests += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        if model is not None:
            self.per_model[model] = self.per_model.get(model, 0) + 1
            wall = self._wall()
            if model not in self.first_request:
                self.first_request[model] = wall
                self._times[model] = array("d")
            self.last_request[model] = wall
            self._times[model].append(wall)
        blocks = self._blocks
        while blocks and blocks[0][1] <= now:
            blocks.popleft()
        if blocks and blocks[0][0] < now:
            self.endpoint_retry_after_violations += 1
        if not self._track_bodies:
            self._arrivals += 1
            return self._arrivals - 1
        nb = self._not_before.get(body_key)
        if nb is not None:
            if now < nb - _PER_BODY_TOLERANCE_S:
                self.retry_after_violations += 1
            else:
                del self._not_before[body_key]
        packed = self._bodies.get(body_key, 0)
        occurrence = packed & _LOW32
        if occurrence:
            self.duplicate_requests += 1
            if packed >> 32 and len(self.duplicate_200_log) < DUPLICATE_LOG_MAX:
                self._resent_at[body_key] = self._wall()
        self._bodies[body_key] = packed + 1
        return occurrence

    def done(self, body_key: int, status: str, *, usable: bool = True) -> None:
        """Count how a request ended: an HTTP status ('200', '429', ...), 'reset', 'hang_abandoned' or
        'stall_abandoned'.

        ``usable=False`` marks a 200 broken on purpose; it does not make the body "answered"."""
        self.in_flight -= 1
        self.status[status] = self.status.get(status, 0) + 1
        if status == "200" and usable and self._track_bodies:
            packed = self._bodies.get(body_key, 0)
            wall = self._wall()
            if packed >> 32:
                self.duplicate_200 += 1
                if len(self.duplicate_200_log) < DUPLICATE_LOG_MAX:
                    self.duplicate_200_log.append({
                        "body": f"{body_key & 0xFFFFFFFFFFFFFFFF:016x}",
                        "answered": self._answered_at.get(body_key),
                        "resent": self._resent_at.pop(body_key, None),
                        "answered_again": wall,
                    })
            else:
                self.answered_bodies += 1
            self._bodies[body_key] = packed + (1 << 32)
            self._answered_at[body_key] = wall

    def fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    def told_to_wait(self, body_key: int, wait: float) -> None:
        """A 429 with a wait of `wait` seconds is being sent for this body now."""
        now = self._clock()
        self._blocks.append((now + self._grace, now + wait))
        self._waits_end = max(self._waits_end, now + wait)
        if self._track_bodies:
            self._not_before[body_key] = now + wait
            if len(self._not_before) >= self._sweep_at:
                self._not_before = {k: t for k, t in self._not_before.items() if t > now}
                self._sweep_at = max(1024, 2 * len(self._not_before))

    # -- views --------------------------------------------------------------------------------------

    def body_counts(self, body_key: int) -> tuple[int, int]:
        """(times received, times answered 200) for one body digest."""
        packed = self._bodies.get(body_key, 0)
        return packed & _LOW32, packed >> 32

    def snapshot(self, *, times: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.requests,
            "per_model": dict(self.per_model),
            "status": dict(self.status),
            "faults": dict(self.faults),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "distinct_bodies": len(self._bodies),
            "duplicate_requests": self.duplicate_requests,
            "duplicate_200": self.duplicate_200,
            "answered_bodies": self.answered_bodies,
            "duplicate_200_log": list(self.duplicate_200_log),
            "retry_after_violations": self.retry_after_violations,
            "endpoint_retry_after_violations": self.endpoint_retry_after_violations,
            # seconds until every wait told so far has ended: from then on no arrival is a violation
            "retry_after_left_s": max(0.0, self._waits_end - self._clock()),
            "first_request": dict(self.first_request),
            "last_request": dict(self.last_request),
        }
        if times:
            out["times"] = {m: a.tolist() for m, a in self._times.items()}
        return out

    def __repr__(self) -> str:
        return (
            f"SimStats(requests={self.requests}, in_flight={self.in_flight}, max_in_flight={self.max_in_flight}, "
            f"status={self.status}, duplicate_200={self.duplicate_200})"
        )
