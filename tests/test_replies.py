"""The pure pieces of reply reading: where reasoning ends, which refusals are about a request's shape."""

from __future__ import annotations

import pytest

from arena_engine.judge import VERDICT_SCHEMA
from arena_engine.replies import (
    format_ladder,
    is_validation_error,
    refused_token_param,
    refuses_format,
    snippet,
    split_reasoning,
)


@pytest.mark.parametrize(
    ("text", "answer", "reasoning"),
    [
        ("plain answer", "plain answer", None),
        ("<think>a</think><think>b</think> answer", "answer", "a\n\nb"),
        ("<THINKING>x</THINKING>\nanswer", "answer", "x"),
        ("Use <think> tags like <think>this</think> in prompts.", "Use <think> tags like <think>this</think> in prompts.", None),
        ("Answer first.\n<think>late</think>", "Answer first.\n<think>late</think>", None),  # only leading blocks
        ("thought\n</think>\nanswer", "answer", "thought"),
        ("<think>never closed", "", "never closed"),
    ],
)
def test_split_reasoning(text: str, answer: str, reasoning: str | None) -> None:
    assert split_reasoning(text) == (answer, reasoning)


@pytest.mark.parametrize(
    ("message", "body", "swap"),
    [
        ("Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
         {"max_tokens": 5}, ("max_tokens", "max_completion_tokens")),
        ("body.max_completion_tokens: Extra inputs are not permitted", {"max_completion_tokens": 5},
         ("max_completion_tokens", "max_tokens")),
        ("max_tokens must be at least 1", {"max_tokens": 0}, None),
        ("max_tokens is too large: 9999. This model supports at most 4096 completion tokens", {"max_tokens": 9999}, None),
        ("Unsupported parameter: 'max_tokens'", {"temperature": 0}, None),  # not sent: nothing to swap
    ],
)
def test_refused_token_param(message: str, body: dict[str, int], swap: tuple[str, str] | None) -> None:
    assert refused_token_param(message, body) == swap


def test_which_refusals_are_about_the_format_or_the_validator() -> None:
    assert refuses_format("1 validation error: ... 'msg': \"Input should be 'text' or 'json_object'\"")
    assert refuses_format("Invalid parameter: 'response_format' of type 'json_schema' is not supported")
    assert not refuses_format("The server is overloaded, try again later")
    assert is_validation_error("1 validation error for Request\nbody.top_k\n  Extra inputs are not permitted")
    assert not is_validation_error("upstream connect error or disconnect/reset before headers")


def test_format_ladder_ends_in_plain_text() -> None:
    names = [s.name for s in format_ladder(VERDICT_SCHEMA)]
    assert names == ["json_schema", "json_object+schema", "json_object", "text"]
    assert [s.name for s in format_ladder({"type": "json_object"})] == ["json_object", "text"]
    assert [s.name for s in format_ladder({"type": "text"})] == ["text"]


def test_snippet_keeps_one_line_and_escapes_control_characters() -> None:
    assert snippet("a\n\tb \x1b[2J\x07c", 80) == "a b \\x1b[2J\\x07c"
    assert snippet("x" * 100, 10) == "x" * 10 + "..."
