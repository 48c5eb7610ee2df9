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
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio
import numpy as np
import orjson

from ..batch_options import BatchOptions
from ..store import RunStore, content_key
from ..store.layered import LayeredStore
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


class _Expected:
    """The custom_ids of a chunk's file, held as (its key's first 8 bytes, try) in sorted numpy arrays:
    12 bytes a row where a set of the strings took about 120 (a chunk is up to 100,000 rows, and two
    chunks may be read at once). Two keys of one chunk sharing their first 8 bytes (about 1 in 10**10)
    fall back to the strings themselves."""

    def __init__(self, path: Path) -> None:
        self.path = path
        heads: list[int] = []
        tries: list[int] = []
        for cid in _custom_ids(path):
            key_hex, attempt = split_custom_id(cid)
            heads.append(int(key_hex[:16], 16))
            tries.append(attempt)
        order = np.argsort(np.array(heads, dtype=np.uint64), kind="stable")
        self.heads = np.array(heads, dtype=np.uint64)[order]
        self.tries = np.array(tries, dtype=np.int64)[order]
        del heads, tries
        self.seen = np.zeros(len(self.heads), dtype=bool)
        self.exact: set[str] | None = None
        if len(self.heads) > 1 and bool((self.heads[1:] == self.heads[:-1]).any()):
            self.exact = set(_custom_ids(path))
            self.exact_seen: set[str] = set()

    def mark(self, cid: str) -> bool:
        """Note the row as answered; False if its custom_id is not in the file."""
        try:
            key_hex, attempt = split_custom_id(cid)
            head = int(key_hex[:16], 16)
        except ValueError:
            return False
        if self.exact is not None:
            if cid not in self.exact:
                return False
            self.exact_seen.add(cid)
            return True
        i = int(np.searchsorted(self.heads, np.uint64(head)))
        if len(key_hex) != 32 or i >= len(self.heads) or int(self.heads[i]) != head or int(self.tries[i]) != attempt:
            return False
        self.seen[i] = True
        return True

    @property
    def answered(self) -> int:
        return len(self.exact_seen) if self.exact is not None else int(self.seen.sum())

    def missing(self) -> list[str]:
        """The custom_ids no row answered, in order."""
        if self.answered == len(self.heads):
            return []
        if self.exact is not None:
            return sorted(self.exact - self.exact_seen)
        unseen = {(int(h), int(t)) for h, t in zip(self.heads[~self.seen], self.tries[~self.seen], strict=True)}
        out = []
        for cid in _custom_ids(self.path):
            key_hex, attempt = split_custom_id(cid)
            if (int(key_hex[:16], 16), attempt) in unseen:
                out.append(cid)
        return sorted(out)


def _custom_ids(path: Path) -> Iterator[str]:
    """The custom_id of each line of a chunk's input file (read without parsing its body: the writer
    puts it first)."""
    with path.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            if line.startswith(_CID):
                end = line.find(b'"', len(_CID))
                if end > 0:
                    yield line[len(_CID):end].decode()
                    continue
            yield str(orjson.loads(line)["custom_id"])


_CID = b'{"custom_id":"'


async def _read_results(chunk: Chunk, api: BatchApi, batch: dict[str, Any], status: str,
                        store: RunStore | LayeredStore) -> None:
    expected = _Expected(chunk.path)
    bid = chunk.batch_id
    async for cid, body, reason in api.rows(batch):
        if not expected.mark(cid):
            raise BatchError(f"batch {bid} returned a row ({cid}) that is not in {chunk.path}: it is not chunk "
                             f"{chunk.name}'s batch; its ledger line is in {chunk.path.parent}")
        key_hex, attempt = split_custom_id(cid)
        if body is not None:
            store.put(BATCH_RESULTS, bytes.fromhex(key_hex), {"body": body, "batch": bid, "try": attempt})
        else:
            store.put(BATCH_ERRORS, error_key(key_hex, attempt), {"error": reason, "batch": bid})
    # rows in no result (the batch expired or was cancelled before them, or the provider lost them)
    why = f"batch_{status}: batch {bid} ended {status} before this row ran" if status in ("expired", "cancelled") \
        else f"missing: batch {bid} ended {status} without a result for this row"
    for cid in expected.missing():
        key_hex, attempt = split_custom_id(cid)
        store.put(BATCH_ERRORS, error_key(key_hex, attempt), {"error": why, "batch": bid})
    log.info("batch %s (%s): %s, %d rows read", bid, chunk.name, status, expected.answered)
