"""Which answers are retried, and after what wait: the retry policy of `arena_engine.client.ChatClient`.

    classify_status(status)     RETRY for 408/409/429/5xx, FATAL for other errors, DONE for 2xx
    server_wait(headers)        the wait the server asked for, if it said one
    backoff_delay(attempt, ..)  full-jitter exponential backoff otherwise
    network_failure(exc)        what an aiohttp exception means (all network trouble is retried)

Retry waits: the server's `retry-after-ms`, `Retry-After` (seconds or HTTP date) or
`x-ratelimit-reset-requests/-tokens` when given (and then the whole endpoint is held back until the
wait has passed), otherwise exponential backoff with full jitter. A 429 (or a 503 with a server wait)
says "not now", not "this request is broken": its budget is time (`RetryPolicy.max_time`) alone, and
it waits the longer of the server's wait and the backoff, so a server that keeps refusing is asked
less and less often. Other failures are capped by `RetryPolicy.max_attempts` as well. A request that
cannot be retried in time ends with `error="retry_budget_exhausted: <last reason>"`.
"""

from __future__ import annotations

import email.utils
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from arena_engine.endpoint_config import RetryPolicy
from arena_engine.errors import FailureReason, RetryKind
from arena_engine.replies import snippet

__all__ = [
    "CONNECTION_RESET",
    "RESHAPE",
    "RETRY_BUDGET_EXHAUSTED",
    "THROTTLE_STATUSES",
    "TIMEOUT",
    "RetryDecision",
    "backoff_delay",
    "classify_status",
    "network_failure",
    "parse_duration",
    "server_message",
    "server_wait",
]

#: Longest server message kept in an error string.
MAX_ERROR_MESSAGE = 300

#: Statuses that mean "slow down": with a server wait (any, for 429) their budget is time, not attempts.
THROTTLE_STATUSES = frozenset({429, 503})
FATAL_STATUSES = frozenset({400, 401, 403, 404, 422})
RETRY_STATUSES = frozenset({408, 409, 429})
RETRY_BUDGET_EXHAUSTED = FailureReason.RETRY_BUDGET_EXHAUSTED.value


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after an attempt (`kind`: a RetryKind); `wait` is the server's wait."""

    kind: RetryKind
    reason: str | None = None
    wait: float | None = None  # seconds the server asked for (None: use backoff)
    status: int | None = None  # HTTP status of the answer, if one arrived


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration ("1s", "6m0s", "20ms", "1h2m3.5s") or a bare number of seconds."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    pos = 0
    total = 0.0
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            return None
        total += float(match.group(1)) * scale[match.group(2)]
        pos = match.end()
    return total


def _retry_after(value: str, server_date: str | None) -> float | None:
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    reference: float | None = None
    if server_date:
        try:  # measure against the server's own clock: immune to skew between the machines
            reference = email.utils.parsedate_to_datetime(server_date).timestamp()
        except (TypeError, ValueError, IndexError):
            reference = None
    if reference is None:
        reference = time.time()
    return max(0.0, when.timestamp() - reference)


def server_wait(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks us to wait, from (in order of precedence) `retry-after-ms`,
    `Retry-After` (seconds or HTTP date), `x-ratelimit-reset-requests/-tokens`; None if none is usable.

    Of the reset headers, those whose `x-ratelimit-remaining-*` is 0 count (all, if none says 0); the
    longest wins.
    """
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            ms = float(value)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms) and ms >= 0:
            return ms / 1000.0
    value = headers.get("retry-after")
    if value is not None:
        seconds = _retry_after(value, headers.get("date"))
        if seconds is not None:
            return seconds
    waits: list[tuple[bool, float]] = []
    for kind in ("requests", "tokens"):
        reset = headers.get(f"x-ratelimit-reset-{kind}")
        if reset is None:
            continue
        seconds = parse_duration(reset)
        if seconds is None:
            continue
        exhausted = headers.get(f"x-ratelimit-remaining-{kind}", "").strip() == "0"
        waits.append((exhausted, seconds))
    if not waits:
        return None
    binding = [s for exhausted, s in waits if exhausted] or [s for _, s in waits]
    return max(binding)


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Full-jitter exponential backoff before attempt `attempt + 1` (attempt counts from 1)."""
    cap = min(policy.max_delay, policy.base_delay * 2.0 ** min(attempt - 1, 60))
    return rng.uniform(0.0, cap)


def classify_status(status: int) -> RetryKind:
    """RETRY for 408/409/429/5xx, FATAL for other errors, DONE for 2xx."""
    if 200 <= status < 300:
        return RetryKind.DONE
    if status in RETRY_STATUSES or status >= 500:
        return RetryKind.RETRY
    return RetryKind.FATAL


def server_message(raw: bytes, scrub: Callable[[str], str] = str) -> str:
    """The server's error message from an OpenAI-style error body, or the body's start; ``scrub`` runs
    before it is cut short (a key echoed back and cut in half would escape a later scrub)."""
    message: Any = None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        elif isinstance(error, str):
            message = error
        if message is None:
            message = data.get("message") or data.get("detail")
        if isinstance(message, list):  # FastAPI/pydantic: [{"loc": [...], "msg": "Input should be ..."}]
            message = "; ".join(_validation_item(item) for item in message)
    if not isinstance(message, str):
        message = raw.decode("utf-8", "replace")
    message = snippet(scrub(message), MAX_ERROR_MESSAGE)
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[: MAX_ERROR_MESSAGE - 3] + "..."
    return message


def _validation_item(item: Any) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("msg"), str):
        return str(item)
    loc = item.get("loc")
    where = ".".join(str(part) for part in loc) if isinstance(loc, list | tuple) else ""
    return f"{where}: {item['msg']}" if where else item["msg"]


def network_failure(exc: aiohttp.ClientError) -> RetryDecision:
    """Map an aiohttp exception to a retry decision (all network trouble is worth another attempt)."""
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return TIMEOUT
    if isinstance(exc, aiohttp.ClientConnectorError):
        return RetryDecision(RetryKind.RETRY, f"{FailureReason.CONNECT_ERROR}: {type(exc).__name__}")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        return CONNECTION_RESET
    if isinstance(exc, aiohttp.ClientResponseError):
        return RetryDecision(RetryKind.RETRY, f"{FailureReason.BAD_RESPONSE}: {exc.status}", status=exc.status or None)
    return RetryDecision(RetryKind.RETRY, f"{FailureReason.CLIENT_ERROR}: {type(exc).__name__}")


TIMEOUT = RetryDecision(RetryKind.RETRY, FailureReason.TIMEOUT.value)
CONNECTION_RESET = RetryDecision(RetryKind.RETRY, FailureReason.CONNECTION_RESET.value)
RESHAPE = RetryDecision(RetryKind.RESHAPE)
