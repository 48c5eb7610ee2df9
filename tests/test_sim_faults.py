"""Each fault mode of the simulator observed on the wire with a real aiohttp client, plus the RPM limit
and the Retry-After bookkeeping."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import orjson
import pytest

from arena_engine.sim import Faults, Latency, SimConfig, SimModel, SimServer
from tests.fake_time import FakeTime
from tests.waiting import wait_until_async

pytestmark = pytest.mark.anyio

JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def config(faults: Faults, **kw: Any) -> SimConfig:
    return SimConfig(models=(SimModel("m"), SimModel("judge", judge=True)), faults=faults, **kw)


def body(i: int | str, model: str = "m") -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": f"question {i}"}]})


async def settled_stats(sim: SimServer) -> dict[str, Any]:
    """The stats once the server has finished every request it holds (it notices a client leaving
    within its poll interval, and counts a request once its handler has returned)."""
    await wait_until_async(lambda: sim.stats()["in_flight"] == 0, 5.0, "the server to finish its requests")
    return sim.stats()


async def send(
    s: aiohttp.ClientSession, url: str, raw: bytes, timeout: float = 5.0
) -> tuple[int, Any, bytes]:
    async with s.post(
        url + "/chat/completions",
        data=raw,
        headers=JSON_HEADERS,
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as r:
        return r.status, r.headers, await r.read()


@pytest.mark.parametrize(
    ("fmt", "seconds", "ms"),
    [("seconds", "2", None), ("ms", None, "2000"), ("both", "2", "2000"), ("none", None, None)],
)
async def test_429_carries_the_configured_retry_after_headers(
    fmt: str, seconds: str | None, ms: str | None
) -> None:
    cfg = config(Faults(rate_429=1.0, retry_after=fmt, retry_after_s=2.0))  # type: ignore[arg-type]
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
        status, headers, raw = await send(s, sim.url, body(1))
        stats = sim.stats()
    assert status == 429
    assert headers.get("Retry-After") == seconds
    assert headers.get("retry-after-ms") == ms
    assert orjson.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    assert stats["status"] == {"429": 1} and stats["faults"] == {"429": 1}


async def test_fractional_retry_after_is_stated_to_the_millisecond() -> None:
    cfg = config(Faults(rate_429=1.0, retry_after="both", retry_after_s=0.25))
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
        _, headers, _ = await send(s, sim.url, body(1))
    assert headers["Retry-After"] == "0.250" and headers["retry-after-ms"] == "250"


@pytest.mark.parametrize("code", [500, 502, 503])
async def test_server_errors(code: int) -> None:
    cfg = config(
        Faults(rate_500=float(code == 500), rate_502=float(code == 502), rate_503=float(code == 503))
    )
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
        status, _, raw = await send(s, sim.url, body(1))
        stats = sim.stats()
    assert status == code
    assert orjson.loads(raw)["error"]["type"] == "server_error"
    assert stats["status"] == {str(code): 1}


async def test_connection_reset() -> None:
    async with SimServer(config(Faults(rate_reset=1.0))) as sim, aiohttp.ClientSession() as s:
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await send(s, sim.url, body(1))
        stats = sim.stats()
    assert stats["status"] == {"reset": 1} and stats["in_flight"] == 0


async def test_hang_outlasts_the_client_timeout_and_ends_when_the_client_leaves() -> None:
    cfg = config(Faults(rate_hang=1.0, hang_seconds=30.0))
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(asyncio.TimeoutError):
            await send(s, sim.url, body(1), timeout=0.3)
        assert loop.time() - t0 < 2.0
        assert sim.stats()["in_flight"] <= 1
        stats = await settled_stats(sim)
    assert stats["in_flight"] == 0 and stats["status"] == {"hang_abandoned": 1}


async def test_stall_sends_headers_and_half_the_body_then_nothing() -> None:
    cfg = config(Faults(rate_stall=1.0, hang_seconds=30.0))
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
        async with s.post(sim.url + "/chat/completions", data=body(1), headers=JSON_HEADERS) as r:
            assert r.status == 200 and r.content_length is not None
            first = await asyncio.wait_for(r.content.read(r.content_length // 2), 2.0)
            assert 0 < len(first) < r.content_length
            with pytest.raises(TimeoutError):  # the rest never comes
                await asyncio.wait_for(r.content.read(), 0.3)
        stats = await settled_stats(sim)
    assert stats["in_flight"] == 0 and stats["status"] == {"stall_abandoned": 1}
    assert stats["faults"] == {"stall": 1}


async def test_trickle_spreads_a_whole_answer_over_trickle_seconds() -> None:
    cfg = config(Faults(rate_trickle=1.0, trickle_seconds=0.5))
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
        loop = asyncio.get_running_loop()
        async with s.post(sim.url + "/chat/completions", data=body(1), headers=JSON_HEADERS) as r:
            t_headers = loop.time()
            raw = await r.read()
            spread = loop.time() - t_headers
        stats = await settled_stats(sim)
    assert r.status == 200 and orjson.loads(raw)["choices"][0]["message"]["content"]
    assert 0.3 <= spread < 2.0
    assert stats["status"] == {"200": 1} and stats["faults"] == {"trickle": 1}


async def test_a_patient_client_gets_the_answer_after_the_hang() -> None:
    cfg = config(Faults(rate_hang=1.0, hang_seconds=0.3))
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        status, _, raw = await send(s, sim.url, body(1), timeout=5.0)
        waited = loop.time() - t0
    assert status == 200 and orjson.loads(raw)["choices"]
    assert waited >= 0.29


async def test_server_shutdown_is_not_held_up_by_a_hang() -> None:
    cfg = config(Faults(rate_hang=1.0, hang_seconds=60.0))
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as s:
        sim = SimServer(cfg)
        await sim.start()
        task = asyncio.ensure_future(send(s, sim.url, body(1), timeout=30.0))
        await wait_until_async(lambda: sim.stats()["in_flight"] == 1, 5.0, "the request to reach the server")
        t0 = loop.time()
        await sim.close()
        assert loop.time() - t0 < 3.0
        with pytest.raises(aiohttp.ClientError):
            await task


async def test_malformed_json_with_status_200() -> None:
    async with SimServer(config(Faults(rate_malformed=1.0))) as sim, aiohttp.ClientSession() as s:
        status, headers, raw = await send(s, sim.url, body(1))
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)


async def test_200_without_choices() -> None:
    async with SimServer(config(Faults(rate_no_choices=1.0))) as sim, aiohttp.ClientSession() as s:
        status, _, raw = await send(s, sim.url, body(1))
    data = orjson.loads(raw)
    assert status == 200 and "choices" not in data and "usage" in data


@pytest.mark.parametrize("fmt", ["json", "bracket"])
async def test_bad_verdicts_have_no_label_or_two_labels(fmt: str) -> None:
    labels = ("A>>B", "A>B", "A=B", "B>A", "B>>A")
    cfg = config(Faults(rate_bad_verdict=1.0), verdict_format=fmt)
    kinds = set()
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
        for i in range(30):
            status, _, raw = await send(s, sim.url, body(i, model="judge"))
            assert status == 200
            content = orjson.loads(raw)["choices"][0]["message"]["content"]
            found = {lab for lab in labels if f"[[{lab}]]" in content or f'"verdict":"{lab}"' in content}
            if fmt == "json":
                verdict = orjson.loads(content)["verdict"]
                assert verdict not in labels
                found = {lab for lab in labels if lab in verdict.split()}
            assert len(found) != 1
            kinds.add(len(found))
        # candidates never get garbage verdicts
        status, _, raw = await send(s, sim.url, body("c"))
        assert status == 200 and "[sim:model=m " in orjson.loads(raw)["choices"][0]["message"]["content"]
        stats = sim.stats()
    assert kinds == {0, 2}
    assert stats["faults"] == {"bad_verdict": 30}


async def test_fault_rates_are_roughly_honoured() -> None:
    faults = Faults(rate_429=0.1, retry_after="none", rate_500=0.05, rate_503=0.05, rate_malformed=0.05)
    n = 1500
    async with SimServer(config(faults)) as sim, aiohttp.ClientSession() as s:
        await asyncio.gather(*(send(s, sim.url, body(i)) for i in range(n)))
        stats = sim.stats()
    for kind, rate in (("429", 0.1), ("500", 0.05), ("503", 0.05), ("malformed", 0.05)):
        sd = (n * rate * (1 - rate)) ** 0.5
        assert abs(stats["faults"][kind] - n * rate) < 4.5 * sd, (kind, stats["faults"])
    assert (
        stats["status"]["200"] == n - stats["faults"]["429"] - stats["faults"]["500"] - stats["faults"]["503"]
    )


async def outcomes(cfg: SimConfig, order: list[int], repeats: int) -> dict[int, list[int]]:
    seen: dict[int, list[int]] = {i: [] for i in order}
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
        for _ in range(repeats):
            statuses = await asyncio.gather(*(send(s, sim.url, body(i)) for i in order))
            for i, (status, _, _) in zip(order, statuses, strict=True):
                seen[i].append(status)
    return seen


async def test_faults_are_deterministic_and_independent_of_arrival_order() -> None:
    cfg = config(Faults(rate_500=0.3, rate_503=0.2), seed=11)
    order = list(range(60))
    shuffled = order[:]
    random.Random(5).shuffle(shuffled)
    a = await outcomes(cfg, order, 3)
    b = await outcomes(cfg, shuffled, 3)
    assert a == b
    # retries of one body see fresh draws: some body fails then succeeds
    assert any(v[0] != 200 and 200 in v for v in a.values())
    c = await outcomes(config(Faults(rate_500=0.3, rate_503=0.2), seed=12), order, 3)
    assert c != a


async def test_retry_after_violations_per_body_and_per_endpoint() -> None:
    cfg = config(Faults(rate_429=1.0, retry_after="ms", retry_after_s=0.6), violation_grace_s=0.2)
    ft = FakeTime()  # the server's clock: the waits pass when the test says
    async with SimServer(cfg, clock=ft.clock) as sim, aiohttp.ClientSession() as s:
        await send(s, sim.url, body(1))
        await send(s, sim.url, body(1))  # same body at once: per-body violation, within the endpoint grace
        first = sim.stats()
        await ft.advance(0.3)
        await send(s, sim.url, body(2))  # another body while the wait runs, past the grace
        second = sim.stats()
        await ft.advance(0.65)
        await send(s, sim.url, body(1))  # after every wait has passed: no violation
        third = sim.stats()
    assert (first["retry_after_violations"], first["endpoint_retry_after_violations"]) == (1, 0)
    assert (second["retry_after_violations"], second["endpoint_retry_after_violations"]) == (1, 1)
    assert (third["retry_after_violations"], third["endpoint_retry_after_violations"]) == (1, 1)


async def test_retry_after_none_imposes_no_wait() -> None:
    cfg = config(Faults(rate_429=1.0, retry_after="none"))
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
        for _ in range(3):
            await send(s, sim.url, body(1))
        stats = sim.stats()
    assert stats["retry_after_violations"] == 0 and stats["endpoint_retry_after_violations"] == 0


@pytest.mark.exclusive
async def test_rpm_limit_answers_429_with_the_exact_wait() -> None:
    # 600 per minute over a 1 s window: 10 requests per sliding second
    cfg = config(Faults(), rpm_limit=600, rpm_window_s=1.0)
    ft = FakeTime()  # the server's clock: the sends take no time on it, and the waits pass when told
    async with SimServer(cfg, clock=ft.clock) as sim, aiohttp.ClientSession() as s:
        t0 = ft.now
        results = [await send(s, sim.url, body(i)) for i in range(14)]
        statuses = [r[0] for r in results]
        assert statuses == [200] * 10 + [429] * 4
        wait_ms = int(results[10][1]["retry-after-ms"])
        elapsed_ms = (ft.now - t0) * 1000
        assert 1000 - elapsed_ms - 20 <= wait_ms <= 1000
        assert float(results[10][1]["Retry-After"]) == pytest.approx(wait_ms / 1000, abs=0.002)
        before = sim.stats()["endpoint_retry_after_violations"]
        await ft.advance(0.1)
        status, _, _ = await send(s, sim.url, body("impatient"))  # well inside the wait: a violation
        assert status == 429
        assert sim.stats()["endpoint_retry_after_violations"] == before + 1
        await ft.advance(wait_ms / 1000 + 0.01)
        status, _, _ = await send(s, sim.url, body("after"))
        stats = sim.stats()
    assert status == 200
    assert stats["faults"] == {"rpm_429": 5}


async def test_rpm_limit_sustained_rate_never_exceeds_the_limit() -> None:
    cfg = config(Faults(), rpm_limit=1200, rpm_window_s=0.5)  # 10 per sliding half second
    ft = FakeTime()  # the server's clock, moved on by the test to the next moment a worker sends
    async with SimServer(cfg, clock=ft.clock) as sim, aiohttp.ClientSession() as s:
        admitted: list[float] = []
        deadline = ft.now + 1.2
        # four workers, each sending again at once after a 200 and after the stated wait after a 429
        next_send = dict.fromkeys(range(4), ft.now)
        sent = dict.fromkeys(range(4), 0)
        while (now := min(next_send.values())) < deadline:
            await ft.advance(now - ft.now)
            due = [w for w, t in next_send.items() if t <= now]
            replies = await asyncio.gather(*(send(s, sim.url, body(f"{w}-{sent[w]}")) for w in due))
            for w, (status, headers, _) in zip(due, replies, strict=True):
                sent[w] += 1
                if status == 200:
                    admitted.append(now)
                else:
                    next_send[w] = now + int(headers["retry-after-ms"]) / 1000
        stats = sim.stats()
    admitted.sort()
    # any half-second window of admissions holds at most the capacity (client-side times: allow jitter)
    for j, t in enumerate(admitted):
        in_window = sum(1 for u in admitted[j:] if u - t < 0.5 - 0.05)
        assert in_window <= 10
    assert 20 <= len(admitted) <= 30
    assert stats["faults"].get("rpm_429", 0) > 0


async def test_a_client_leaving_during_latency_is_counted_and_frees_the_handler() -> None:
    cfg = SimConfig(models=(SimModel("m", latency=Latency("fixed", 5.0)),))
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
        with pytest.raises(asyncio.TimeoutError):
            await send(s, sim.url, body(1), timeout=0.2)
        stats = await settled_stats(sim)
    assert stats["in_flight"] == 0 and stats["status"] == {"client_gone": 1}
