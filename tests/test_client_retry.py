"""Retry decisions as values: server wait headers, durations, backoff, status classes, token estimates."""

from __future__ import annotations

import email.utils
import random
import time
from typing import Any

import pytest
from multidict import CIMultiDict

from arena_engine.client import (
    ChatResult,
    Endpoint,
    RetryPolicy,
    Timeouts,
    backoff_delay,
    classify_status,
    estimate_tokens,
    parse_duration,
    server_wait,
)
from arena_engine.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5), ("250us", 0.00025)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 s", "-1", "1x", "inf"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    assert parse_duration(text) is None


def headers(**kw: str) -> CIMultiDict[str]:
    return CIMultiDict({k.replace("_", "-"): v for k, v in kw.items()})


def test_retry_after_ms_wins_over_seconds() -> None:
    assert server_wait(headers(retry_after_ms="1500", Retry_After="7")) == 1.5


def test_retry_after_seconds_and_fractions() -> None:
    assert server_wait(headers(Retry_After="7")) == 7.0
    assert server_wait(headers(Retry_After="0.250")) == 0.25


def test_retry_after_http_date_is_measured_against_the_servers_clock() -> None:
    server_now = 1_700_000_000.0  # the server's clock is far from ours: only the difference counts
    h = headers(
        Retry_After=email.utils.formatdate(server_now + 30, usegmt=True),
        Date=email.utils.formatdate(server_now, usegmt=True),
    )
    assert server_wait(h) == pytest.approx(30.0)


def test_retry_after_http_date_without_date_header_uses_our_clock() -> None:
    h = headers(Retry_After=email.utils.formatdate(time.time() + 20, usegmt=True))
    wait = server_wait(h)
    assert wait is not None and 18.0 <= wait <= 21.0


def test_ratelimit_reset_headers_use_the_exhausted_limit() -> None:
    h = headers(
        x_ratelimit_reset_requests="20ms",
        x_ratelimit_remaining_requests="5",
        x_ratelimit_reset_tokens="6m0s",
        x_ratelimit_remaining_tokens="0",
    )
    assert server_wait(h) == 360.0
    h2 = headers(
        x_ratelimit_reset_requests="1s", x_ratelimit_remaining_requests="0", x_ratelimit_reset_tokens="6m0s"
    )
    assert server_wait(h2) == 1.0
    assert server_wait(headers(x_ratelimit_reset_requests="2s", x_ratelimit_reset_tokens="30ms")) == 2.0


def test_unusable_wait_headers_fall_back_to_backoff() -> None:
    assert server_wait(headers()) is None
    assert server_wait(headers(Retry_After="later please")) is None
    assert server_wait(headers(retry_after_ms="nan", x_ratelimit_reset_tokens="soon")) is None


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    rng = random.Random(1)
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 4.0), (500, 4.0)]:
        draws = [backoff_delay(attempt, policy, rng) for _ in range(2000)]
        assert 0.0 <= min(draws) < 0.05 * cap  # full jitter reaches down to zero...
        assert 0.95 * cap < max(draws) <= cap  # ...and up to the cap


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, "done"), (201, "done"), (400, "fatal"), (401, "fatal"), (403, "fatal"), (404, "fatal"),
     (422, "fatal"), (408, "retry"), (409, "retry"), (429, "retry"), (500, "retry"), (503, "retry"),
     (529, "retry")],
)  # fmt: skip
def test_status_classes(status: int, kind: str) -> None:
    assert classify_status(status) == kind


def test_token_estimate_counts_prompt_and_completion_budget() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "x" * 400},
        {"role": "user", "content": [{"type": "text", "text": "y" * 40}]},
    ]
    assert estimate_tokens(messages, None) == 100 + 10 + 8 + 256
    assert estimate_tokens(messages, {"max_tokens": 50}) == 100 + 10 + 8 + 50
    assert estimate_tokens(messages, {"max_completion_tokens": 20, "n": 3}) == 100 + 10 + 8 + 60


def test_result_ok_and_config_validation() -> None:
    assert ChatResult("a", ("a",), "stop", 1, 1, 0.1, 1, 200, None).ok
    assert not ChatResult(None, (), None, 0, 0, 0.1, 1, 500, "retry_budget_exhausted: http_500: x").ok
    with pytest.raises(ConfigError, match="api_url"):
        Endpoint("e", "127.0.0.1:8000/v1", "m")
    with pytest.raises(ConfigError, match=r"timeouts\.read"):
        Timeouts(read=0)
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    assert Endpoint("e", "http://h/v1/", "m").chat_url == "http://h/v1/chat/completions"
