"""Judge requests that can succeed: structured verdicts against a server that refuses OpenAI's
json_schema (as llama-cpp-python 0.3.36 does), parse retries that are not the identical request, and
cut-off verdicts asked again with a larger budget. All against a tiny stand-in server on 127.0.0.1."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from arena_helpers import dataset
from shape_server import LLAMA_CPP_REFUSAL, Reply, ShapeServer, completion, shape_server

from arena_engine.config import config_from_dict
from arena_engine.judge import DEFAULT_SYSTEM_PROMPT, VERDICT_SCHEMA, parse_verdict, retry_messages
from arena_engine.pipeline import JUDGE, Arena, ArenaResults
from arena_engine.store import RunStore

VERDICT = '{"reasoning": "A answers the question; B does not.", "verdict": "A>B"}'
RETRY_MARK = "Your previous reply to this was"
QUERIES = 6  # dataset(tmp, 3): two subsets of three


def answer_or(judge: Any) -> Any:
    """Candidates answer at once; the judge's requests go to `judge(body)`."""
    def answer(body: dict[str, Any]) -> Reply:
        if body["model"] == "judge":
            return judge(body)  # type: ignore[no-any-return]
        return completion(f"an answer from {body['model']}")
    return answer


def judge_bodies(server: ShapeServer) -> list[dict[str, Any]]:
    return [b for b in server.bodies() if b["model"] == "judge"]


def run(tmp_path: Path, judge: Any, *, runs: int = 1, in_flight: int | None = None, **judge_cfg: Any) -> tuple[list[ArenaResults], ShapeServer, list[Any]]:
    data = dataset(tmp_path, 3)
    results: list[ArenaResults] = []
    stats: list[Any] = []

    async def main() -> ShapeServer:
        async with shape_server(answer_or(judge)) as server:
            ep = {"api_url": server.url, "max_attempts": 3}
            cfg = config_from_dict({
                "run": {"output_dir": str(tmp_path / "run"), "seed": 1,
                        **({"queries_in_flight": in_flight} if in_flight else {})},
                "datasets": [{"name": "general_qa", "path": str(data)}],
                "models": [{"name": "base", **ep}, {"name": "cand", **ep}],
                "arena": {"baseline": "base"},
                "judge": {"name": "judge", **ep, "concurrency": 4, **judge_cfg},
                "rating": {"rounds": 20},
            }, source="<test>")
            for _ in range(runs):
                async with Arena(cfg) as arena:
                    results.append(await arena.run())
                    stats.append(arena.clients[JUDGE].stats)
        return server

    server = anyio.run(main)
    return results, server, stats


def records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    with RunStore(run_dir) as store:
        return list(store.records(kind))


def llama_cpp_judge(body: dict[str, Any]) -> Reply:
    rf = body.get("response_format")
    if rf is not None and rf.get("type") not in ("text", "json_object"):
        return 500, LLAMA_CPP_REFUSAL
    return completion(VERDICT)


def test_structured_verdicts_complete_on_a_server_that_refuses_json_schema(tmp_path: Path) -> None:
    results, server, stats = run(tmp_path, llama_cpp_judge, runs=2, structured_output=True)
    first, second = results
    games = 2 * QUERIES
    assert len(first.games) == games and all(g.outcome is not None for g in first.games)
    bodies = judge_bodies(server)
    refused = [b for b in bodies if b["response_format"]["type"] == "json_schema"]
    # only the judge requests already on their way when the first refusal came back were refused (at
    # most the judge's concurrency of 4); each was resent once, with llama.cpp's shape and the schema
    assert 1 <= len(refused) <= 4 and len(bodies) == games + len(refused)
    per_request = Counter(orjson.dumps(b["messages"]) for b in bodies)
    assert max(per_request.values()) <= 2
    assert all(b["response_format"] == {"type": "json_object", "schema": refused[0]["response_format"]["json_schema"]["schema"]}
               for b in bodies if b["response_format"]["type"] != "json_schema")
    assert stats[0].reshaped == len(refused) and stats[0].retries == 0
    # the checkpoints are keyed on the requested shape: the rerun reuses every verdict, sends nothing
    assert len(second.games) == games and all(g.outcome is not None for g in second.games)
    assert stats[1].requests == 0


