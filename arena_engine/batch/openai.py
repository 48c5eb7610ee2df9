"""The OpenAI Batch API (and the providers that copy it) as the driver uses it.

``POST /v1/files`` (multipart, ``purpose=batch``; the file is streamed from disk), ``GET /v1/files``
(to find a file an interrupted upload may have left), ``POST /v1/batches`` (with ``metadata`` carrying
the chunk's tag), ``GET /v1/batches`` (to find a batch created but not recorded),
``GET /v1/batches/{id}``, ``GET /v1/files/{id}/content`` (streamed line by line) and
``POST /v1/batches/{id}/cancel``. Transient failures (connection errors, 429, 5xx) are retried with
backoff; anything else is a :class:`BatchError` with the server's message.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from ..client import Endpoint, EnvVar
from .errors import BatchError
from .queue import CHAT_URL

TAG_KEY = "arena_chunk"  # the batch metadata key that holds a chunk's tag
TERMINAL = ("completed", "failed", "expired", "cancelled")
_TRIES = 6


def auth_headers(endpoint: Endpoint) -> dict[str, str]:
    """The endpoint's key and extra headers (values from the environment; never logged)."""
    headers: dict[str, str] = {}
    if endpoint.api_key_env and os.environ.get(endpoint.api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[endpoint.api_key_env]}"
    for name, value in endpoint.extra_headers.items():
        headers[name] = os.environ.get(value.name, "") if isinstance(value, EnvVar) else value
    return headers


class OpenAIBatches:
    """One endpoint's batch API over an open aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: Endpoint) -> None:
        self.session = session
        self.endpoint = endpoint
        self.base = endpoint.api_url
        self.headers = auth_headers(endpoint)

    async def _call(self, method: str, path: str, *, json: Any = None, data: Any = None,
                    params: Mapping[str, str] | None = None, what: str) -> dict[str, Any]:
        delay = 0.5
        for attempt in range(1, _TRIES + 1):
            body = data() if callable(data) else data
            try:
                async with self.session.request(method, self.base + path, json=json, data=body, params=params,
                                                headers=self.headers) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    try:
                        out: dict[str, Any] = orjson.loads(raw)
                        return out
                    except orjson.JSONDecodeError:
                        problem = f"a {status} reply that is not JSON"
                else:
                    problem = f"http_{status}: {_message(raw)}"
                    if status != 429 and status < 500:
                        raise BatchError(f"{self.endpoint.name} ({self.base}): {what} failed: {problem}", status)
            if attempt == _TRIES:
                raise BatchError(f"{self.endpoint.name} ({self.base}): {what} failed {_TRIES} times: {problem}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    async def _pages(self, path: str, extra: Mapping[str, str], what: str) -> AsyncIterator[dict[str, Any]]:
        after: str | None = None
        while True:
            params = {"limit": "100", **extra, **({"after": after} if after else {})}
            page = await self._call("GET", path, params=params, what=what)
            data = page.get("data") or []
            for item in data:
                yield item
            if not page.get("has_more") or not data:
                return
            after = page.get("last_id") or data[-1].get("id")

    async def find_file(self, filename: str, size: int) -> str | None:
        """A complete uploaded input file of this name (an upload a kill interrupted after it landed).

        A server that cannot list files (405/404 on ``GET /files``) gets the file again: an input file
        costs nothing, only a batch is paid, and batches are always found by their tag."""
        try:
            async for f in self._pages("/files", {"purpose": "batch"}, "listing files"):
                if f.get("filename") == filename and f.get("bytes") == size and f.get("status") != "error":
                    return str(f["id"])
        except BatchError as exc:
            if exc.status not in (404, 405):
                raise
        return None

    async def upload(self, path: Path, filename: str) -> str:
        def form() -> aiohttp.FormData:  # a fresh form per attempt: the file is streamed from disk
            fd = aiohttp.FormData()
            fd.add_field("purpose", "batch")
            fd.add_field("file", path.open("rb"), filename=filename, content_type="application/jsonl")
            return fd

        out = await self._call("POST", "/files", data=form, what=f"uploading {path.name}")
        return str(out["id"])

    async def find_batch(self, tag: str) -> dict[str, Any] | None:
        """The batch whose metadata carries ``tag`` (created by a process that died before recording it)."""
        async for b in self._pages("/batches", {}, "listing batches"):
            if (b.get("metadata") or {}).get(TAG_KEY) == tag:
                return b
        return None

    async def create(self, file_id: str, window: str, tag: str) -> dict[str, Any]:
        return await self._call("POST", "/batches", json={"input_file_id": file_id, "endpoint": CHAT_URL,
                                                          "completion_window": window,
                                                          "metadata": {TAG_KEY: tag}},
                                what=f"creating the batch of file {file_id}")

    async def get(self, batch_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/batches/{batch_id}", what=f"polling batch {batch_id}")

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/batches/{batch_id}/cancel", what=f"cancelling batch {batch_id}")

    async def lines(self, file_id: str) -> AsyncIterator[bytes]:
        """The lines of a result file, read as they arrive (not the whole file in memory)."""
        async with self.session.get(f"{self.base}/files/{file_id}/content", headers=self.headers) as resp:
            if resp.status != 200:
                raise BatchError(f"{self.endpoint.name}: reading file {file_id} failed: "
                                 f"http_{resp.status}: {_message(await resp.read())}")
            buf = b""
            async for piece in resp.content.iter_chunked(1 << 16):
                buf += piece
                *whole, buf = buf.split(b"\n")
                for line in whole:
                    if line.strip():
                        yield line
            if buf.strip():
                yield buf


def _message(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
        msg = data.get("error", {}).get("message") if isinstance(data, dict) else None
    except (orjson.JSONDecodeError, AttributeError):
        msg = None
    return str(msg or raw[:200].decode("utf-8", "replace"))
