"""The error tree: one unwrapper for task groups' exception groups."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import numpy as np
import pytest
from arena_helpers import arena_config, dataset

from arena_engine.batch.errors import BatchError
from arena_engine.errors import ArenaError, ConfigError, unwrap


def test_unwrap_gives_the_first_arena_error_of_a_group_of_them_and_cancellations() -> None:
    first, second = ConfigError("first"), ArenaError("second")
    group = BaseExceptionGroup("tg", [asyncio.CancelledError(), ExceptionGroup("inner", [first]), second])
    assert unwrap(group) is first
    assert unwrap(ExceptionGroup("tg", [second, first])) is second


def test_unwrap_leaves_a_group_with_other_errors_alone_unless_told() -> None:
    bug = ValueError("a bug")
    batch = BatchError("batch failed")
    group = ExceptionGroup("tg", [bug, batch])
    assert unwrap(group) is group
    assert unwrap(group, BatchError, alone=False) is batch
    assert unwrap(ExceptionGroup("tg", [bug]), alone=False).__class__ is ExceptionGroup
    assert unwrap(bug) is bug  # not a group: itself


def test_a_task_group_raising_an_arena_error_unwraps_to_it() -> None:
    error = ConfigError("bad")

    async def fail() -> None:
        raise error

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 10)
            tg.start_soon(fail)

    with pytest.raises(BaseExceptionGroup) as info:
        anyio.run(main)
    assert unwrap(info.value) is error


def test_retry_kinds_are_an_enum_with_the_strings_they_always_were() -> None:
    from arena_engine.client import RetryDecision, classify_status
    from arena_engine.errors import RetryKind
    from arena_engine.replies import read_reply

    assert [k.value for k in RetryKind] == ["done", "fatal", "retry", "reshape"]
    assert classify_status(401) is RetryKind.FATAL and classify_status(503) is RetryKind.RETRY
    assert classify_status(200) == "done" and str(RetryKind.RETRY) == "retry"
    fault = read_reply(b"{not json", "application/json")
    assert fault[0] is RetryKind.RETRY  # a Fault: malformed_json is worth another attempt
    assert RetryDecision(RetryKind.FATAL, "http_401: no").kind == "fatal"


@pytest.mark.parametrize(("error", "reason"), [
    (None, None),
    ("http_401: invalid api key", "http"),
    ("timeout", "timeout"),
    ("connection_reset", "connection_reset"),
    ("connect_error: ClientConnectorError", "connect_error"),
    ("retry_budget_exhausted: http_429: slow down", "retry_budget_exhausted"),
    ("endpoint_down: http_401: invalid api key", "endpoint_down"),
    ("text/html body, not JSON: <html>", "not_json"),
    ("no content (finish_reason: stop)", "no_content"),
    ("no content, only reasoning (finish_reason: length)", "no_content"),
    ("tool_calls instead of content: search", "tool_calls"),
    ("refusal: I cannot", "refusal"),
    ("no_choices", "no_choices"),
    ("error_in_body: overloaded", "error_in_body"),
    ("malformed_json", "malformed_json"),
    ("batch_failed: expired (tried 3 times)", "batch_failed"),
    ("something new", "error"),
])
def test_every_failure_string_has_a_typed_reason(error: str | None, reason: str | None) -> None:
    from arena_engine.errors import FailureReason, failure_reason

    got = failure_reason(error)
    assert got == reason
    assert got is None or isinstance(got, FailureReason)


def _failed(error: str, status: int | None) -> object:
    from arena_engine.client import ChatResult

    return ChatResult(None, (), None, 0, 0, 0.1, 1, status, error)


def test_a_failed_result_raises_as_a_request_error() -> None:
    from arena_engine.client import ChatResult
    from arena_engine.errors import FailureReason, FatalHTTPError, RequestError

    with pytest.raises(FatalHTTPError) as fatal:
        _failed("http_401: invalid api key", 401).raise_for_error()  # type: ignore[attr-defined]
    assert fatal.value.status == 401 and fatal.value.reason is FailureReason.HTTP
    assert "invalid api key" in str(fatal.value)
    with pytest.raises(RequestError) as spent:
        _failed("retry_budget_exhausted: http_503: busy", 503).raise_for_error()  # type: ignore[attr-defined]
    assert not isinstance(spent.value, FatalHTTPError)
    assert spent.value.reason is FailureReason.RETRY_BUDGET_EXHAUSTED
    with pytest.raises(RequestError) as throttled:
        _failed("http_429: slow down", 429).raise_for_error()  # type: ignore[attr-defined]
    assert not isinstance(throttled.value, FatalHTTPError)
    ok = ChatResult("hi", ("hi",), "stop", 1, 1, 0.1, 1, 200, None)
    ok.raise_for_error()
    assert ok.reason is None and _failed("timeout", None).reason is FailureReason.TIMEOUT  # type: ignore[attr-defined]


def test_batch_api_failures_are_request_errors() -> None:
    from arena_engine.batch.errors import BatchError, BatchRefusedError, BatchRequestError
    from arena_engine.batch.http import Transient, _refused
    from arena_engine.errors import FailureReason, FatalHTTPError, RequestError

    refused = _refused("upload failed: http_401: bad key", 401)
    assert isinstance(refused, BatchRefusedError) and isinstance(refused, FatalHTTPError)
    assert isinstance(refused, BatchError) and refused.status == 401 and refused.reason is FailureReason.HTTP
    conflict = _refused("create failed: http_409: busy", 409)
    assert type(conflict) is BatchRequestError and not isinstance(conflict, FatalHTTPError)
    spent = Transient("polling failed 6 time(s): http_503: busy", 503, FailureReason.RETRY_BUDGET_EXHAUSTED)
    assert isinstance(spent, RequestError) and isinstance(spent, BatchError) and spent.status == 503


def test_misuse_and_bad_arguments_are_arena_errors_and_what_they_were(tmp_path: Path) -> None:
    from arena_engine.errors import ArenaError, ArgumentError, UsageError
    from arena_engine.pipeline import Arena
    from arena_engine.rating import rate_battles

    assert issubclass(UsageError, RuntimeError) and issubclass(UsageError, ArenaError)
    assert issubclass(ArgumentError, ValueError) and issubclass(ArgumentError, ArenaError)
    one = np.zeros(1, dtype=np.int64)
    with pytest.raises(ArgumentError, match="outcome"):
        rate_battles(one, one + 1, np.array([3], dtype=np.int8), one, models=["a", "b"], baseline="a")
    cfg = arena_config("http://127.0.0.1:9/v1", tmp_path / "run", dataset(tmp_path, 2), ["a", "b"])
    with pytest.raises(ArgumentError, match="shard"):
        Arena(cfg, part=(2, 2))
    with pytest.raises(UsageError, match="async with Arena"):
        asyncio.run(Arena(cfg).run())


def test_excluded_games_have_a_typed_reason_with_the_strings_reports_show() -> None:
    from arena_engine.battles import ExclusionReason, Game, exclusions
    from arena_engine.errors import FailureReason

    def game(outcome: int | None, reason: str | None) -> Game:
        return Game("d", "s", "q", "m", "base", True, outcome, reason)

    failed = game(None, "judge request failed: retry_budget_exhausted: http_429: slow down")
    assert failed.excluded_because is ExclusionReason.JUDGE_REQUEST_FAILED
    assert failed.request_failure is FailureReason.RETRY_BUDGET_EXHAUSTED
    assert game(None, "unparseable verdict: no label").excluded_because is ExclusionReason.UNPARSEABLE_VERDICT
    assert game(None, "no answer: m").excluded_because is ExclusionReason.NO_ANSWER
    assert game(None, "something else").excluded_because is ExclusionReason.UNKNOWN
    assert game(None, None).excluded_because is ExclusionReason.UNKNOWN
    assert game(1, None).excluded_because is None and game(1, None).request_failure is None
    counts = exclusions([failed, game(None, "no answer: m")])[("d", "s")]
    assert counts.by_reason == {"judge request failed": 1, "no answer": 1}


def test_a_config_file_that_is_not_a_table_is_a_config_error(tmp_path: Path) -> None:
    from arena_engine.config import config_from_dict, load_config
    from arena_engine.errors import ConfigError

    path = tmp_path / "arena.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"arena\.json: a config is a table"):
        load_config(path)
    with pytest.raises(ConfigError, match="not NoneType"):
        config_from_dict(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("body", [
    b"{not json",
    b'{"choices": []}',
    b'{"error": {"message": "invalid model"}}',
    b'{"error": {"message": "server overloaded"}}',
    b'{"choices": [{"message": {"content": null, "refusal": "no"}, "finish_reason": "stop"}]}',
    b'{"choices": [{"message": {"content": null, "tool_calls": [{"function": {"name": "f"}}]}}]}',
    b'{"choices": [{"message": {"content": null}, "finish_reason": "content_filter"}]}',
    b'{"choices": [{"message": {"content": null}, "finish_reason": "stop"}]}',
    b'{"choices": [{"message": {"content": null, "reasoning_content": "hm"}, "finish_reason": "length"}]}',
])
def test_every_reason_a_reply_gives_has_its_own_failure_reason(body: bytes) -> None:
    from arena_engine.errors import FailureReason, failure_reason
    from arena_engine.replies import Fault, read_reply

    fault = read_reply(body, "application/json")
    assert isinstance(fault, Fault), fault
    assert failure_reason(fault.reason) not in (None, FailureReason.OTHER), fault.reason
    html = read_reply(b"<html>hi</html>", "text/html")
    assert isinstance(html, Fault) and failure_reason(html.reason) is FailureReason.NOT_JSON
