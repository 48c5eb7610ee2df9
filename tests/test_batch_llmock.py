"""Batch mode against an implementation of the OpenAI Batch API we did not write: llmock 0.2.2 (the
`test` extra), whose `/v1/files` and `/v1/batches` follow OpenAI's published reference.

The candidates and the baseline run in batch mode on llmock (its batches finish after 3 s); the judge
runs live on our simulator, so the verdicts are real. Every answer must come from llmock's batch
output, each chunk of the ledger must be exactly one batch at llmock (found by its metadata tag), and a
rerun must submit nothing. llmock cannot list files (405 on `GET /v1/files`): the client then uploads
again rather than guessing, which costs nothing (only batches are paid).
"""

from __future__ import annotations

import importlib.util
import json
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest

from arena_engine.batch.openai import TAG_KEY
from arena_engine.commands import run_batched
from arena_engine.config import config_from_dict
from arena_engine.pipeline import Arena
from arena_engine.sim import Latency, SimConfig, SimModel, SimServer

from .arena_helpers import dataset

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llmock") is None,
                                reason="llmock is not installed: pip install -e '.[test]' (it is in the test extra)")


def _batches(base: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{base}/v1/batches?limit=100", timeout=10) as resp:
        data: list[dict[str, Any]] = json.loads(resp.read())["data"]
        return data


def test_batch_mode_runs_on_llmocks_openai_batch_api(tmp_path: Path) -> None:
    from benchmarks.bench_quota import llmock_server

    data = dataset(tmp_path, 4)
    run_dir = tmp_path / "run"
    with llmock_server(100_000) as base:
        async def main() -> tuple[Any, Any]:
            sim = SimConfig(models=(SimModel("sim-judge", judge=True),), seed=2, latency=Latency("fixed", 0.0))
            async with SimServer(sim) as judge_server:
                cfg = config_from_dict({
                    "run": {"output_dir": str(run_dir), "seed": 1},
                    "datasets": [{"name": "g", "path": str(data)}],
                    "models": [{"name": m, "api_url": base + "/v1", "model": "gpt-4o-mini", "identity": m,
                                "mode": "batch", "batch": {"poll_interval": 0.5, "max_requests": 5}}
                               for m in ("base", "cand")],
                    "judge": {"name": "sim-judge", "api_url": judge_server.url, "identity": "sim-judge"},
                    "rating": {"rounds": 20},
                }, source="<test>")
                first = await run_batched(cfg, lambda s: Arena(cfg, batch=s))
                again = await run_batched(cfg, lambda s: Arena(cfg, batch=s))
                return first, again

        first, again = anyio.run(main)
        at_llmock = _batches(base)  # after the rerun: it submitted nothing
    ledger = [json.loads(line) for line in (run_dir / "batches" / "ledger.jsonl").read_text().splitlines()]
    chunks = {e["tag"]: e for e in ledger if e["event"] == "intent"}
    queries = sum(first.queries.values())
    assert len(chunks) == 2 * -(-queries // 5)  # two models, at most 5 requests a file
    tags = [(b.get("metadata") or {}).get(TAG_KEY) for b in at_llmock]
    assert sorted(tags) == sorted(chunks), "each chunk is exactly one batch at llmock"
    assert all(b["status"] == "completed" for b in at_llmock)
    assert first.usage["base"].records == queries and first.usage["cand"].records == queries
    assert all(g.outcome is not None for g in first.games), {g.reason for g in first.games}
    assert len(first.games) == 2 * queries
    assert [g.outcome for g in again.games] == [g.outcome for g in first.games]
