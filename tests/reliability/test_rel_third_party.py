"""A whole arena against a third-party OpenAI-compatible server from PyPI: fakellm (the `test` extra).

fakellm ("a mock LLM server for testing, drop-in replacement for OpenAI and Anthropic APIs") is started
with its own command line on 127.0.0.1 and configured by rules: the baseline gets fakellm's
deterministic echo, one candidate a fixed good answer, another a 503 with fakellm's error message, and
the judge (also fakellm) a JSON verdict that names whichever position holds the good answer. So the
good candidate must win every game in both orders, the broken one must be excluded with the server's
own message, and a rerun must send nothing: all computed from what this server actually sent back.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from reliability_support import dataset, free_port, get_json, read_checkpoints

from arena_engine.config import config_from_dict
from arena_engine.pipeline import Arena, ArenaResults
from tests.waiting import serves

GOOD = "GOOD ANSWER: careful, complete and correct."
RULES: dict[str, Any] = {
    "version": 1,
    "defaults": {"fallback": "deterministic_echo"},
    "rules": [
        {"name": "judge-good-is-a",
         "when": {"model_matches": "fake-judge", "messages_contain": f"<|The Start of Assistant A's Answer|>\n{GOOD}"},
         "respond": {"content": '{"reasoning": "Assistant A is complete and correct.", "verdict": "A>>B"}'}},
        {"name": "judge-good-is-b",
         "when": {"model_matches": "fake-judge", "messages_contain": f"<|The Start of Assistant B's Answer|>\n{GOOD}"},
         "respond": {"content": '{"reasoning": "Assistant B is complete and correct.", "verdict": "B>>A"}'}},
        {"name": "judge-otherwise", "when": {"model_matches": "fake-judge"},
         "respond": {"content": '{"reasoning": "Neither stands out.", "verdict": "A=B"}'}},
        {"name": "good", "when": {"model_matches": "fake-good"}, "respond": {"content": GOOD}},
        {"name": "broken", "when": {"model_matches": "fake-broken"},
         "respond": {"status": 503, "error": "upstream overloaded (fakellm)"}},
    ],
}


@contextlib.contextmanager
def fakellm(tmp: Path) -> Iterator[str]:
    """`fakellm serve` on a free 127.0.0.1 port; yields its base URL (http://127.0.0.1:PORT)."""
    if importlib.util.find_spec("fakellm") is None:
        pytest.skip("fakellm is not installed: pip install -e '.[test]' (it is in the test extra)")
    config = tmp / "fakellm.yaml"
    config.write_bytes(orjson.dumps(RULES))  # JSON is YAML
    for _ in range(3):  # the port is picked free, but another process may take it before fakellm does
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "fakellm.cli", "serve", "--host", "127.0.0.1", "--port",
                                 str(port), "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        if serves(proc, lambda: get_json(f"{base}/_fakellm/stats"), 60, interval=0.1):  # noqa: B023
            break
        proc.kill()
        _, err = proc.communicate()
        last_error = err.decode(errors="replace")[-2000:]
    else:
        raise AssertionError(f"fakellm did not start: {last_error}")
    try:
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _config(base: str, run_dir: Path, data: Path) -> Any:
    def ep(name: str, **kw: Any) -> dict[str, Any]:
        return {"name": name, "model": name, "api_url": f"{base}/v1", "concurrency": 8, **kw}

    return config_from_dict({
        "run": {"output_dir": str(run_dir), "seed": 1},
        "datasets": [{"name": "general_qa", "path": str(data)}],
        "models": [ep("fake-base", generation={"temperature": 0.0, "max_tokens": 128}),
                   ep("fake-good"),
                   ep("fake-broken", max_attempts=2, retry_max_time=5.0)],
        "arena": {"baseline": "fake-base"},
        "judge": ep("fake-judge"),
        "rating": {"rounds": 100},
    }, source="<fakellm>")


def test_an_arena_against_fakellm_from_pypi(tmp_path: Path) -> None:
    data = dataset(tmp_path, 6)
    queries = 12
    run_dir = tmp_path / "run"

    async def run() -> ArenaResults:
        async with Arena(_config(base, run_dir, data)) as arena:
            return await arena.run()

    with fakellm(tmp_path) as base:
        first = anyio.run(run)
        sent = get_json(f"{base}/_fakellm/stats")
        second = anyio.run(run)
        resent = get_json(f"{base}/_fakellm/stats")

    by_rule = sent["by_rule"]
    # the baseline fell through to fakellm's own deterministic echo; the judge matched its rules
    assert by_rule["<fallthrough>"] == queries
    assert by_rule["good"] == queries
    assert by_rule["judge-good-is-a"] == queries and by_rule["judge-good-is-b"] == queries
    assert "judge-otherwise" not in by_rule
    assert by_rule["broken"] == 2 * queries  # two attempts each (503 is retried), then recorded as failed

    ck = read_checkpoints(run_dir)
    answers = {r["model"]: r["answer"] for r in ck.records("generations")}
    assert answers["fake-good"] == GOOD
    assert re.fullmatch(r"\[mock response for fake-base, fingerprint [0-9a-f]{8}\]", answers["fake-base"])
    assert all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in ck.records("generations"))
    failures = ck.records("failures")
    assert len(failures) == 2 * queries  # one per query in each of the two runs
    assert all(f["endpoint"] == "fake-broken" and f["status"] == 503 and f["attempts"] == 2 for f in failures)
    assert all("upstream overloaded (fakellm)" in f["error"] for f in failures)

    good = [g for g in first.games if g.candidate == "fake-good"]
    broken = [g for g in first.games if g.candidate == "fake-broken"]
    assert len(good) == len(broken) == 2 * queries
    assert all(g.outcome is not None and g.outcome > 0 for g in good), "the good answer wins in both orders"
    assert all(g.reason == "no answer: fake-broken" for g in broken)
    board = first.overall
    top = board.entries[0]
    assert top.model == "fake-good" and top.flags == ("only_wins", "few_queries") and top.winrate > 0.99  # ratings cap all-wins; fewer than 30 queries is flagged (issue 19)
    assert board.entry("fake-base").winrate == 0.5

    # the rerun reuses everything it can: only the broken model is asked again
    assert resent["total_requests"] - sent["total_requests"] == 2 * queries
    assert resent["by_rule"]["broken"] - by_rule["broken"] == 2 * queries
    assert [(e.model, e.winrate) for e in second.overall.entries] == [(e.model, e.winrate) for e in board.entries]
