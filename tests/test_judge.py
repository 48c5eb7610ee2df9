"""Verdict parsing and the combination of a battle's two games."""

from __future__ import annotations

import pytest

from arena_engine.errors import VerdictError
from arena_engine.judge import (
    DEFAULT_SYSTEM_PROMPT,
    DEFAULT_TEMPLATE,
    Verdict,
    candidate_view,
    consistent,
    parse_verdict,
    render_prompt,
    sample_score,
)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ('{"reasoning": "A is right", "verdict": "A>B"}', "A>B"),
        ('```json\n{"reasoning": "B covers more", "verdict": "B>>A"}\n```', "B>>A"),
        ("<think>maybe [[A>B]] or [[B>A]]?</think>\nMy final verdict is [[A=B]].", "A=B"),
        ("Both fine. My final verdict is: [[B>A]]", "B>A"),
        ('{"verdict": "[[A>>B]]", "reasoning": "x"}', "A>>B"),
        ("Labels: [[A>>B]], [[A>B]], [[A=B]], [[B>A]], [[B>>A]].\nVerdict: [[B>A]]", "B>A"),
        ("final: [[B<A]]", "A>B"),
    ],
)
def test_parse_accepts_both_forms(text: str, label: str) -> None:
    assert parse_verdict(text).verdict.label == label


def test_parse_keeps_reasoning_from_json() -> None:
    parsed = parse_verdict('{"reasoning": "A cites the source", "verdict": "A>B"}')
    assert parsed.reasoning == "A cites the source"


@pytest.mark.parametrize(
    "text",
    ["", "I cannot decide.", "[[A>B]] but on reflection [[B>A]]", '{"verdict": "A>B"} {"verdict": "B>A"}',
     "<think>[[A>B]]</think>", '{"verdict": "maybe"}'],
)
def test_parse_failures_raise(text: str) -> None:
    with pytest.raises(VerdictError):
        parse_verdict(text)


def test_render_prompt_does_not_expand_placeholders_inside_answers() -> None:
    out = render_prompt(DEFAULT_TEMPLATE, question="Q {answer_b}", answer_a="uses {reference} and {x}",
                        answer_b="B", reference=None)
    assert "Q {answer_b}" in out and "uses {reference} and {x}" in out
    assert "A>>B" in DEFAULT_SYSTEM_PROMPT


def test_sample_score_and_consistency() -> None:
    # candidate strong win in one order, win in the other: agreeing wins, strong -> 1.0
    assert sample_score(2, 1) == 1.0
    assert sample_score(1, 1) == 0.75
    assert sample_score(0, 0) == 0.5
    assert sample_score(1, -1) == 0.5  # orders disagree: a tie
    assert sample_score(-1, -2) == 0.0
    assert sample_score(-1, -1) == 0.25
    assert sample_score(None, 1) is None
    assert consistent(1, 2) is True and consistent(1, 0) is False
    # the game with the baseline as A is turned around to the candidate's side
    assert candidate_view(Verdict.A_BETTER, candidate_is_a=False) == -1
    assert candidate_view(Verdict.B_MUCH_BETTER, candidate_is_a=False) == 2


_FORMAT = ("Output your final verdict by strictly following this format:\n1. Assistant A is significantly better: "
           "[[A>>B]]\n2. Tie, relatively the same: [[A=B]]\n3. Assistant B is significantly better: [[B>>A]]\n\n"
           'Example output: "My final verdict is tie: [[A=B]]".\n\nQuestion: what is 2+2?\nA: 4\nB: 5')
_JSON_EXAMPLE = 'Reply like this example:\n{"reasoning": "Both are equally complete.", "verdict": "A=B"}\n\nQ: 2+2?'


@pytest.mark.parametrize("prompt", [_FORMAT, _JSON_EXAMPLE])
def test_a_reply_that_echoes_the_prompt_holds_no_verdict(prompt: str) -> None:
    echo = f"[echo] model=judge time=2026-01-01T00:00:00Z messages=2\nUser: {prompt}"
    with pytest.raises(VerdictError, match="only repeats the judge prompt"):
        parse_verdict(echo, prompt)
    # without the prompt, the single example would be read as the verdict
    if prompt is _JSON_EXAMPLE:
        assert parse_verdict(echo).verdict is Verdict.TIE


def test_a_verdict_written_like_the_prompts_example_is_still_read() -> None:
    # the judge's own words before the example's sentence: not copied
    mine = "A gives the right sum and B does not, so A is clearly better.\n\nMy final verdict is: [[A>>B]]"
    assert parse_verdict(mine, _FORMAT).verdict is Verdict.A_MUCH_BETTER
    tie = "Both answers are equally terse here, neither adds anything.\nMy final verdict is tie: [[A=B]]"
    assert parse_verdict(tie, _FORMAT).verdict is Verdict.TIE
    # a short reply equal to the prompt's example has no copied context around its label: it is a verdict
    assert parse_verdict("My final verdict is tie: [[A=B]]", _FORMAT).verdict is Verdict.TIE
    assert parse_verdict('{"reasoning": "Both are equally complete.", "verdict": "A=B"}', _JSON_EXAMPLE).verdict is Verdict.TIE
