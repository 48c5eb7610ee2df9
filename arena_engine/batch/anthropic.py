"""Anthropic's Message Batches API as the driver uses it (``batch.protocol = "anthropic"``).

``POST /v1/messages/batches`` with ``{"requests": [{"custom_id", "params"}]}`` (the chunk's file holds
those rows, converted by ``messages.chat_to_params`` when they were queued; the body is streamed from
the file), ``GET /v1/messages/batches`` (to find a batch created but not recorded),
``GET /v1/messages/batches/{id}`` (``processing_status``: in_progress, canceling, ended), its
``results_url`` (JSONL streamed line by line, each row ``succeeded`` with a Message, ``errored``,
``canceled`` or ``expired``) and ``POST /v1/messages/batches/{id}/cancel``. Headers ``x-api-key`` (from
the endpoint's ``api_key_env``) and ``anthropic-version: 2023-06-01``.

There is no file upload and a batch carries no metadata, so a batch created by a process that died
before recording its id is found by what the ledger knows: its ``creating`` line (fsynced before the
create call) gives the time, and a batch of the workspace created from 5 minutes before that time on,
with the chunk's request count and not recorded for another chunk of this run folder, is taken as the
chunk's; creates are made one at a time per run folder, so a kill leaves at most one such chunk.
Two such batches (another client of the workspace made one of the same size meanwhile) are an error
naming them (never a second create). When the results are read,
a row whose custom_id is not in the chunk's file stops the run (``BatchError``): the guess was wrong.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from ..batch_options import BatchOptions
from ..client import Endpoint
from .errors import BatchError
from .http import BatchHttp, Transient, extra_headers
from .ledger import Chunk, Ledger
from .messages import message_to_chat

VERSION = "2023-06-01"
TERMINAL: tuple[str, ...] = ("ended",)
SKEW = 300.0  # seconds a provider's clock may be behind ours
Row = tuple[str, "dict[str, Any] | None", str]


def auth_headers(endpoint: Endpoint) -> dict[str, str]:
    """``x-api-key`` (from the environment; never logged), the API version and the extra headers."""
    headers = {"anthropic-version": VERSION}
    if endpoint.api_key_env and os.environ.get(endpoint.api_key_env):
        headers["x-api-key"] = os.environ[endpoint.api_key_env]
    headers.update(extra_headers(endpoint))
    return headers


_LOCKS: dict[tuple[Path, int], asyncio.Lock] = {}


def _lock(ledger: Ledger) -> asyncio.Lock:
    """The run folder's create lock in this event loop."""
    return _LOCKS.setdefault((ledger.path, id(asyncio.get_running_loop())), asyncio.Lock())


def _epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _total(batch: Mapping[str, Any]) -> int:
    counts = batch.get("request_counts") or {}
    return sum(int(v or 0) for v in counts.values())


class AnthropicBatches(BatchHttp):
    """One endpoint's Message Batches API over an open aiohttp session."""

    TERMINAL: tuple[str, ...] = TERMINAL

    def __init__(self, session: aiohttp.ClientSession, endpoint: Endpoint) -> None:
        super().__init__(session, endpoint, auth_headers(endpoint))

    async def _pages(self) -> AsyncIterator[dict[str, Any]]:
        after: str | None = None
        while True:
            params = {"limit": "100", **({"after_id": after} if after else {})}
            page = await self._call("GET", "/messages/batches", params=params, what="listing message batches")
            data = page.get("data") or []
            for item in data:
                yield item
            if not page.get("has_more") or not data:
                return
            after = page.get("last_id") or data[-1].get("id")

    async def find_batch(self, chunk: Chunk, ledger: Ledger) -> dict[str, Any] | None:
        """The batch a process that died after its ``creating`` line made for this chunk (see the module)."""
        if chunk.creating_at is None:
            return None  # no create was ever sent for it
        claimed = {c.batch_id for c in ledger.chunks.values() if c.batch_id}
        found = []
        async for b in self._pages():  # newest first: stop once they are older than the intent
            at = _epoch(b.get("created_at"))
            if at is not None and at < chunk.creating_at - SKEW:
                break
            if b.get("id") not in claimed and _total(b) == chunk.requests:
                found.append(b)
        if len(found) > 1:
            ids = ", ".join(str(b.get("id")) for b in found)
            raise BatchError(f"{self.endpoint.name}: chunk {chunk.name} ({chunk.path}) was being created when the "
                             f"last run stopped, and {len(found)} batches could be it ({ids}); cancel the ones that "
                             f"are not this run's at the provider, then rerun")
        return found[0] if found else None

    def _body(self, chunk: Chunk) -> Any:
        async def stream() -> AsyncIterator[bytes]:  # {"requests": [<line>, ...]} without the file in memory
            yield b'{"requests":['
            first = True
            with chunk.path.open("rb") as f:
                for line in f:
                    line = line.rstrip(b"\n")
                    if line:
                        yield line if first else b"," + line
                        first = False
            yield b"]}"
        return stream()

    async def submit(self, chunk: Chunk, options: BatchOptions, ledger: Ledger) -> None:
        """Create the chunk's batch unless an earlier process did (then find it instead).

        One create at a time per run folder, so a kill leaves at most one chunk whose batch may exist
        unrecorded, and the batches of two such chunks of the same size are never confused."""
        async with _lock(ledger):
            await self._submit(chunk, ledger)

    async def _submit(self, chunk: Chunk, ledger: Ledger) -> None:
        found = await self.find_batch(chunk, ledger)
        if found is None:
            if not chunk.path.exists():
                raise BatchError(f"batch input {chunk.path} is gone but its batch was never created; delete "
                                 f"{ledger.path} to start the batches of this folder again")
            ledger.creating(chunk, time.time())
            delay = 0.5
            while found is None:  # one create at a time: after a lost reply, look before sending again
                try:
                    found = await self._call("POST", "/messages/batches", data=lambda: self._body(chunk),
                                             what=f"creating the message batch of {chunk.path.name}", tries=1)
                except Transient:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    found = await self.find_batch(chunk, ledger)
        ledger.created(chunk, str(found["id"]))

    async def get(self, batch_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/messages/batches/{batch_id}", what=f"polling message batch {batch_id}")

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/messages/batches/{batch_id}/cancel",
                                what=f"cancelling message batch {batch_id}")

    @staticmethod
    def status_of(batch: Mapping[str, Any]) -> str:
        return str(batch.get("processing_status"))

    @staticmethod
    def failure(batch: Mapping[str, Any]) -> str | None:
        return None  # a Message Batch is refused at create (a BatchError then) or ends with rows

    async def rows(self, batch: Mapping[str, Any]) -> AsyncIterator[Row]:
        """Each result row: (custom_id, the chat completion body or None, reason)."""
        url = batch.get("results_url") or f"/messages/batches/{batch.get('id')}/results"
        async for line in self._lines(str(url), f"the results of message batch {batch.get('id')}"):
            row = orjson.loads(line)
            cid = str(row.get("custom_id"))
            result = row.get("result") or {}
            kind = result.get("type")
            if kind == "succeeded" and isinstance(result.get("message"), dict):
                yield cid, message_to_chat(result["message"]), ""
            elif kind == "errored":
                err = result.get("error") or {}
                if isinstance(err.get("error"), dict):
                    err = err["error"]
                yield cid, None, f"{err.get('type') or 'error'}: {err.get('message') or ''}".rstrip(": ")
            else:  # canceled, expired
                yield cid, None, f"batch_{kind}: batch {batch.get('id')} ended before this row ran"
