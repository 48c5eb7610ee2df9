"""Server quotas the config does not tell the client, against a third-party server: llmock 0.2.2.

llmock (the `test` extra) keeps a per-key bucket of `--rpm` requests per minute, sends OpenAI's
`x-ratelimit-*` headers on every answer and a 429 with `retry-after-ms` when the bucket is empty, and
grades the client's retries (`/_llmock/verdict`). Issue 18: with `--rpm 600` the engine failed 126 of
800 judgments for good within 9 s (a 6-attempt budget spent in a second, the headers ignored), and
after 429s it sent bursts of 32 in one second against 10 paced.

Here the whole `arena-engine run` CLI runs against llmock at a higher rpm and fewer queries (seconds,
not the bar's minutes; benchmarks/bench_quota.py measures the full size) with each endpoint on its own
key and no rpm in the config: the client must learn the quota from the headers and keep to it.
Arrivals are counted at the server side (llmock's journal, or the first-try-429 proxy's log).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from arena_engine.client import ChatClient, Endpoint, RetryPolicy
from arena_engine.limits import Limits
from benchmarks.bench_quota import http_json, llmock_server, run_quota

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llmock") is None,
                                reason="llmock is not installed: pip install -e '.[test]' (it is in the test extra)")

RPM = 3000  # 50 per second per key


@pytest.fixture
def llmock() -> Iterator[str]:
    with llmock_server(RPM) as base:
        yield base


def _client(base: str, **retry: float) -> ChatClient:
    policy = RetryPolicy(**{"max_attempts": 3, "max_time": 30.0, "base_delay": 0.01, "max_delay": 0.05, **retry})
    ep = Endpoint(name="m", api_url=f"{base}/v1", model="quota-m", limits=Limits(concurrency=4), retry=policy)
    return ChatClient(ep, api_key="sk-quota-client-test")


def _chat(base: str, behaviors: list[dict[str, object]], text: str) -> tuple[object, dict[str, object]]:
    http_json(f"{base}/_llmock/scenario", {"behaviors": behaviors})

    async def main() -> object:
        async with _client(base) as client:
            return await client.chat([{"role": "user", "content": text}], {"max_tokens": 16})

    result = anyio.run(main)
    verdict = http_json(f"{base}/_llmock/verdict")
    return result, verdict


def test_429s_spend_the_time_budget_not_the_attempts(llmock: str) -> None:
    # eight 429s in a row with a 20 ms Retry-After: three attempts would have given up after the third
    result, verdict = _chat(llmock, [{"type": "fail", "status": 429, "retry_after": 0.02, "times": 8}], "q429")
    assert result.ok and result.attempts == 9, result  # type: ignore[attr-defined]
    assert verdict["passed"] and verdict["errors"] == 0, verdict  # every Retry-After was waited for


def test_other_errors_keep_the_attempt_budget(llmock: str) -> None:
    result, verdict = _chat(llmock, [{"type": "fail", "status": 500, "times": 8}], "q500")
    assert not result.ok and result.attempts == 3  # type: ignore[attr-defined]
    assert result.error.startswith("retry_budget_exhausted: http_500")  # type: ignore[attr-defined]
    assert verdict["passed"], verdict


def test_a_503_with_retry_after_is_time_budgeted_like_a_429(llmock: str) -> None:
    result, _ = _chat(llmock, [{"type": "fail", "status": 503, "retry_after": 0.02, "times": 5}], "q503")
    assert result.ok and result.attempts == 6  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_quota_the_config_does_not_give_is_learned_and_kept(tmp_path: Path) -> None:
    run = run_quota(RPM, 40, tmp=tmp_path, timeout=120)
    assert run.exit_code == 0, run.output[-3000:]
    statuses = run.status_counts()
    assert set(statuses) == {200} and statuses[200] == 3 * 40 + 4 * 40  # nothing failed, nothing refused
    assert run.verdict["passed"] and run.verdict["warnings"] == 0, run.verdict
    # no second with more than 1.5x the quota's per-second share at any endpoint (unpaced: ~160 in 1 s)
    assert run.worst_second() <= 1.5 * run.share, run.worst_second()
    # ... and no slower than the quota allows: the judge's 160 arrivals take 3.2 s at 50/s
    judge = sorted(run.by_model()["quota-judge"])
    assert judge[-1] - judge[0] <= 1.2 * run.ideal_seconds(), (judge[-1] - judge[0], run.ideal_seconds())


@pytest.mark.slow
def test_after_a_429_on_every_first_try_the_endpoint_resumes_at_the_paced_rate(tmp_path: Path) -> None:
    run = run_quota(RPM, 20, first_try_429=True, tmp=tmp_path, timeout=120)
    assert run.exit_code == 0, run.output[-3000:]
    statuses = run.status_counts()
    assert statuses == {429: 7 * 20, 200: 7 * 20}, statuses  # every call: one 429, then its answer
    assert run.verdict["passed"] and run.verdict["warnings"] == 0, run.verdict
    # every arrival counts (the 429'd ones too): at most 1.2x the paced count in any 2 s window
    assert run.worst_window(2.0) <= 1.2 * 2 * run.share, run.worst_window(2.0)


@pytest.mark.exclusive
def test_a_slow_first_answer_holds_the_endpoint_back_for_the_probe_timeout_only(llmock: str) -> None:
    # the probe (the first request, alone on the wire) takes 4 s: the others go after PROBE_TIMEOUT
    http_json(f"{llmock}/_llmock/scenario", {"behaviors": [{"type": "delay", "seconds": 4.0, "times": 1}]})

    async def main() -> list[object]:
        async with _client(llmock) as client:
            results: list[object] = [None] * 8

            async def one(i: int) -> None:
                results[i] = await client.chat([{"role": "user", "content": f"slow {i}"}], {"max_tokens": 8})

            async with anyio.create_task_group() as tg:
                for i in range(8):
                    tg.start_soon(one, i)
            return results

    results = anyio.run(main)
    elapsed = sorted(r.elapsed for r in results)  # type: ignore[attr-defined]
    assert all(r.ok for r in results)  # type: ignore[attr-defined]
    assert elapsed[-1] >= 4.0 and elapsed[-2] < 3.5, elapsed  # not all behind the 4 s answer
