"""Takes each chunk from its ledger state to results in the checkpoints, never repeating a paid step.

For a chunk: submit it unless the ledger has its batch id (the protocol's ``submit`` finds a file or
batch an earlier process left before making one), poll it (``poll_interval``, growing 1.5x per poll up
to 10x), then read its result rows one by one, writing each to the run folder's checkpoints as it is
read: a success under ``BATCH_RESULTS`` (keyed by the request key the custom_id carries), a failed or
expired row under ``BATCH_ERRORS`` (keyed by the key and the try), so ``session.BatchChat`` can send it
again or give up with the reason. A row whose custom_id is not in the chunk's file is a
:class:`BatchError` (the batch is not this chunk's). A batch that failed as a whole is a
:class:`BatchError` naming it and its first bad line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

import anyio
import orjson

from ..batch_options import BatchOptions
from ..store import RunStore, content_key
from ..store.shards import LayeredStore
from .errors import BatchError
from .ledger import Chunk, Ledger

log = logging.getLogger(__name__)

BATCH_RESULTS = "batch_results"
BATCH_ERRORS = "batch_errors"


class BatchApi(Protocol):
    """What the driver needs of a provider's batch API (``openai.OpenAIBatches``, ``anthropic.AnthropicBatches``)."""

    TERMINAL: tuple[str, ...]

    async def submit(self, chunk: Chunk, options: BatchOptions, ledger: Ledger) -> None: ...
    async def get(self, batch_id: str) -> dict[str, Any]: ...
    async def cancel(self, batch_id: str) -> dict[str, Any]: ...
    def status_of(self, batch: Mapping[str, Any]) -> str: ...
    def failure(self, batch: Mapping[str, Any]) -> str | None: ...
    def rows(self, batch: Mapping[str, Any]) -> AsyncIterator[tuple[str, dict[str, Any] | None, str]]: ...


def error_key(key_hex: str, attempt: int) -> bytes:
    return content_key({"batch_error": key_hex, "try": attempt})


def split_custom_id(custom_id: str) -> tuple[str, int]:
    """("<key hex>", try) from "<key hex>-<try>"."""
    key_hex, _, n = custom_id.rpartition("-")
    return key_hex, int(n)


async def drive(chunk: Chunk, api: BatchApi, options: BatchOptions, ledger: Ledger,
                store: RunStore | LayeredStore, sleep: Callable[[float], Any] = anyio.sleep) -> None:
    """Take one chunk from wherever the ledger left it to done."""
    if chunk.batch_id is None:
        await api.submit(chunk, options, ledger)
    assert chunk.batch_id is not None
    wait = options.poll_interval
    while True:
        batch = await poll(chunk, api, ledger)
        if batch is not None:
            break
        await sleep(wait)
        wait = next_wait(wait, options)
    await finish(chunk, api, batch, ledger, store)


def next_wait(wait: float, options: BatchOptions) -> float:
    """The wait before the next status poll (1.5x the last, at most 10x ``poll_interval``)."""
    return min(wait * 1.5, options.poll_interval * 10)


async def poll(chunk: Chunk, api: BatchApi, ledger: Ledger) -> dict[str, Any] | None:
    """The submitted chunk's batch once it has ended (its status recorded in the ledger), else None."""
    assert chunk.batch_id is not None
    batch = await api.get(chunk.batch_id)
    status = api.status_of(batch)
    ledger.status(chunk, status)
    return batch if status in api.TERMINAL else None


async def finish(chunk: Chunk, api: BatchApi, batch: dict[str, Any], ledger: Ledger,
                 store: RunStore | LayeredStore) -> None:
    """Read an ended batch's rows into the checkpoints and mark the chunk done (or raise if it failed)."""
    status = api.status_of(batch)
    problem = api.failure(batch)
    if problem is not None:
        error = f"batch {chunk.batch_id} ({chunk.path}) failed: {problem}"
        ledger.done(chunk, status, error)
        raise BatchError(error + "; fix the cause and rerun (its requests are queued again)")
    await _read_results(chunk, api, batch, status, store)
    ledger.done(chunk, status)


async def _read_results(chunk: Chunk, api: BatchApi, batch: dict[str, Any], status: str,
                        store: RunStore | LayeredStore) -> None:
    with chunk.path.open("rb") as f:  # the chunk's custom_ids (about 40 bytes each; a chunk is at most 100,000)
        expected = {orjson.loads(line)["custom_id"] for line in f if line.strip()}
    seen: set[str] = set()
    bid = chunk.batch_id
    async for cid, body, reason in api.rows(batch):
        if cid not in expected:
            raise BatchError(f"batch {bid} returned a row ({cid}) that is not in {chunk.path}: it is not chunk "
                             f"{chunk.name}'s batch; its ledger line is in {chunk.path.parent}")
        seen.add(cid)
        key_hex, attempt = split_custom_id(cid)
        if body is not None:
            store.put(BATCH_RESULTS, bytes.fromhex(key_hex), {"body": body, "batch": bid, "try": attempt})
        else:
            store.put(BATCH_ERRORS, error_key(key_hex, attempt), {"error": reason, "batch": bid})
    # rows in no result (the batch expired or was cancelled before them, or the provider lost them)
    why = f"batch_{status}: batch {bid} ended {status} before this row ran" if status in ("expired", "cancelled") \
        else f"missing: batch {bid} ended {status} without a result for this row"
    for cid in sorted(expected - seen):
        key_hex, attempt = split_custom_id(cid)
        store.put(BATCH_ERRORS, error_key(key_hex, attempt), {"error": why, "batch": bid})
    log.info("batch %s (%s): %s, %d rows read", bid, chunk.name, status, len(seen))
