"""ChatClient against the reply shapes real servers send: each ends in an answer or a clear reason
(never None), and a request refused for its shape is resent once in the shape the endpoint takes."""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from shape_server import LLAMA_CPP_REFUSAL, Reply, ShapeServer, completion, shape_server

from arena_engine.client import ChatClient, ChatResult, Endpoint, EnvVar, RetryPolicy, Timeouts
from arena_engine.errors import ConfigError
from arena_engine.judge import VERDICT_SCHEMA
from tests.waiting import serves

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(max_attempts=4, max_time=20.0, base_delay=0.01, max_delay=0.02)
ASK = [{"role": "user", "content": "question"}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def endpoint(url: str, **kw: Any) -> Endpoint:
    kw.setdefault("retry", FAST)
    kw.setdefault("timeouts", Timeouts(connect=2.0, read=5.0, total=10.0))
    return Endpoint("shape", url, "m", **kw)


async def ask(answer: Any, params: dict[str, Any] | None = None, **kw: Any) -> tuple[ChatResult, ShapeServer]:
    async with shape_server(answer) as server, ChatClient(endpoint(server.url, **kw)) as client:
        result = await client.chat(ASK, params)
    return result, server


# ------------------------------------------------------------------------------- shapes of a 200


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (completion(None, refusal="I can't help with that."), "refusal: I can't help with that."),
        (completion(None, finish_reason="tool_calls", tool_calls=[
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]),
         "tool_calls instead of content: get_weather"),
        (completion(None, finish_reason="content_filter"),
         "content_filter: the server's content filter removed the answer"),
        (completion(None), "no content (finish_reason: stop)"),
        ({"id": "x", "object": "chat.completion", "choices": [], "message": "model is loading, retry later"},
         "no_choices: model is loading, retry later"),
        ({"detail": "No choices: the upstream returned nothing"}, "no_choices: No choices: the upstream returned nothing"),
        ({"error": {"message": "Invalid model name", "type": "invalid_request_error"}},
         "error_in_body: Invalid model name"),
        ({"object": "error", "message": "This model's maximum context length is 2048 tokens", "code": 400},
         "error_in_body: This model's maximum context length is 2048 tokens"),
    ],
    ids=["refusal", "tool_calls", "content_filter", "null_content", "empty_choices", "no_choices_detail",
         "error_not_transient", "vllm_error_object"],
)
async def test_a_200_without_an_answer_fails_at_once_with_the_reason(reply: Reply, error: str) -> None:
    result, server = await ask(lambda body: reply)
    assert result.error == error
    assert not result.ok and result.content is None and result.attempts == 1 and len(server.seen) == 1


async def test_a_busy_error_inside_a_200_is_retried_and_its_message_shown() -> None:
    calls: list[int] = []

    def answer(body: dict[str, Any]) -> Reply:
        calls.append(1)
        if len(calls) < 3:
            return {"error": {"message": "upstream overloaded"}}
        return completion("fine now")

    result, _ = await ask(answer)
    assert result.ok and result.content == "fine now" and result.attempts == 3

    always, server = await ask(lambda body: {"error": {"message": "upstream overloaded"}})
    assert always.error == "retry_budget_exhausted: error_in_body: upstream overloaded"
    assert always.attempts == len(server.seen) == FAST.max_attempts


