"""The run folder's record of its batches: crash-safe, so nothing is ever submitted or paid twice.

``RUN_DIR/batches/ledger.jsonl`` holds one line per step of a chunk (an input file of one endpoint),
each fsynced before the step it announces is taken or right after the provider confirmed it:

- ``intent``: the chunk's file, its role (the endpoint), request count and sha256, its *tag*
  (the folder's id + the chunk's name) and why it was cut (``cut``: size, age or stage), written once
  the file is complete and before any upload;
- ``uploaded``: the provider's file id (OpenAI's protocol);
- ``creating``: the time a create call is about to be sent (Anthropic's protocol, whose batches carry
  no tag: see ``anthropic.AnthropicBatches.find_batch``);
- ``created``: the batch id;
- ``done``: its results are in the checkpoints (or it failed as a whole, with the reason).

A process killed between two steps leaves a chunk whose provider state is found again on the next
start (the protocol's ``submit``): an uploaded file by its filename (the tag), a created batch by its
``metadata`` tag (OpenAI) or by its creation time and request count (Anthropic), so the next step is
never repeated. A pending input file with no ``intent`` line was
never uploaded and is deleted.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

LEDGER = "ledger.jsonl"
FOLDER = "batches"


@dataclass
class Chunk:
    """One input file and what the provider made of it so far."""

    name: str
    role: str
    path: Path
    requests: int
    sha256: str
    tag: str
    file_id: str | None = None
    batch_id: str | None = None
    done: bool = False
    creating_at: float | None = None  # when a create call was last about to be sent (epoch seconds)
    status: str | None = None  # the batch's last status
    error: str | None = None  # a batch that failed as a whole

    @property
    def filename(self) -> str:
        return f"{self.tag}.jsonl"


class Ledger:
    """The chunks of one run folder, read from and appended to ``batches/ledger.jsonl``."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = Path(run_dir) / FOLDER
        self.path = self.folder / LEDGER
        self.chunks: dict[str, Chunk] = {}
        self.folder.mkdir(parents=True, exist_ok=True)
        tag_file = self.folder / "tag"
        if not tag_file.exists():  # the folder's id, in every chunk's tag (written once, atomically)
            tmp = tag_file.with_suffix(".tmp")
            tmp.write_text(uuid.uuid4().hex[:16], encoding="utf-8")
            os.replace(tmp, tag_file)
        self.folder_tag = tag_file.read_text(encoding="utf-8").strip()
        self._read()

    def _read(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for line in f:
                try:
                    ev = orjson.loads(line)
                except orjson.JSONDecodeError:  # a torn last line: that step was not confirmed
                    continue
                self._apply(ev)

    def _apply(self, ev: dict[str, Any]) -> None:
        name = ev["chunk"]
        if ev["event"] == "intent":
            self.chunks[name] = Chunk(name, ev["role"], self.folder / ev["file"], ev["requests"], ev["sha256"],
                                      ev["tag"])
            return
        c = self.chunks[name]
        if ev["event"] == "uploaded":
            c.file_id = ev["file_id"]
        elif ev["event"] == "creating":
            c.creating_at = ev["at"]
        elif ev["event"] == "created":
            c.batch_id = ev["batch_id"]
        elif ev["event"] == "status":
            c.status = ev["status"]
        elif ev["event"] == "done":
            c.done, c.status, c.error = True, ev.get("status"), ev.get("error")

    def _append(self, ev: dict[str, Any]) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, orjson.dumps(ev) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        self._apply(ev)

    def next_name(self) -> str:
        return f"c{len(self.chunks) + 1:05d}"

    def intent(self, name: str, role: str, path: Path, requests: int, sha256: str, cut: str | None = None) -> Chunk:
        ev = {"chunk": name, "event": "intent", "role": role, "file": path.name, "requests": requests,
              "sha256": sha256, "tag": f"arena-{self.folder_tag}-{name}"}
        if cut is not None:  # why the file was cut (queue.ChunkWriter.cut); read by people, not by _apply
            ev["cut"] = cut
        self._append(ev)
        return self.chunks[name]

    def uploaded(self, c: Chunk, file_id: str) -> None:
        self._append({"chunk": c.name, "event": "uploaded", "file_id": file_id})

    def creating(self, c: Chunk, at: float) -> None:
        self._append({"chunk": c.name, "event": "creating", "at": at})

    def created(self, c: Chunk, batch_id: str) -> None:
        self._append({"chunk": c.name, "event": "created", "batch_id": batch_id})

    def status(self, c: Chunk, status: str) -> None:
        if status != c.status:
            self._append({"chunk": c.name, "event": "status", "status": status})

    def done(self, c: Chunk, status: str, error: str | None = None) -> None:
        self._append({"chunk": c.name, "event": "done", "status": status, "error": error})

    def open_chunks(self) -> list[Chunk]:
        return [c for c in self.chunks.values() if not c.done]

    def drop_strays(self) -> int:
        """Delete pending input files that no intent names (never uploaded); how many."""
        named = {c.path.name for c in self.chunks.values()}
        n = 0
        for p in self.folder.glob("pending-*.jsonl"):
            if p.name not in named:
                p.unlink()
                n += 1
        return n
