"""Masking the API key in failure reasons hides the key and nothing else.

A key of `x` once turned the reason "retry_budget_exhausted" into "retry_budget_e***hausted". A short
key (fewer than 8 characters: "x", "EMPTY", "ollama", placeholders local servers are run with) is now
masked only where it stands as a token; a long key is masked wherever it occurs, glued to other text
or not, since that is still the key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from arena_engine.client import SHORT_KEY, ChatClient, Endpoint, RetryPolicy, Timeouts

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    """An endpoint that answers 503 with a message made from the request's key: retried, then given up."""

    async def handler(request: web.Request) -> web.Response:
        key = request.headers["Authorization"].removeprefix("Bearer ")
        message = (f"maximum context exceeded for key {key}. Next: ({key}) x-ray {key}-suffix "
                   f"prefix-{key} %20{key}z max_tokens 3 {key} 4")
        return web.json_response({"error": {"message": message}}, status=503)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


async def _reason(url: str, key: str) -> str:
    ep = Endpoint("echo", url, "m", retry=RetryPolicy(max_attempts=2, max_time=10.0, base_delay=0.0, max_delay=0.0),
                  timeouts=Timeouts(connect=2.0, read=5.0, total=10.0))
    async with ChatClient(ep, api_key=key) as client:
        result = await client.chat([{"role": "user", "content": "hi"}])
    assert result.error is not None and result.attempts == 2
    return result.error


async def test_a_one_letter_key_is_masked_as_a_token_and_no_word_is_touched(echo_url: str) -> None:
    reason = await _reason(echo_url, "x")
    assert reason == (
        "retry_budget_exhausted: http_503: maximum context exceeded for key ***. Next: (***) x-ray "
        "x-suffix prefix-x %20xz max_tokens 3 *** 4"
    )


async def test_a_short_word_key_is_masked_only_where_it_stands_alone(echo_url: str) -> None:
    key = "EMPTY"
    assert len(key) < SHORT_KEY
    reason = await _reason(echo_url, key)
    assert reason.count("***") == 3 and reason.count(key) == 3  # standing alone: hidden; inside a word: kept
    assert "for key ***. Next: (***) x-ray EMPTY-suffix prefix-EMPTY %20EMPTYz" in reason
    assert "retry_budget_exhausted" in reason and "maximum" in reason and "max_tokens" in reason


async def test_a_long_key_is_hidden_wherever_it_occurs(echo_url: str) -> None:
    key = "sk-test-DISTINCTIVE-5c1e"
    reason = await _reason(echo_url, key)
    assert "DISTINCTIVE" not in reason and reason.count("***") == 6, reason
    assert "%20***z" in reason and "***-suffix" in reason and "prefix-***" in reason
    assert "retry_budget_exhausted" in reason and "x-ray" in reason and "max_tokens" in reason
