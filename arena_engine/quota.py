"""What a request costs an endpoint's quota, and what the server says is left of it.

`estimate_tokens` is the request's estimate against a TPM limit (settled later to what the server
counted); `observe_quota` hands an answer's `x-ratelimit-*` headers to the endpoint's admission.

Quota-aware pacing: every answer's `x-ratelimit-limit/remaining/reset-requests/-tokens` go to the
endpoint's admission (`Admission.observe`; `EndpointLimiter.observe` by default): where the config gives
no rpm/tpm the server's advertised limit becomes the endpoint's window (the first request goes alone
until an answer says it), and a quota about to run out holds the endpoint until the server has refilled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from arena_engine.retry import THROTTLE_STATUSES, parse_duration

if TYPE_CHECKING:
    from arena_engine.admission import Admission

__all__ = ["DEFAULT_COMPLETION_ESTIMATE", "estimate_tokens", "observe_quota"]

#: Completion tokens assumed for the token-rate estimate when the request sets no max_tokens.
DEFAULT_COMPLETION_ESTIMATE = 256


def estimate_tokens(messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None) -> int:
    """A cheap upper-ish estimate of the tokens a request will count against a TPM limit:
    prompt characters / 4 plus 4 per message, plus `max_tokens` (or the default completion estimate)."""
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping):
                    text = part.get("text")
                    if isinstance(text, str):
                        chars += len(text)
    completion = DEFAULT_COMPLETION_ESTIMATE
    if params:
        for key in ("max_completion_tokens", "max_tokens"):
            value = params.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                completion = value
                break
        n = params.get("n")
        if isinstance(n, int) and not isinstance(n, bool) and n > 1:
            completion *= n
    return chars // 4 + 4 * len(messages) + completion


def _header_number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def observe_quota(limiter: Admission[Any], headers: Mapping[str, str], status: int, now: float) -> None:
    """Hand an answer's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` to the limiter (OpenAI's
    names; reset as a Go-style duration like `6m0s` or `20ms`, or seconds). A kind without a
    `remaining` header is skipped, so a server that sends none costs two header look-ups. Ends the
    limiter's probe unless this was a 429/503 that taught it nothing: then the probe is parked, and
    its retry goes before anything else."""
    for kind, remaining_key, limit_key, reset_key in _QUOTA_HEADERS:
        text = headers.get(remaining_key)
        if text is None:
            continue
        limit = _header_number(headers.get(limit_key))
        remaining = _header_number(text)
        reset = None
        if remaining is not None and limiter.running_out(kind, limit, remaining):  # else not needed
            text = headers.get(reset_key)
            reset = parse_duration(text) if text is not None else None
        limiter.observe(kind, limit, remaining, reset, now)
    if limiter.probing:
        if status not in THROTTLE_STATUSES or limiter.learned:
            limiter.end_probe()
        else:
            limiter.park_probe()


_QUOTA_HEADERS = tuple(
    (kind, f"x-ratelimit-remaining-{kind}", f"x-ratelimit-limit-{kind}", f"x-ratelimit-reset-{kind}")
    for kind in ("requests", "tokens")
)

