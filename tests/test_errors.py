"""The error tree: one unwrapper for task groups' exception groups."""

from __future__ import annotations

import asyncio

import anyio
import pytest

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
