"""Collects one endpoint's batch requests into input files on disk, cut by count and size.

Each request becomes one JSONL line (``{"custom_id", "method", "url", "body"}`` for OpenAI's protocol,
``{"custom_id", "params"}`` with the body in the Messages shape for Anthropic's) appended to the open
file at once: the lines are streamed to disk, never held in memory; only their count, byte size and a
running sha256 are. A file is cut when the next line would pass ``max_requests`` or ``max_bytes`` (and
at the end of a pass); the cut file is announced to the ledger (``intent``) before anything uploads it.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Mapping
from typing import IO, Any

import orjson

from ..batch_options import BatchOptions
from .errors import BatchError
from .ledger import Chunk, Ledger
from .messages import ConversionError, chat_to_params

CHAT_URL = "/v1/chat/completions"


class ChunkWriter:
    """The open input file of one endpoint role (``role``) in the ledger's folder."""

    def __init__(self, ledger: Ledger, role: str, options: BatchOptions) -> None:
        self.ledger = ledger
        self.role = role
        self.options = options
        self._file: IO[bytes] | None = None
        self._name = ""
        self._n = 0
        self._bytes = 0
        self._sha = hashlib.sha256()
        self.cut_chunks: list[Chunk] = []

    def add(self, custom_id: str, body: Mapping[str, Any]) -> None:
        line = orjson.dumps(self._row(custom_id, body)) + b"\n"
        if len(line) > self.options.max_bytes:
            raise BatchError(f"{self.role}: one request is {len(line)} bytes, more than batch.max_bytes "
                             f"({self.options.max_bytes}); raise it or send this endpoint live")
        if self._file is not None and (self._n + 1 > self.options.max_requests
                                       or self._bytes + len(line) > self.options.max_bytes):
            self.cut()
        if self._file is None:
            self._name = uuid.uuid4().hex[:16]
            self._file = (self.ledger.folder / f"pending-{self._name}.jsonl").open("wb")
        self._file.write(line)
        self._sha.update(line)
        self._n += 1
        self._bytes += len(line)

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

    def cut(self) -> Chunk | None:
        """Close the open file and record its intent; the chunk (None if nothing was pending)."""
        f, self._file = self._file, None
        if f is None:
            return None
        f.flush()
        os.fsync(f.fileno())
        f.close()
        path = f.name if isinstance(f.name, str) else str(f.name)
        name = self.ledger.next_name()
        chunk = self.ledger.intent(name, self.role, self.ledger.folder / os.path.basename(path), self._n,
                                   self._sha.hexdigest())
        self.cut_chunks.append(chunk)
        self._n, self._bytes, self._sha = 0, 0, hashlib.sha256()
        return chunk