async def test_an_html_page_names_its_content_type_and_is_not_retried() -> None:
    page = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\x1b[31m<body>" + "x" * 200
    result, server = await ask(lambda body: web.Response(text=page, content_type="text/html"))
    assert result.error is not None and result.error.startswith(
        "text/html body, not JSON: <!DOCTYPE html> <html><head><title>Sign in</title></head>\\x1b[31m<body>xx")
    assert result.error.endswith("...") and "\x1b" not in result.error
    assert result.attempts == 1 and len(server.seen) == 1


async def test_cut_off_replies_keep_finish_reason_length() -> None:
    result, _ = await ask(lambda body: completion('{"reasoning": "A is', finish_reason="length"))
    assert result.ok and result.finish_reason == "length" and result.content == '{"reasoning": "A is'
    only_thinking, _ = await ask(lambda body: completion(None, finish_reason="length",
                                                         reasoning_content="Let me weigh both answers"))
    assert only_thinking.error == "no content, only reasoning (finish_reason: length)"
    assert only_thinking.finish_reason == "length" and only_thinking.attempts == 1


@pytest.mark.parametrize(
    ("message", "content", "reasoning"),
    [
        ({"content": "The answer is 4.", "reasoning_content": "2+2 is 4"}, "The answer is 4.", "2+2 is 4"),
        ({"content": "<think>\n2+2 is 4\n</think>\n\nThe answer is 4."}, "The answer is 4.", "2+2 is 4"),
        ({"content": "2+2 is 4\n</think>\nThe answer is 4."}, "The answer is 4.", "2+2 is 4"),  # template opened it
        ({"content": "The answer is 4.", "reasoning": "short"}, "The answer is 4.", "short"),
        ({"content": "<think>still thinking when the budget ran"}, None, None),
    ],
    ids=["reasoning_content", "think_block", "think_closed_only", "reasoning_field", "unclosed"],
)
async def test_reasoning_is_kept_apart_from_the_answer(message: dict[str, Any], content: str | None,
                                                       reasoning: str | None) -> None:
    body = completion(None)
    body["choices"][0]["message"].update(message)
    result, _ = await ask(lambda b: body)
    if content is None:
        assert result.error == "no content, only reasoning (finish_reason: stop)"
    else:
        assert result.ok and result.content == content and result.choices == (content,)
        assert result.reasoning == reasoning


# ------------------------------------------------------------------- refused request shapes


async def test_a_validation_error_is_not_retried_whatever_its_status() -> None:
    result, server = await ask(lambda body: (500, {"error": {"message": "1 validation error: Input should be a valid integer"}}))
    assert result.error == "http_500: 1 validation error: Input should be a valid integer"
    assert result.attempts == 1 and len(server.seen) == 1
    fastapi, _ = await ask(lambda body: (422, {"detail": [{"loc": ["body", "top_k"], "msg": "Extra inputs are not permitted"}]}))
    assert fastapi.error == "http_422: body.top_k: Extra inputs are not permitted"


def refuses_max_tokens(body: dict[str, Any]) -> Reply:
    if "max_tokens" in body:
        return 400, {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                          "Use 'max_completion_tokens' instead.", "param": "max_tokens"}}
    return completion(f"budget {body['max_completion_tokens']}")


async def test_max_tokens_becomes_max_completion_tokens_once_per_endpoint() -> None:
    async with shape_server(refuses_max_tokens) as server, ChatClient(endpoint(server.url)) as client:
        first = await client.chat(ASK, {"max_tokens": 50})
        later = [await client.chat(ASK, {"max_tokens": 60 + i}) for i in range(3)]
    assert first.ok and first.content == "budget 50" and first.attempts == 2
    assert [r.content for r in later] == ["budget 60", "budget 61", "budget 62"]
    assert all(r.attempts == 1 for r in later)
    assert [("max_tokens" in b, "max_completion_tokens" in b) for b in server.bodies()] == [
        (True, False), (False, True), (False, True), (False, True), (False, True)]
    assert client.stats.reshaped == 1 and client.stats.retries == 0


def llama_cpp_0336(body: dict[str, Any]) -> Reply:
    """llama-cpp-python 0.3.36: json_schema is a 500; json_object takes a schema."""
    rf = body.get("response_format")
    if rf is not None and rf.get("type") not in ("text", "json_object"):
        return 500, LLAMA_CPP_REFUSAL
    shaped = "schema" if rf and "schema" in rf else "free"
    return completion(f'{{"reasoning": "{shaped}", "verdict": "A>B"}}')


async def test_json_schema_falls_back_to_json_object_with_the_schema_once_per_endpoint() -> None:
    params = {"temperature": 0.0, "response_format": VERDICT_SCHEMA}
    async with shape_server(llama_cpp_0336) as server, ChatClient(endpoint(server.url)) as client:
        first = await client.chat(ASK, params)
        later = [await client.chat(ASK, params) for _ in range(3)]
    assert first.ok and first.attempts == 2 and first.content == '{"reasoning": "schema", "verdict": "A>B"}'
    assert all(r.ok and r.attempts == 1 for r in later)
    kinds = [b["response_format"]["type"] for b in server.bodies()]
    assert kinds == ["json_schema", "json_object", "json_object", "json_object", "json_object"]
    sent_schema = server.bodies()[1]["response_format"]["schema"]
    assert sent_schema == VERDICT_SCHEMA["json_schema"]["schema"]  # type: ignore[index]
    assert params["response_format"] is VERDICT_SCHEMA  # the caller's params are not changed
    assert client.stats.reshaped == 1 and client.stats.retries == 0


async def test_an_endpoint_refusing_every_format_gets_plain_text_and_each_shape_once() -> None:
    def no_formats(body: dict[str, Any]) -> Reply:
        if "response_format" in body:
            return 400, {"error": {"message": "response_format is not supported by this server"}}
        return completion('{"reasoning": "plain", "verdict": "B>A"}')

    params = {"response_format": VERDICT_SCHEMA}
    async with shape_server(no_formats) as server, ChatClient(endpoint(server.url)) as client:
        first = await client.chat(ASK, params)
        second = await client.chat(ASK, params)
    assert first.ok and second.ok and second.attempts == 1
    shapes = [(b.get("response_format") or {}).get("type", "text") + ("+schema" if "schema" in (b.get("response_format") or {}) else "")
              for b in server.bodies()]
    assert shapes == ["json_schema", "json_object+schema", "json_object", "text", "text"]