def test_a_parse_retry_quotes_the_reply_and_the_format_instead_of_resending(tmp_path: Path) -> None:
    def judge(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]["content"]
        return completion(VERDICT if RETRY_MARK in last else '{"reasoning": "<your short reasoning>", "verdict": "<label>"}')

    results, server, _ = run(tmp_path, judge)
    assert all(g.outcome is not None for g in results[0].games)
    bodies = judge_bodies(server)
    assert len(bodies) == 2 * 2 * QUERIES  # each game: the request, then one retry that worked
    assert len({orjson.dumps(b) for b in bodies}) == len(bodies), "no judge request was sent twice"
    retried = [b for b in bodies if RETRY_MARK in b["messages"][-1]["content"]]
    assert len(retried) == 2 * QUERIES
    assert all("<your short reasoning>" in b["messages"][-1]["content"] for b in retried)  # the reply, quoted
    assert all(b["response_format"] == VERDICT_SCHEMA for b in retried)  # and constrained to the schema
    assert not any("response_format" in b for b in bodies if b not in retried)
    tries = [r["tries"] for r in records(tmp_path / "run", "judgments")]
    assert tries == [2] * (2 * QUERIES)


def test_a_retry_that_would_be_the_same_request_at_temperature_0_is_not_sent(tmp_path: Path) -> None:
    results, server, _ = run(tmp_path, lambda body: completion("I cannot decide."), parse_retries=4)
    games = results[0].games
    assert all(g.outcome is None and g.reason == "unparseable verdict: no verdict label found" for g in games)
    # the first retry quotes the reply; a second would quote the same reply again: identical, not sent
    assert len(judge_bodies(server)) == 2 * len(games)


def test_an_endpoint_that_fails_on_the_added_schema_gets_retries_without_it(tmp_path: Path) -> None:
    def judge(body: dict[str, Any]) -> Reply:
        if "response_format" in body:
            return 400, {"error": {"message": "Bad request"}}
        return completion("I cannot decide.")

    results, server, _ = run(tmp_path, judge, in_flight=1)  # one query (two games) at a time
    games = results[0].games
    assert all(g.outcome is None and g.reason == "unparseable verdict: no verdict label found" for g in games)
    assert not records(tmp_path / "run", "failures"), "a retry that failed does not turn the game into a failure"
    bodies = judge_bodies(server)
    with_schema = [b for b in bodies if "response_format" in b]
    assert 1 <= len(with_schema) <= 2  # only the retries built before the first one failed
    # each game: its request and the quoted retry; the games whose retry with the schema failed, that too
    assert len(bodies) == 2 * len(games) + len(with_schema)


@pytest.mark.parametrize("shape", ["cut_json", "only_thinking"])
def test_a_verdict_cut_off_by_max_tokens_is_asked_again_with_twice_the_budget(tmp_path: Path, shape: str) -> None:
    def judge(body: dict[str, Any]) -> Reply:
        if body["max_tokens"] >= 100:
            return completion(VERDICT, reasoning_content="Comparing the two answers.")
        if shape == "cut_json":
            return completion('{"reasoning": "A answers the question; B', finish_reason="length")
        return completion(None, finish_reason="length", reasoning_content="Comparing the two answers, first")

    results, server, _ = run(tmp_path, judge, generation={"temperature": 0.0, "max_tokens": 64})
    assert all(g.outcome is not None for g in results[0].games)
    budgets = Counter(b["max_tokens"] for b in judge_bodies(server))
    assert budgets == {64: 2 * QUERIES, 128: 2 * QUERIES}
    judged = records(tmp_path / "run", "judgments")
    assert {(r["tries"], r["finish_reason"], r["thinking"]) for r in judged} == {(2, "stop", "Comparing the two answers.")}
    assert not records(tmp_path / "run", "failures")


def test_the_default_prompt_has_no_placeholder_to_copy_and_its_format_parses() -> None:
    assert "<" not in DEFAULT_SYSTEM_PROMPT.replace("<|", "")
    assert "your short reasoning" not in DEFAULT_SYSTEM_PROMPT
    # a reply written as the prompt describes it
    assert parse_verdict('{"reasoning": "B is more complete.", "verdict": "B>A"}').verdict.label == "B>A"


def test_retry_messages_keep_the_conversation_and_add_to_its_last_user_message() -> None:
    messages = [{"role": "system", "content": "judge"}, {"role": "user", "content": "the prompt"}]
    again = retry_messages(messages, "x" * 5000, "no verdict label found")
    assert messages == [{"role": "system", "content": "judge"}, {"role": "user", "content": "the prompt"}]
    assert [m["role"] for m in again] == ["system", "user"] and again[0] == messages[0]
    text = again[1]["content"]
    assert text.startswith("the prompt\n\n" + RETRY_MARK) and "(no verdict label found)" in text
    assert "x" * 1000 + " ..." in text and "x" * 1001 not in text
    assert '"A>>B", "A>B", "A=B", "B>A" or "B>>A"' in text
    with pytest.raises(Exception, match="no verdict"):  # the reminder itself is no verdict
        parse_verdict(retry_messages(messages, "", "empty judge answer")[1]["content"])
