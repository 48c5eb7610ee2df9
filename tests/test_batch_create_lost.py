"""A batch create whose reply is lost on the way back is not sent again blind: the batch the server made
is found by the chunk's tag, so it is created (and paid) once.

A proxy in front of the simulator's OpenAI Batch API passes the first `POST /v1/batches` on (the server
creates the batch) and answers the client 502, as a gateway whose upstream read failed would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
from aiohttp import web

from arena_engine.batch.openai import OpenAIBatches
from arena_engine.endpoint_config import Endpoint
from arena_engine.sim import Latency, SimConfig, SimModel, SimServer


async def _proxy(upstream: str, lost: list[str]) -> tuple[web.AppRunner, str]:
    """A reverse proxy to ``upstream`` that drops the reply of the first batch create."""
    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with aiohttp.ClientSession() as s, s.request(
                request.method, upstream + request.rel_url.path_qs, data=body,
                headers={k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")},
        ) as resp:
            raw = await resp.read()
            if request.method == "POST" and request.rel_url.path == "/v1/batches" and not lost:
                lost.append(orjson.loads(raw)["id"])
                return web.Response(status=502, text="upstream read failed")
            return web.Response(status=resp.status, body=raw, content_type=resp.content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def test_a_create_whose_reply_is_lost_is_found_by_its_tag_not_created_again(tmp_path: Path) -> None:
    line = {"custom_id": "ab-1", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}
    path = tmp_path / "input.jsonl"
    path.write_bytes(orjson.dumps(line) + b"\n")

    async def main() -> tuple[list[str], dict[str, Any], int]:
        sim_cfg = SimConfig(models=(SimModel("m", 0.0),), latency=Latency("fixed", 0.0), batch_seconds=30.0)
        async with SimServer(sim_cfg) as sim:
            lost: list[str] = []
            runner, url = await _proxy(sim.url.removesuffix("/v1"), lost)
            try:
                async with aiohttp.ClientSession() as http:
                    api = OpenAIBatches(http, Endpoint("m", url + "/v1", "m"))
                    file_id = await api.upload(path, "input.jsonl")
                    with anyio.fail_after(20):
                        batch = await api.create(file_id, "24h", "chunk-tag-1")
            finally:
                await runner.cleanup()
            return lost, batch, sim.stats()["batches"]["created"]

    lost, batch, created = anyio.run(main)
    assert len(lost) == 1, "the proxy never dropped a create reply"
    assert created == 1, f"the server created {created} batches for one chunk"
    assert batch["id"] == lost[0]
    assert (batch.get("metadata") or {}).get("arena_chunk") == "chunk-tag-1"
