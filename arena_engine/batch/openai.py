"""The OpenAI Batch API (and the providers that copy it) as the driver uses it.

``POST /v1/files`` (multipart, ``purpose=batch``; the file is streamed from disk), ``GET /v1/files``
(to find a file an interrupted upload may have left), ``POST /v1/batches`` (with ``metadata`` carrying
the chunk's tag), ``GET /v1/batches`` (to find a batch created but not recorded),
``GET /v1/batches/{id}``, ``GET /v1/files/{id}/content`` (streamed line by line) and
``POST /v1/batches/{id}/cancel``. Calls are made by ``http.BatchHttp``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from ..batch_options import BatchOptions
from ..client import Endpoint
from .errors import BatchError
from .http import BatchHttp, extra_headers
from .ledger import Chunk, Ledger
from .queue import CHAT_URL

TAG_KEY = "arena_chunk"  # the batch metadata key that holds a chunk's tag
TERMINAL = ("completed", "failed", "expired", "cancelled")
#: a row as the driver stores it: (custom_id, the chat completion body, or None and the reason)
Row = tuple[str, "dict[str, Any] | None", str]


def auth_headers(endpoint: Endpoint) -> dict[str, str]:
    """The endpoint's key and extra headers (values from the environment; never logged)."""
    headers: dict[str, str] = {}
    if endpoint.api_key_env and os.environ.get(endpoint.api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[endpoint.api_key_env]}"
    headers.update(extra_headers(endpoint))
    return headers


class OpenAIBatches(BatchHttp):
    """One endpoint's OpenAI batch API over an open aiohttp session."""

    TERMINAL: tuple[str, ...] = TERMINAL

    def __init__(self, session: aiohttp.ClientSession, endpoint: Endpoint) -> None:
        super().__init__(session, endpoint, auth_headers(endpoint))

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

    async def submit(self, chunk: Chunk, options: BatchOptions, ledger: Ledger) -> None:
        """Upload the chunk's file and create its batch, each only if no earlier process did."""
        size = chunk.path.stat().st_size if chunk.path.exists() else -1
        if chunk.file_id is None:
            found = await self.find_file(chunk.filename, size)  # an upload a kill interrupted after it landed
            if found is None:
                if size < 0:
                    raise BatchError(f"batch input {chunk.path} is gone but was never uploaded; delete "
                                     f"{ledger.path} to start the batches of this folder again")
                found = await self.upload(chunk.path, chunk.filename)
            ledger.uploaded(chunk, found)
        assert chunk.file_id is not None
        batch = await self.find_batch(chunk.tag)  # created by a process that died before recording it
        if batch is None:
            batch = await self.create(chunk.file_id, options.completion_window, chunk.tag)
        ledger.created(chunk, str(batch["id"]))

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
        """Create the batch once: a create whose reply never came (a timeout, a dropped connection, a 5xx
        after the server may have acted) is not sent again before the batches are searched for the
        chunk's tag, so a lost reply is not paid twice."""
        return await self._call("POST", "/batches", json={"input_file_id": file_id, "endpoint": CHAT_URL,
                                                          "completion_window": window,
                                                          "metadata": {TAG_KEY: tag}},
                                what=f"creating the batch of file {file_id}", landed=lambda: self.find_batch(tag))

    async def get(self, batch_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/batches/{batch_id}", what=f"polling batch {batch_id}")

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/batches/{batch_id}/cancel", what=f"cancelling batch {batch_id}")

    @staticmethod
    def status_of(batch: Mapping[str, Any]) -> str:
        return str(batch.get("status"))

    @staticmethod
    def failure(batch: Mapping[str, Any]) -> str | None:
        """Why the batch failed as a whole (its first bad line), or None if it did not."""
        if batch.get("status") != "failed":
            return None
        data = ((batch.get("errors") or {}).get("data")) or []
        if not data:
            return "no reason given"
        e = data[0]
        line = f"line {e['line']}: " if e.get("line") is not None else ""
        return f"{line}{e.get('code') or 'error'}: {e.get('message') or ''}".rstrip(": ")

    async def lines(self, file_id: str) -> AsyncIterator[bytes]:
        async for line in self._lines(f"/files/{file_id}/content", f"file {file_id}"):
            yield line

    async def rows(self, batch: Mapping[str, Any]) -> AsyncIterator[Row]:
        """Each row of the output and error files: (custom_id, body or None, reason)."""
        for fid in (batch.get("output_file_id"), batch.get("error_file_id")):
            if not fid:
                continue
            async for line in self.lines(str(fid)):
                row = orjson.loads(line)
                cid = str(row.get("custom_id"))
                resp = row.get("response") or {}
                code = resp.get("status_code")
                if code == 200 and isinstance(resp.get("body"), dict):
                    yield cid, resp["body"], ""
                    continue
                err = row.get("error") or {}
                if err:
                    reason = f"{err.get('code') or 'error'}: {err.get('message') or ''}"
                else:
                    body = resp.get("body") or {}
                    msg = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
                    reason = f"http_{code}: {msg or ''}"
                yield cid, None, reason.rstrip(": ")