async def test_a_server_error_about_something_else_keeps_the_format_and_is_retried() -> None:
    calls: list[int] = []

    def flaky(body: dict[str, Any]) -> Reply:
        calls.append(1)
        return (503, {"error": {"message": "overloaded"}}) if len(calls) == 1 else completion("ok")

    result, server = await ask(flaky, {"response_format": VERDICT_SCHEMA})
    assert result.ok and result.attempts == 2
    assert [b["response_format"]["type"] for b in server.bodies()] == ["json_schema", "json_schema"]


# -------------------------------------------------------------- headers, query, extra body


async def test_extra_headers_query_params_and_extra_body_reach_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "azure-SECRET-5e1f0c"
    monkeypatch.setenv("AZURE_TEST_KEY", secret)

    def echo_key(body: dict[str, Any]) -> Reply:
        return 401, {"error": {"message": f"Access denied: key {secret} is not valid for this resource"}}

    ep = dict(extra_headers={"api-key": EnvVar("AZURE_TEST_KEY"), "x-team": "evals"},
              query_params={"api-version": "2024-10-21"},
              extra_body={"top_k": 5, "temperature": 0.9})
    result, server = await ask(lambda body: completion("hi"), {"temperature": 0.0}, **ep)
    seen = server.seen[0]
    assert result.ok
    assert seen.headers["api-key"] == secret and seen.headers["x-team"] == "evals"
    assert "Authorization" not in seen.headers
    assert seen.query == {"api-version": "2024-10-21"}
    assert seen.body["top_k"] == 5 and seen.body["temperature"] == 0.0  # the request's own params win

    async with shape_server(echo_key) as server, ChatClient(endpoint(server.url, **ep)) as client:
        denied = await client.chat(ASK)
        shown = repr(client) + repr(vars(client)) + repr(denied)
    assert denied.error == "http_401: Access denied: key *** is not valid for this resource"
    assert secret not in shown


async def test_a_header_secret_whose_variable_is_unset_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"AZURE_TEST_KEY \(header 'api-key'\)"):
        ChatClient(endpoint("http://127.0.0.1:9/v1", extra_headers={"api-key": EnvVar("AZURE_TEST_KEY")}))
    with pytest.raises(ConfigError, match=r"extra_body\.messages"):
        endpoint("http://127.0.0.1:9/v1", extra_body={"messages": []})
    with pytest.raises(ConfigError, match="Content-Type"):
        endpoint("http://127.0.0.1:9/v1", extra_headers={"Content-Type": "text/plain"})


# ------------------------------------------------------------------------ against fakellm


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def fakellm(tmp: Path, rules: list[dict[str, Any]]) -> AsyncIterator[str]:
    if importlib.util.find_spec("fakellm") is None:
        pytest.skip("fakellm is not installed: pip install -e '.[test]'")
    config = tmp / "fakellm.yaml"
    config.write_bytes(orjson.dumps({"version": 1, "rules": rules}))
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fakellm.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        def probe() -> None:
            with urllib.request.urlopen(f"{base}/_fakellm/stats", timeout=2):
                pass

        if not serves(proc, probe, 60, interval=0.1):
            raise AssertionError("fakellm did not start")
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_fakellm_tool_calls_and_think_blocks(tmp_path: Path) -> None:
    rules = [
        {"name": "tools", "when": {"model_matches": "tool-model"},
         "respond": {"tool_calls": [{"name": "lookup", "arguments": {"q": "x"}}]}},
        {"name": "thinker", "when": {"model_matches": "think-model"},
         "respond": {"content": "<think>B misses the second part.</think>\n{\"reasoning\": \"A is complete\", \"verdict\": \"A>B\"}"}},
        {"name": "broken", "when": {"model_matches": "broken-model"}, "respond": {"status": 503, "error": "upstream overloaded (fakellm)"}},
    ]
    async with fakellm(tmp_path, rules) as url:
        async with ChatClient(Endpoint("t", url, "tool-model", retry=FAST)) as client:
            tools = await client.chat(ASK)
        async with ChatClient(Endpoint("t", url, "think-model", retry=FAST)) as client:
            thought = await client.chat(ASK)
        async with ChatClient(Endpoint("t", url, "broken-model", retry=FAST)) as client:
            broken = await client.chat(ASK)
    assert tools.error == "tool_calls instead of content: lookup" and tools.finish_reason == "tool_calls"
    assert tools.attempts == 1
    assert thought.ok and thought.content == '{"reasoning": "A is complete", "verdict": "A>B"}'
    assert thought.reasoning == "B misses the second part."
    assert broken.error == "retry_budget_exhausted: http_503: upstream overloaded (fakellm)"
