"""The batch input files are streamed to disk: writing many requests holds none of them in memory;
files are cut by count and by size, and the ledger's intent names each file with its sha256."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import orjson

from arena_engine.batch.ledger import Ledger
from arena_engine.batch.queue import ChunkWriter
from arena_engine.batch_options import BatchOptions


def test_writing_requests_holds_none_of_them_in_memory(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    writer = ChunkWriter(ledger, "m", BatchOptions(max_requests=100_000))
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 1000}]}
    tracemalloc.start()
    for i in range(5000):  # about 5 MB of lines
        writer.add(f"{i:032x}-1", body)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000, f"{peak} bytes traced while writing 5 MB of requests"
    chunk = writer.cut()
    assert chunk is not None and chunk.requests == 5000
    data = chunk.path.read_bytes()
    assert len(data) > 5_000_000
    assert hashlib.sha256(data).hexdigest() == chunk.sha256
    assert Ledger(tmp_path).chunks[chunk.name].sha256 == chunk.sha256  # the intent is on disk


def test_files_are_cut_by_count_and_by_size(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    body = {"model": "m", "messages": [{"role": "user", "content": "y" * 400}]}
    line = len(orjson.dumps({"custom_id": f"{0:032x}-1", "method": "POST", "url": "/v1/chat/completions",
                             "body": body})) + 1
    by_count = ChunkWriter(ledger, "a", BatchOptions(max_requests=7))
    by_size = ChunkWriter(ledger, "b", BatchOptions(max_bytes=3 * line + 10))
    for i in range(20):
        by_count.add(f"{i:032x}-1", body)
        by_size.add(f"{i:032x}-1", body)
    by_count.cut()
    by_size.cut()
    assert [c.requests for c in by_count.cut_chunks] == [7, 7, 6]
    assert [c.requests for c in by_size.cut_chunks] == [3, 3, 3, 3, 3, 3, 2]
    for c in by_size.cut_chunks:
        assert c.path.stat().st_size <= 3 * line + 10
    assert len(Ledger(tmp_path).open_chunks()) == 10


def test_a_pending_file_without_an_intent_is_dropped_on_the_next_start(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    w = ChunkWriter(ledger, "a", BatchOptions())
    w.add(f"{1:032x}-1", {"model": "m", "messages": []})  # killed before the cut: never announced, never uploaded
    assert w._file is not None
    w._file.close()  # what the kill leaves: the file, and no intent
    kept = ChunkWriter(ledger, "a", BatchOptions())
    kept.add(f"{2:032x}-1", {"model": "m", "messages": []})
    chunk = kept.cut()
    assert chunk is not None
    assert Ledger(tmp_path).drop_strays() == 1
    assert [p.name for p in (tmp_path / "batches").glob("pending-*.jsonl")] == [chunk.path.name]
