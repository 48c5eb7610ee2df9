"""Takes each chunk from its ledger state to results in the checkpoints, never repeating a paid step.

For a chunk: find or upload its file, find or create its batch, poll it (``poll_interval``, growing
1.5x per poll up to 10x), then read its output and error files line by line, writing each row to the
run folder's checkpoints as it is read: a success under ``BATCH_RESULTS`` (keyed by the request key the
custom_id carries), a failed or expired row under ``BATCH_ERRORS`` (keyed by the key and the try), so
``chat.BatchChat`` can send it again or give up with the reason. A batch that failed as a whole is a
:class:`BatchError` naming it and its first bad line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import orjson

from ..batch_options import BatchOptions
from ..store import RunStore, content_key
from ..store.shards import LayeredStore
from .errors import BatchError
from .ledger import Chunk, Ledger
from .openai import TERMINAL, OpenAIBatches

log = logging.getLogger(__name__)

BATCH_RESULTS = "batch_results"
BATCH_ERRORS = "batch_errors"


def error_key(key_hex: str, attempt: int) -> bytes:
    return content_key({"batch_error": key_hex, "try": attempt})


def split_custom_id(custom_id: str) -> tuple[str, int]:
    """("<key hex>", try) from "<key hex>-<try>"."""
    key_hex, _, n = custom_id.rpartition("-")
    return key_hex, int(n)


async def drive(chunk: Chunk, api: OpenAIBatches, options: BatchOptions, ledger: Ledger,
                store: RunStore | LayeredStore, sleep: Callable[[float], Any] = anyio.sleep) -> None:
    """Take one chunk from wherever the ledger left it to done."""
    size = chunk.path.stat().st_size if chunk.path.exists() else -1
    if chunk.file_id is None:
        found = await api.find_file(chunk.filename, size)  # an upload a kill interrupted after it landed
        if found is None:
            if size < 0:
                raise BatchError(f"batch input {chunk.path} is gone but was never uploaded; delete "
                                 f"{ledger.path} to start the batches of this folder again")
            found = await api.upload(chunk.path, chunk.filename)
        ledger.uploaded(chunk, found)
    if chunk.batch_id is None:
        assert chunk.file_id is not None
        batch = await api.find_batch(chunk.tag)  # created by a process that died before recording it
        if batch is None:
            batch = await api.create(chunk.file_id, options.completion_window, chunk.tag)
        ledger.created(chunk, str(batch["id"]))
    assert chunk.batch_id is not None
    wait = options.poll_interval
    while True:
        batch = await api.get(chunk.batch_id)
        status = str(batch.get("status"))
        ledger.status(chunk, status)
        if status in TERMINAL:
            break
        await sleep(wait)
        wait = min(wait * 1.5, options.poll_interval * 10)
    if status == "failed":
        problem = _first_error(batch)
        error = f"batch {chunk.batch_id} ({chunk.path}) failed: {problem}"
        ledger.done(chunk, status, error)
        raise BatchError(error + "; fix the cause and rerun (its requests are queued again)")
    await _read_results(chunk, api, batch, store)
    ledger.done(chunk, status)


def _first_error(batch: dict[str, Any]) -> str:
    data = ((batch.get("errors") or {}).get("data")) or []
    if not data:
        return "no reason given"
    e = data[0]
    line = f"line {e['line']}: " if e.get("line") is not None else ""
    return f"{line}{e.get('code') or 'error'}: {e.get('message') or ''}".rstrip(": ")


async def _read_results(chunk: Chunk, api: OpenAIBatches, batch: dict[str, Any],
                        store: RunStore | LayeredStore) -> None:
    seen: set[str] = set()
    bid = chunk.batch_id
    for fid in (batch.get("output_file_id"), batch.get("error_file_id")):
        if not fid:
            continue
        async for line in api.lines(str(fid)):
            row = orjson.loads(line)
            cid = str(row.get("custom_id"))
            seen.add(cid)
            key_hex, attempt = split_custom_id(cid)
            resp = row.get("response") or {}
            code = resp.get("status_code")
            if code == 200 and isinstance(resp.get("body"), dict):
                store.put(BATCH_RESULTS, bytes.fromhex(key_hex), {"body": resp["body"], "batch": bid, "try": attempt})
                continue
            err = row.get("error") or {}
            if err:
                reason = f"{err.get('code') or 'error'}: {err.get('message') or ''}"
            else:
                body = resp.get("body") or {}
                msg = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
                reason = f"http_{code}: {msg or ''}"
            store.put(BATCH_ERRORS, error_key(key_hex, attempt), {"error": reason.rstrip(": "), "batch": bid})
    status = batch.get("status")
    # rows in neither file (the batch expired or was cancelled before them, or the provider lost them)
    why = f"batch_{status}: batch {bid} ended {status} before this row ran" if status in ("expired", "cancelled") \
        else f"missing: batch {bid} ended {status} without a result for this row"
    with chunk.path.open("rb") as f:
        for line in f:
            cid = orjson.loads(line)["custom_id"]
            if cid not in seen:
                key_hex, attempt = split_custom_id(cid)
                store.put(BATCH_ERRORS, error_key(key_hex, attempt), {"error": why, "batch": bid})
    log.info("batch %s (%s): %s, %d rows read", bid, chunk.name, status, len(seen))
