"""The HTTP calls every provider's batch API makes: retried JSON calls and streamed JSONL results.

Transient failures (connection errors, 429, 5xx) are retried with backoff (``tries`` in all), then are
a :class:`Transient`; anything else is at once a :class:`BatchRefusedError` (a FatalHTTPError: a 4xx
retrying cannot fix) or a :class:`BatchRequestError` (408/409), with the server's message. All three
are BatchErrors and RequestErrors. Key values come from the environment and are
only ever put in the request headers, never in a message.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson

from ..client import Endpoint, EnvVar, classify_status
from ..errors import FailureReason, RetryKind
from .errors import BatchRefusedError, BatchRequestError

TRIES = 6


def extra_headers(endpoint: Endpoint) -> dict[str, str]:
    """The endpoint's extra headers (values from the environment where configured so)."""
    return {name: os.environ.get(value.name, "") if isinstance(value, EnvVar) else value
            for name, value in endpoint.extra_headers.items()}


class Transient(BatchRequestError):
    """A call that may succeed if made again (connection error, 429, 5xx), after its tries."""


def _refused(message: str, status: int) -> BatchRequestError:
    """The error of a call answered with an error status: fatal unless retrying could help."""
    cls = BatchRefusedError if classify_status(status) is RetryKind.FATAL else BatchRequestError
    return cls(message, status)


class BatchHttp:
    """One endpoint's batch API over an open aiohttp session (``headers`` set by the protocol)."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: Endpoint, headers: dict[str, str]) -> None:
        self.session = session
        self.endpoint = endpoint
        self.base = endpoint.api_url
        self.headers = headers

    async def _call(self, method: str, path: str, *, json: Any = None, data: Any = None,
                    params: Mapping[str, str] | None = None, what: str, tries: int = TRIES,
                    landed: Callable[[], Awaitable[dict[str, Any] | None]] | None = None) -> dict[str, Any]:
        """The call's JSON reply, retried on transient failures. ``landed``: for a call that is not
        idempotent (creating a batch), asked before each retry whether the failed attempt took effect
        after all (its reply lost); what it finds is returned instead of calling again."""
        delay = 0.5
        url = path if path.startswith(("http://", "https://")) else self.base + path
        last: int | None = None  # the last answer's status (None: no answer)
        for attempt in range(1, tries + 1):
            body = data() if callable(data) else data
            try:
                async with self.session.request(method, url, json=json, data=body, params=params,
                                                headers=self.headers) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                last = None
            else:
                last = status
                if 200 <= status < 300:
                    try:
                        out: dict[str, Any] = orjson.loads(raw)
                        return out
                    except orjson.JSONDecodeError:
                        problem = f"a {status} reply that is not JSON"
                else:
                    problem = f"http_{status}: {message_of(raw)}"
                    if status != 429 and status < 500:
                        raise _refused(f"{self.endpoint.name} ({self.base}): {what} failed: {problem}", status)
            if attempt == tries:
                raise Transient(f"{self.endpoint.name} ({self.base}): {what} failed {tries} time(s): {problem}",
                                last, FailureReason.RETRY_BUDGET_EXHAUSTED)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            if landed is not None and (found := await landed()) is not None:
                return found
        raise AssertionError("unreachable")

    async def _lines(self, url: str, what: str) -> AsyncIterator[bytes]:
        """The lines of a JSONL result, read as they arrive (not the whole file in memory)."""
        url = url if url.startswith(("http://", "https://")) else self.base + url
        async with self.session.get(url, headers=self.headers) as resp:
            if resp.status != 200:
                raise _refused(f"{self.endpoint.name}: reading {what} failed: "
                               f"http_{resp.status}: {message_of(await resp.read())}", resp.status)
            buf = b""
            async for piece in resp.content.iter_chunked(1 << 16):
                buf += piece
                *whole, buf = buf.split(b"\n")
                for line in whole:
                    if line.strip():
                        yield line
            if buf.strip():
                yield buf


def message_of(raw: bytes) -> str:
    """The server's error message in a reply body (OpenAI's and Anthropic's ``{"error": {"message"}}``)."""
    try:
        data = orjson.loads(raw)
        msg = data.get("error", {}).get("message") if isinstance(data, dict) else None
    except (orjson.JSONDecodeError, AttributeError):
        msg = None
    return str(msg or raw[:200].decode("utf-8", "replace"))
