"""Collects one endpoint's batch requests into input files on disk, cut by count and size.

Each request becomes one JSONL line (``{"custom_id", "method", "url", "body"}`` for OpenAI's protocol,
``{"custom_id", "params"}`` with the body in the Messages shape for Anthropic's) appended to the open
file at once: the lines are streamed to disk, never held in memory; only their count, byte size and a
running sha256 are. A file is cut when it holds ``max_requests`` lines or the next line would pass
``max_bytes`` (``"size"``), when its first line is ``max_wait`` seconds old (``"age"``: checked as lines
are added and by ``session.BatchSession`` while it waits for batches) or when nothing more can join it
(``"stage"``, see the session); the cut file is announced to the ledger (``intent``, with that reason)
before anything uploads it.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import IO, Any

import numpy as np
import orjson

from ..batch_options import BatchOptions
from .errors import BatchError
from .ledger import Chunk, Ledger
from .messages import ConversionError, chat_to_params

CHAT_URL = "/v1/chat/completions"


class ChunkWriter:
    """The open input file of one endpoint role (``role``) in the ledger's folder."""

    def __init__(self, ledger: Ledger, role: str, options: BatchOptions,
                 on_cut: Callable[[Chunk, np.ndarray], None] | None = None) -> None:
        self.ledger = ledger
        self.on_cut = on_cut  # told each cut chunk and its lines' keys (sorted uint64)
        self.keys: set[int] = set()  # the keys (``key``) of the open file's lines
        self.role = role
        self.options = options
        self._file: IO[bytes] | None = None
        self._name = ""
        self._n = 0
        self._bytes = 0
        self._sha = hashlib.sha256()
        self.opened_at = 0.0  # time.monotonic() of the open file's first line
        self.cut_chunks: list[Chunk] = []

    def add(self, custom_id: str, body: Mapping[str, Any], key: int | None = None) -> None:
        line = orjson.dumps(self._row(custom_id, body)) + b"\n"
        if len(line) > self.options.max_bytes:
            raise BatchError(f"{self.role}: one request is {len(line)} bytes, more than batch.max_bytes "
                             f"({self.options.max_bytes}); raise it or send this endpoint live")
        if self._file is not None and self._bytes + len(line) > self.options.max_bytes:
            self.cut("size")
        if self.aged(time.monotonic()):
            self.cut("age")
        if self._file is None:
            self._name = uuid.uuid4().hex[:16]
            self._file = (self.ledger.folder / f"pending-{self._name}.jsonl").open("wb")
            self.opened_at = time.monotonic()
        self._file.write(line)
        self._sha.update(line)
        self._n += 1
        self._bytes += len(line)
        if key is not None:
            self.keys.add(key)
        if self._n >= self.options.max_requests:  # full: nothing can join it, so it need not wait
            self.cut("size")

    def aged(self, now: float) -> bool:
        """Whether the open file's first line is ``max_wait`` seconds old at ``now`` (monotonic)."""
        return self._file is not None and now - self.opened_at >= self.options.max_wait

    @property
    def deadline(self) -> float | None:
        """When (monotonic) the open file is cut by age; None when no file is open."""
        return None if self._file is None else self.opened_at + self.options.max_wait

    def _row(self, custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.options.protocol == "anthropic":
            try:
                return {"custom_id": custom_id, "params": chat_to_params(body)}
            except ConversionError as exc:
                raise BatchError(f"{self.role}: this request cannot go to Anthropic's Message Batches: {exc}") from None
        return {"custom_id": custom_id, "method": "POST", "url": CHAT_URL, "body": body}

    @property
    def pending(self) -> int:
        return self._n

    def cut(self, reason: str = "stage") -> Chunk | None:
        """Close the open file and record its intent (with why it was cut: ``"size"``, ``"age"`` or
        ``"stage"``); the chunk (None if nothing was pending)."""
        f, self._file = self._file, None
        if f is None:
            return None
        f.flush()
        os.fsync(f.fileno())
        f.close()
        path = f.name if isinstance(f.name, str) else str(f.name)
        name = self.ledger.next_name()
        chunk = self.ledger.intent(name, self.role, self.ledger.folder / os.path.basename(path), self._n,
                                   self._sha.hexdigest(), cut=reason)
        self.cut_chunks.append(chunk)
        self._n, self._bytes, self._sha = 0, 0, hashlib.sha256()
        keys, self.keys = self.keys, set()
        if self.on_cut is not None:
            arr = np.fromiter(keys, dtype=np.uint64, count=len(keys))
            arr.sort()
            self.on_cut(chunk, arr)
        return chunk
