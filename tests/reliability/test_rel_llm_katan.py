"""Whole arenas against llm-katan 0.22.0 (the `test` extra), a third-party OpenAI-compatible test server.

llm-katan's echo backend answers every chat request with a header line and the last user message
("[echo] model=... User: <prompt>"), and it injects faults of its own: a share of HTTP 500s
(`--error-rate`), 429 for good after N requests with no Retry-After (`--rate-limit-after`), 503 when
more requests are in flight than `--max-inflight`. Each test starts it on a free 127.0.0.1 port with
HOME and its stats file in the test's folder, counts what it received (its `/stats` total), and runs a
small arena against it, bounded to seconds:

1. llm-katan as the judge: its "verdicts" are the judge prompt sent back, format examples included. No
   verdict may be read out of them: every game is excluded with a reason that says so, and the result is
   flagged as no ranking (exit 1), not a ranking of echoes.
2. a candidate behind `--error-rate 0.3`: every request ends as an answer or a recorded failure within
   its attempt budget, and reruns send only the failed ones until everything is answered.
3. a candidate behind `--rate-limit-after N`: the run ends within its retry budget, with exit 1 and
   one failure line for the endpoint naming its URL, model and the 429; nothing hangs.
4. a candidate behind `--max-inflight 2` with concurrency 16: the 503s it sends for the excess are
   retried and the run completes with every answer.

The baseline and (in 2-4) the judge are the simulator, so the verdicts there are real ones.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from reliability_support import (
    BASE,
    CAND,
    JUDGE,
    clean_sim,
    config_dict,
    dataset,
    fast_backoff,
    free_port,
    get_json,
    read_checkpoints,
    run_cli,
    threaded_sim,
)

from arena_engine.config import config_from_dict
from arena_engine.pipeline import ArenaResults, run_arena
from tests.waiting import serves

KEY_ENV = "KATAN_TEST_KEY"  # llm-katan answers 401 without an Authorization header

Katan = Callable[..., str]


def received(base: str) -> int:
    """Chat requests llm-katan received, whatever it answered (its middleware counts each one)."""
    return int(get_json(f"{base}/stats")["total"])


@pytest.fixture
def katan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Katan]:
    """``katan(*options)`` starts `llm-katan --backend echo` with those options on a free 127.0.0.1 port,
    waits until it answers, and returns its base URL (http://127.0.0.1:PORT); all are killed after."""
    if importlib.util.find_spec("llm_katan") is None:
        pytest.skip("llm-katan is not installed: pip install -e '.[test]' (it is in the test extra)")
    monkeypatch.setenv(KEY_ENV, "sk-katan-test")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> str:
        home = tmp_path / f"katan-home-{len(procs)}"
        home.mkdir()
        last_error = ""
        for _ in range(3):  # the port is picked free, but another process may take it first
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-c", "from llm_katan.cli import main; main()", "-m", "katan", "--backend", "echo",
                 "--providers", "openai", "--host", "127.0.0.1", "--port", str(port), "--max-concurrent", "64",
                 "--log-level", "error", "--stats-file", str(home / "stats.json"), *options],
                env={**os.environ, "HOME": str(home)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append(proc)
            base = f"http://127.0.0.1:{port}"
            if serves(proc, lambda: get_json(f"{base}/health"), 30):  # noqa: B023
                return base
            proc.kill()
            _, err = proc.communicate()
            last_error = err.decode(errors="replace")[-2000:]
        raise AssertionError(f"llm-katan did not start: {last_error}")

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


def _config(urls: dict[str, str], run_dir: Path, data: Path, *, cand: dict[str, Any] | None = None,
            judge: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    cfg = config_dict(urls, run_dir, data, api_key_env=KEY_ENV, **kw)
    cfg["models"][1].update(cand or {})
    cfg["judge"].update(judge or {})
    return cfg


def _run(cfg: dict[str, Any]) -> ArenaResults:
    return run_arena(fast_backoff(config_from_dict(cfg, source="<llm-katan>")))


# ------------------------------------------------------------------------------- 1. an echoing judge

# Arena-Hard's format instructions, in the user message (where llm-katan's echo repeats them): five
# labels, each with its meaning, and an example verdict.
LABEL_LIST = """\
Compare the two answers to the user prompt. Output your final verdict by strictly following this format:
1. Assistant A is significantly better: [[A>>B]]
2. Assistant A is slightly better: [[A>B]]
3. Tie, relatively the same: [[A=B]]
4. Assistant B is slightly better: [[B>A]]
5. Assistant B is significantly better: [[B>>A]]

Example output: "My final verdict is tie: [[A=B]]".

<|User Prompt|>
{question}

<|The Start of Assistant A's Answer|>
{answer_a}
<|The End of Assistant A's Answer|>

<|The Start of Assistant B's Answer|>
{answer_b}
<|The End of Assistant B's Answer|>"""

# One JSON example, a tie: read out of an echo it makes every game a tie in both orders, a consistent,
# unbiased-looking judge that no gate would question.
ONE_EXAMPLE = """\
Judge which answer is better. Reply with one JSON object like this example:
{{"reasoning": "Both answers are equally complete.", "verdict": "A=B"}}

Question: {question}

Answer A: {answer_a}

Answer B: {answer_b}"""


@pytest.mark.parametrize("template", [LABEL_LIST, ONE_EXAMPLE], ids=["label-list", "one-example"])
def test_an_echoing_judge_gives_no_verdict_and_no_ranking(katan: Katan, tmp_path: Path, template: str) -> None:
    url = f"{katan()}/v1"
    data = dataset(tmp_path, 4)
    queries = 8
    run_dir = tmp_path / "run"
    with threaded_sim(clean_sim()) as (sim_url, _):  # the baseline: answers that differ from the candidate's
        cfg = _config({BASE: sim_url, CAND: url, JUDGE: url}, run_dir, data, judge={"template": template})
        path = tmp_path / "config.json"
        path.write_bytes(orjson.dumps(cfg))
        started = time.monotonic()
        code, out, err = run_cli("run", str(path), "--quiet")
        assert time.monotonic() - started < 30, "an echoing judge must not make the run slow"

    assert code == 1, (out, err)
    assert "no game was rated (16 of 16 excluded)" in err, err  # the judge gate names why there is no ranking
    ck = read_checkpoints(run_dir)
    judgments = ck.records("judgments")
    assert len(judgments) == 2 * queries
    for rec in judgments:
        assert rec["raw"].startswith("[echo] model=katan"), rec["raw"]  # it really is llm-katan's echo
        assert "[[A=B]]" in rec["raw"] or '"verdict": "A=B"' in rec["raw"], rec["raw"]
        assert rec["verdict"] is None, rec
        assert "only repeats the judge prompt" in rec["error"], rec["error"]
    assert len(ck.records("generations")) == 2 * queries  # the answers themselves are kept


# ------------------------------------------------------------------------------------ 2. random 500s


def test_random_500s_end_as_answers_or_failures_and_reruns_finish(katan: Katan, tmp_path: Path) -> None:
    base = katan("--error-rate", "0.3")
    data = dataset(tmp_path, 40)
    queries = 80
    attempts = 2  # a request fails for good with probability 0.3^2 = 0.09: P(no failure in 80) = 0.05%
    run_dir = tmp_path / "run"
    with threaded_sim(clean_sim()) as (sim_url, _):
        cfg = _config({BASE: sim_url, CAND: f"{base}/v1", JUDGE: sim_url}, run_dir, data,
                      cand={"max_attempts": attempts, "retry_max_time": 10.0})
        before = received(base)
        first = _run(cfg)
        sent = received(base) - before
        ck = read_checkpoints(run_dir)
        answered = [r for r in ck.records("generations") if r["model"] == CAND]
        failed = [f for f in ck.records("failures") if f["endpoint"] == CAND]
        # every request ended as an answer or a recorded failure, within its attempt budget
        assert len(answered) + len(failed) == queries
        assert failed, "0.3 errors per attempt and 2 attempts: some of 80 requests must fail for good"
        assert all(f["status"] == 500 and f["attempts"] == attempts for f in failed), failed
        assert all(1 <= r["attempts"] <= attempts for r in answered)
        assert sent == sum(r["attempts"] for r in answered) + attempts * len(failed)  # the server agrees
        assert first.failures == len(failed)
        assert any("failed for good" in line and CAND in line for line in first.failure_lines)

        # each rerun sends only what is still missing, until everything is answered
        missing = len(failed)
        for _ in range(8):
            before = received(base)
            again = _run(cfg)
            resent = received(base) - before
            assert missing <= resent <= attempts * missing
            missing = again.failures
            if not missing:
                break
        assert missing == 0
        ck = read_checkpoints(run_dir)
        assert len({r["query_id"] for r in ck.records("generations") if r["model"] == CAND}) == 40  # ids per subset
        assert len([r for r in ck.records("generations") if r["model"] == CAND]) == queries
        assert all(g.outcome is not None for g in again.games)


# ------------------------------------------------------------------------------- 3. 429 for good


@pytest.mark.exclusive
def test_429_for_good_ends_within_the_retry_budget_with_a_summary(katan: Katan, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    allowed = 5
    base = katan("--rate-limit-after", str(allowed))
    data = dataset(tmp_path, 6)
    queries = 12
    budget = 2.0  # seconds a 429'd request may keep retrying
    run_dir = tmp_path / "run"
    with threaded_sim(clean_sim()) as (sim_url, _):
        cfg = _config({BASE: sim_url, CAND: f"{base}/v1", JUDGE: sim_url}, run_dir, data,
                      cand={"max_attempts": 4, "retry_max_time": budget})
        path = tmp_path / "config.json"
        path.write_bytes(orjson.dumps(cfg))
        started = time.monotonic()
        code, out, err = run_cli("run", str(path), "--quiet")
        elapsed = time.monotonic() - started

    assert code == 1, (out, err)
    assert elapsed < budget + 15, f"the run took {elapsed:.1f} s with a {budget} s retry budget"
    ck = read_checkpoints(run_dir)
    assert len([r for r in ck.records("generations") if r["model"] == CAND]) == allowed
    failed = [f for f in ck.records("failures") if f["endpoint"] == CAND]
    assert len(failed) == queries - allowed
    assert all(f["status"] == 429 for f in failed), [(f["status"], f["error"], f["attempts"]) for f in failed]
    # one summary line for the endpoint, naming URL, model, count and cause; not one line per request
    lines = [ln for ln in err.splitlines() if "failed for good" in ln and ln.strip().startswith(CAND)]
    assert len(lines) == 1, err
    assert f"{base}/v1" in lines[0] and f"model {CAND}" in lines[0] and f"{queries - allowed} request(s)" in lines[0]
    assert "retry_budget_exhausted: http_429" in lines[0], lines[0]  # the cause, not only "gave up"
    logged = [r.getMessage() for r in caplog.records if "http_429" in r.getMessage()]
    assert len(logged) == 1, logged  # one log line for the endpoint while it runs, not one per request


# ----------------------------------------------------------------------------- 4. an in-flight cap


def test_503s_over_the_servers_inflight_cap_are_retried_until_done(katan: Katan, tmp_path: Path) -> None:
    base = katan("--max-inflight", "2", "--latency-ms", "30")
    data = dataset(tmp_path, 10)
    queries = 20
    run_dir = tmp_path / "run"
    with threaded_sim(clean_sim()) as (sim_url, _):
        cfg = _config({BASE: sim_url, CAND: f"{base}/v1", JUDGE: sim_url}, run_dir, data,
                      cand={"concurrency": 16, "max_attempts": 30, "retry_max_time": 20.0})
        before = received(base)
        started = time.monotonic()
        results = _run(cfg)
        elapsed = time.monotonic() - started
        sent = received(base) - before

    assert results.failures == 0, results.failure_lines
    assert not results.failure_lines
    ck = read_checkpoints(run_dir)
    answered = [r for r in ck.records("generations") if r["model"] == CAND]
    assert len(answered) == queries
    rejected = sent - queries
    assert rejected > 0, "16 requests at once against 2 slots: the server must have rejected some"
    assert sum(r["attempts"] - 1 for r in answered) == rejected  # each rejection was retried, none lost
    assert all(g.outcome is not None for g in results.games)
    assert elapsed < 20, f"{elapsed:.1f} s"
