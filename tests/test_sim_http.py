"""The simulator's HTTP surface against a real aiohttp client: shapes, determinism, errors, stats."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from arena_engine.errors import ConfigError
from arena_engine.sim import TAG_RE, Latency, SimConfig, SimModel, SimServer, query_hash

pytestmark = pytest.mark.anyio

JSON_HEADERS = {"Content-Type": "application/json"}
QUESTION = [{"role": "user", "content": "How can I improve my time management skills at work?"}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    async with session.post(url + "/chat/completions", data=raw, headers=JSON_HEADERS) as r:
        return r.status, orjson.loads(await r.read())


async def test_models_lists_every_configured_model() -> None:
    async with SimServer(SimConfig.demo()) as sim, aiohttp.ClientSession() as s:
        assert sim.url.startswith("http://127.0.0.1:") and sim.url.endswith("/v1")
        assert sim.port > 0
        async with s.get(sim.url + "/models") as r:
            assert r.status == 200
            data = await r.json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["sim-base", "sim-strong", "sim-weak", "sim-judge"]


async def test_completion_shape_usage_and_tag() -> None:
    async with SimServer(SimConfig.demo()) as sim, aiohttp.ClientSession() as s:
        status, data = await post(s, sim.url, {"model": "sim-strong", "messages": QUESTION})
    assert status == 200
    assert data["object"] == "chat.completion" and data["model"] == "sim-strong"
    (choice,) = data["choices"]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    content = choice["message"]["content"]
    assert TAG_RE.findall(content) == [("sim-strong", query_hash(QUESTION))]
    # echoes words of the question, so overlap metrics against a reference are non-trivial
    words = set(content.lower().replace(".", " ").split())
    assert {"time", "management", "skills", "improve"} & words
    usage = data["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_answers_are_deterministic_in_model_messages_and_seed() -> None:
    cfg = SimConfig.demo()
    async with SimServer(cfg) as a, SimServer(cfg) as b, aiohttp.ClientSession() as s:
        body = {"model": "sim-base", "messages": QUESTION}
        first = (await post(s, a.url, body))[1]["choices"][0]["message"]["content"]
        again = (await post(s, a.url, body))[1]["choices"][0]["message"]["content"]
        other_server = (await post(s, b.url, body))[1]["choices"][0]["message"]["content"]
        # temperature does not matter, the seed parameter does
        warm = (await post(s, a.url, {**body, "temperature": 0.9}))[1]["choices"][0]["message"]["content"]
        seeded = (await post(s, a.url, {**body, "seed": 7}))[1]["choices"][0]["message"]["content"]
        other_model = (await post(s, a.url, {**body, "model": "sim-weak"}))[1]["choices"][0]["message"][
            "content"
        ]
    assert first == again == other_server == warm
    assert seeded != first
    assert other_model != first


async def test_n_choices_are_distinct_and_first_matches_n1() -> None:
    async with SimServer(SimConfig.demo()) as sim, aiohttp.ClientSession() as s:
        one = (await post(s, sim.url, {"model": "sim-base", "messages": QUESTION}))[1]
        status, three = await post(s, sim.url, {"model": "sim-base", "messages": QUESTION, "n": 3})
    assert status == 200
    contents = [c["message"]["content"] for c in three["choices"]]
    assert [c["index"] for c in three["choices"]] == [0, 1, 2]
    assert len(set(contents)) == 3
    assert contents[0] == one["choices"][0]["message"]["content"]
    assert three["usage"]["completion_tokens"] > one["usage"]["completion_tokens"]


async def test_better_models_answer_longer_and_echo_more() -> None:
    cfg = SimConfig(models=(SimModel("good", quality=2.0), SimModel("bad", quality=-2.0)))
    lengths: dict[str, int] = {"good": 0, "bad": 0}
    echoes: dict[str, int] = {"good": 0, "bad": 0}
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
        for i in range(40):
            q = f"Explain photosynthesis chlorophyll sunlight glucose oxygen number {i}"
            for m in lengths:
                _, data = await post(s, sim.url, {"model": m, "messages": [{"role": "user", "content": q}]})
                words = data["choices"][0]["message"]["content"].split("]", 1)[1].lower().split()
                lengths[m] += len(words)
                echoes[m] += sum(w.strip(".") in q.lower().split() for w in words)
    assert lengths["good"] > lengths["bad"]
    assert echoes["good"] > 1.5 * echoes["bad"]


async def test_max_tokens_truncates_with_finish_reason_length() -> None:
    async with SimServer(SimConfig.demo()) as sim, aiohttp.ClientSession() as s:
        _, data = await post(s, sim.url, {"model": "sim-base", "messages": QUESTION, "max_tokens": 3})
    assert data["choices"][0]["finish_reason"] == "length"
    assert len(data["choices"][0]["message"]["content"]) <= 12
    assert data["usage"]["completion_tokens"] == 3


async def test_unknown_model_is_404_openai_style() -> None:
    async with SimServer(SimConfig.demo()) as sim, aiohttp.ClientSession() as s:
        status, data = await post(s, sim.url, {"model": "gpt-nope", "messages": QUESTION})
        stats = sim.stats()
    assert status == 404
    assert data["error"]["code"] == "model_not_found" and "gpt-nope" in data["error"]["message"]
    assert stats["status"] == {"404": 1} and stats["per_model"] == {}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        {"messages": QUESTION},
        {"model": "sim-base"},
        {"model": "sim-base", "messages": []},
        {"model": "sim-base", "messages": ["hello"]},
        {"model": "sim-base", "messages": QUESTION, "n": 0},
        {"model": "sim-base", "messages": QUESTION, "stream": True},
    ],
)
async def test_bad_bodies_are_400_with_a_message(body: Any) -> None:
    async with SimServer(SimConfig.demo()) as sim, aiohttp.ClientSession() as s:
        status, data = await post(s, sim.url, body)
    assert status == 400
    assert data["error"]["type"] == "invalid_request_error" and data["error"]["message"]


async def test_stats_count_requests_bodies_and_duplicates_then_reset() -> None:
    async with SimServer(SimConfig.demo()) as sim, aiohttp.ClientSession() as s:
        a = {"model": "sim-base", "messages": QUESTION}
        b = {"model": "sim-weak", "messages": QUESTION}
        for body in (a, a, a, b):
            await post(s, sim.url, body)
        await post(s, sim.url, {"model": "missing", "messages": QUESTION})
        async with s.get(sim.url.removesuffix("/v1") + "/sim/stats") as r:
            wire = await r.json()
        async with s.get(sim.url.removesuffix("/v1") + "/sim/stats?times=1") as r:
            timed = await r.json()
        assert wire == sim.stats()
        async with s.post(sim.url.removesuffix("/v1") + "/sim/reset") as r:
            assert r.status == 200
        after = sim.stats()
    assert wire["requests"] == 5
    assert wire["per_model"] == {"sim-base": 3, "sim-weak": 1}
    assert wire["status"] == {"200": 4, "404": 1}
    assert wire["distinct_bodies"] == 3
    assert wire["duplicate_requests"] == 2 and wire["duplicate_200"] == 2
    assert wire["in_flight"] == 0
    assert wire["first_request"]["sim-base"] <= wire["last_request"]["sim-base"]
    assert "times" not in wire
    assert len(timed["times"]["sim-base"]) == 3 and timed["times"]["sim-base"] == sorted(
        timed["times"]["sim-base"]
    )
    assert after["requests"] == 0 and after["per_model"] == {} and after["duplicate_200"] == 0


@pytest.mark.exclusive
async def test_max_in_flight_and_latency() -> None:
    cfg = SimConfig(models=(SimModel("slow", latency=Latency("fixed", 0.4)), SimModel("fast")))
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.gather(
            *(
                post(s, sim.url, {"model": "slow", "messages": [{"role": "user", "content": str(i)}]})
                for i in range(8)
            )
        )
        elapsed = loop.time() - t0
        t1 = loop.time()
        await post(s, sim.url, {"model": "fast", "messages": QUESTION})
        fast = loop.time() - t1
        stats = sim.stats()
    assert 0.39 <= elapsed < 2.0  # the 8 requests wait side by side
    assert fast < 0.3  # the other model has no latency
    assert stats["max_in_flight"] == 8 and stats["in_flight"] == 0


@pytest.mark.exclusive
async def test_lognormal_latency_varies_around_its_median() -> None:
    # a fixed-latency server with the same median answers the same load side by side: what this box's
    # queueing adds to every request is read off it, rather than guessed as a bound
    lognormal = SimConfig(models=(SimModel("m"),), latency=Latency("lognormal", 0.3, sigma=0.5))
    fixed = SimConfig(models=(SimModel("m"),), latency=Latency("fixed", 0.3))
    async with SimServer(lognormal) as varied, SimServer(fixed) as control, aiohttp.ClientSession() as s:
        loop = asyncio.get_running_loop()

        async def timed(url: str, i: int) -> float:
            t = loop.time()
            await post(s, url, {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]})
            return loop.time() - t

        both = await asyncio.gather(*(timed(url, i) for i in range(60) for url in (varied.url, control.url)))
    durations, reference = sorted(both[0::2]), sorted(both[1::2])
    queueing = reference[30] - 0.3
    assert 0.2 < durations[30] - queueing < 0.45, (durations[30], reference[30])
    assert durations[-1] - durations[0] > 2 * (reference[-1] - reference[0])  # it varies; the control barely
    assert durations[45] - durations[15] > max(0.1, 2 * (reference[45] - reference[15]))  # lognormal IQR: 0.21 s
    assert durations[-1] < 3.0 + queueing


def test_serve_runs_standalone_until_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "sim.toml"
    config.write_text('seed = 3\n[[models]]\nname = "solo"\nquality = 0.5\n')
    code = (
        "import sys; from arena_engine.sim import SimConfig, serve\n"
        "serve(SimConfig.from_file(sys.argv[1]), port=0, ready=lambda url: print(url, flush=True))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with subprocess.Popen(
        [sys.executable, "-c", code, str(config)], stdout=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")

            async def ask() -> tuple[int, Any]:
                async with aiohttp.ClientSession() as s:
                    return await post(s, url, {"model": "solo", "messages": QUESTION})

            status, data = asyncio.run(ask())
            assert status == 200 and "[sim:model=solo " in data["choices"][0]["message"]["content"]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_a_busy_port_is_a_clear_config_error() -> None:
    async with SimServer(SimConfig.demo()) as first:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            async with SimServer(SimConfig.demo(), port=first.port):
                pass
