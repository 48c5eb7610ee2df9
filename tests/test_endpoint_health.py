"""Dead endpoints: a closed port, an unknown model, an HTML page. The circuit opens, nothing more is
sent to them or for them, the run ends with exit 1 within seconds, and each endpoint gets one line."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
from aiohttp import web
from arena_helpers import dataset
from interrupt_helpers import REPO
from shape_server import shape_server

from arena_engine.config import config_from_dict
from arena_engine.health import DEFAULT_THRESHOLD, EndpointHealth
from arena_engine.pipeline import Arena, ArenaResults
from arena_engine.sim import SimConfig, SimModel, SimServer

CONCURRENCY = 4


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens there


def _config(run_dir: Path, data: Path, base_url: str, cand_url: str, judge_url: str, *,
            base_model: str = "base") -> dict[str, Any]:
    ep = {"concurrency": CONCURRENCY, "max_attempts": 6, "connect_timeout": 2.0}
    return {
        "run": {"output_dir": str(run_dir)},
        "datasets": [{"name": "general_qa", "path": str(data)}],
        "models": [{"name": "base", "model": base_model, "api_url": base_url, **ep},
                   {"name": "cand", "api_url": cand_url, **ep}],
        "arena": {"baseline": "base"},
        "judge": {"name": "sim-judge", "api_url": judge_url, **ep},
        "rating": {"rounds": 50},
    }


def test_the_breaker_opens_after_consecutive_hard_failures_only() -> None:
    h = EndpointHealth(threshold=3)
    for reason in ("connect_error: x", "http_429: slow down", "http_404: no model", "timeout"):
        h.failed(reason)
    assert not h.is_open  # busy-server failures neither count nor reset
    h.succeeded()
    for _ in range(2):
        h.failed("http_401: bad key")
    assert not h.is_open
    h.failed("text/html body, not JSON: <html>")
    assert h.is_open and h.cause and h.cause.startswith("text/html")


def test_a_closed_port_ends_the_run_in_seconds_with_one_line_per_endpoint(tmp_path: Path) -> None:
    data = dataset(tmp_path, 20)
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    path = tmp_path / "arena.json"
    path.write_bytes(orjson.dumps(_config(tmp_path / "run", data, url, url, url)))
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "arena_engine.cli", "run", str(path), "--quiet"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert out.returncode == 1, out.stderr
    assert took < 5, f"{took:.1f} s"
    warnings = [ln for ln in out.stderr.splitlines() if ln.startswith("WARNING arena_engine.pipeline")]
    assert len(warnings) == 2, warnings  # base and cand; the judge was never needed
    for name in ("base", "cand"):
        line = next(ln for ln in warnings if f"generation {name} ({url}, model {name})" in ln)
        assert "connect_error" in line
    summary = [ln.strip() for ln in out.stderr.splitlines() if "request(s) failed for good" in ln and "(" in ln]
    assert any(ln.startswith(f"base ({url}, model base): ") and "endpoint_down" in ln for ln in summary), summary


async def _run(cfg: dict[str, Any]) -> ArenaResults:
    async with Arena(config_from_dict(cfg, source="<test>")) as arena:
        return await arena.run()


def test_an_unknown_baseline_model_stops_the_candidates_spending(tmp_path: Path) -> None:
    n = 40  # 80 queries: without the breaker the candidate would be sent all 80
    data = dataset(tmp_path, n)

    async def main() -> tuple[ArenaResults, dict[str, Any], float]:
        sim_cfg = SimConfig(models=(SimModel("cand"), SimModel("sim-judge", judge=True)), seed=1)
        async with SimServer(sim_cfg) as sim:
            t0 = time.monotonic()
            res = await _run(_config(tmp_path / "run", data, sim.url, sim.url, sim.url, base_model="no-such-model"))
            return res, sim.stats(), time.monotonic() - t0

    results, stats, took = anyio.run(main)
    assert took < 5
    # the baseline's 404s open its circuit after DEFAULT_THRESHOLD of them; the candidate's requests
    # already admitted may finish, nothing after
    assert stats["per_model"].get("no-such-model", 0) <= DEFAULT_THRESHOLD + CONCURRENCY
    assert stats["per_model"].get("cand", 0) <= DEFAULT_THRESHOLD + 2 * CONCURRENCY
    assert stats["per_model"].get("sim-judge", 0) == 0
    assert any("not sent: baseline base endpoint down" in ln for ln in results.failure_lines)
    assert any("http_404" in ln or "endpoint_down" in ln for ln in results.failure_lines)


def test_an_endpoint_answering_html_is_named_and_left_alone(tmp_path: Path) -> None:
    data = dataset(tmp_path, 20)

    def html(_: dict[str, Any]) -> web.Response:
        return web.Response(text="<html><body>Sign in to continue</body></html>", content_type="text/html")

    async def main() -> tuple[ArenaResults, int]:
        async with shape_server(html) as server:
            res = await _run(_config(tmp_path / "run", data, server.url, server.url, server.url))
            return res, len(server.seen)

    results, seen = anyio.run(main)
    # two endpoints (base, cand) on that server, each sends until its own circuit opens (plus those in
    # flight then): 80 queries x 2 models without the breaker
    assert seen <= 2 * (DEFAULT_THRESHOLD + CONCURRENCY), seen
    assert any("text/html body, not JSON" in ln or "endpoint_down" in ln for ln in results.failure_lines)
    assert results.failures > 0
