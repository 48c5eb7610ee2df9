"""Judge prompts, verdict parsing and the combination of a battle's two games.

A battle is one query answered by a candidate and by the baseline. It is judged twice: once with the
candidate as assistant A ("AB"), once with the baseline as A ("BA"), so position bias cancels. Each
game's verdict is one of five labels; from the candidate's side they become strong win, win, tie, loss
or strong loss, and the two games together give the sample score (docs/spec.md, section 1, item 6).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import VerdictError


class Verdict(enum.IntEnum):
    """A game's outcome from assistant A's point of view (the rating kernels' int8 code)."""

    A_MUCH_BETTER = 2
    A_BETTER = 1
    TIE = 0
    B_BETTER = -1
    B_MUCH_BETTER = -2

    @property
    def label(self) -> str:
        return _LABEL_OF[self]

    @classmethod
    def from_label(cls, label: str) -> Verdict:
        return _VERDICT_OF[label]


_LABEL_OF = {
    Verdict.A_MUCH_BETTER: "A>>B",
    Verdict.A_BETTER: "A>B",
    Verdict.TIE: "A=B",
    Verdict.B_BETTER: "B>A",
    Verdict.B_MUCH_BETTER: "B>>A",
}
_VERDICT_OF = {label: verdict for verdict, label in _LABEL_OF.items()}
LABELS: tuple[str, ...] = tuple(_LABEL_OF.values())

DEFAULT_SYSTEM_PROMPT = """\
You are an impartial judge of AI assistants. You will see a user question and the answers of two \
assistants, A and B. Judge which answer serves the user better: correctness first, then helpfulness, \
relevance, depth and clarity. Do not let the order of the answers, their length or the assistants' \
names sway you. If a reference answer is given, use it to check correctness.

Think briefly, then give exactly one verdict label:
- "A>>B": A is significantly better
- "A>B": A is slightly better
- "A=B": tie, relatively the same
- "B>A": B is slightly better
- "B>>A": B is significantly better

Reply with one JSON object and nothing else. It has two keys: "reasoning", one or two sentences on \
why, and "verdict", exactly one of the five labels above."""

_QUESTION_BLOCK = """\
<|User Prompt|>
{question}

"""
_REFERENCE_BLOCK = """\
<|The Start of Reference Answer|>
{reference}
<|The End of Reference Answer|>

"""
_ANSWERS_BLOCK = """\
<|The Start of Assistant A's Answer|>
{answer_a}
<|The End of Assistant A's Answer|>

<|The Start of Assistant B's Answer|>
{answer_b}
<|The End of Assistant B's Answer|>"""

DEFAULT_TEMPLATE = _QUESTION_BLOCK + _ANSWERS_BLOCK
DEFAULT_REFERENCE_TEMPLATE = _QUESTION_BLOCK + _REFERENCE_BLOCK + _ANSWERS_BLOCK

PLACEHOLDERS = ("question", "answer_a", "answer_b", "reference")
_PLACEHOLDER_RE = re.compile(r"\{(question|answer_a|answer_b|reference)\}")

VERDICT_SCHEMA: dict[str, object] = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "reasoning": {"type": "string"},
                "verdict": {"type": "string", "enum": list(LABELS)},
            },
            "required": ["reasoning", "verdict"],
            "additionalProperties": False,
        },
    },
}


#: Longest previous reply quoted in a retry's prompt.
MAX_QUOTED_REPLY = 1000

_RETRY_BLOCK = """

Your previous reply to this was:
<|The Start of Your Previous Reply|>
{reply}
<|The End of Your Previous Reply|>
It held no verdict that could be read ({problem}). Reply again with one JSON object and nothing else. \
It has two keys: "reasoning", one or two sentences on why, and "verdict", exactly one of \
"A>>B", "A>B", "A=B", "B>A" or "B>>A"."""

_EMPTY_RETRY_BLOCK = """

Your previous reply to this was empty. Reply with one JSON object and nothing else. It has two keys: \
"reasoning", one or two sentences on why, and "verdict", exactly one of "A>>B", "A>B", "A=B", "B>A" \
or "B>>A"."""


def retry_messages(messages: list[dict[str, Any]], reply: str | None, problem: str) -> list[dict[str, Any]]:
    """The judge request to send after an unreadable verdict: the same conversation, its last user
    message followed by the reply it got (quoted, cut to MAX_QUOTED_REPLY characters) and the verdict
    format again. One user message rather than a new turn, so chat templates that insist on
    alternating roles take it, and what the judge reads about the answers is unchanged."""
    out = [dict(m) for m in messages]
    last = next((m for m in reversed(out) if m.get("role") == "user" and isinstance(m.get("content"), str)), None)
    if last is None:
        last = {"role": "user", "content": ""}
        out.append(last)
    text = (reply or "").strip()
    if text:
        if len(text) > MAX_QUOTED_REPLY:
            text = text[:MAX_QUOTED_REPLY] + " ..."
        block = _RETRY_BLOCK.format(reply=text, problem=problem)
    else:
        block = _EMPTY_RETRY_BLOCK
    last["content"] = last["content"] + block
    return out


#: The largest completion budget a retry asks for after a reply cut off by the budget.
MAX_RETRY_BUDGET = 16384
#: The budget a retry asks for when the request set none and the server's own default cut the reply.
RETRY_BUDGET_WITHOUT_LIMIT = 2048


def retry_budget(params: dict[str, Any]) -> dict[str, Any] | None:
    """`params` with twice the completion budget (max_completion_tokens or max_tokens, whichever is
    set), at most MAX_RETRY_BUDGET; None if that is no larger."""
    key = "max_completion_tokens" if "max_completion_tokens" in params else "max_tokens"
    old = params.get(key)
    if old is None:
        new = RETRY_BUDGET_WITHOUT_LIMIT
    elif isinstance(old, int) and not isinstance(old, bool) and old > 0:
        new = min(2 * old, MAX_RETRY_BUDGET)
        if new <= old:
            return None
    else:
        return None
    return {**params, key: new}


def render_prompt(template: str, *, question: str, answer_a: str, answer_b: str, reference: str | None) -> str:
    """Fill a judge template in one pass, so braces inside answers are never taken as placeholders."""
    values = {"question": question, "answer_a": answer_a, "answer_b": answer_b, "reference": reference or ""}
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


# ---------------------------------------------------------------------------------------------- parsing

_THINK_RE = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_UNCLOSED_THINK_RE = re.compile(r"^\s*<(think|thinking|reasoning)>.*", re.DOTALL | re.IGNORECASE)
_FENCE_RE = re.compile(r"```[a-zA-Z0-9_-]*")
_JSON_VERDICT_RE = re.compile(r'"verdict"\s*:\s*"\s*\[*\s*([AB=<>\s]{3,8}?)\s*\]*\s*"', re.IGNORECASE)
_BRACKET_RE = re.compile(r"\[\[\s*([AB][=<>]{1,2}[AB])\s*\]\]", re.IGNORECASE)
_JSON_OBJECT_RE = re.compile(r"\{.*\}", re.DOTALL)
# Three or more different labels separated only by ", " / " or " are the instructions echoed back.
_ECHO_GAP = 6
#: A verdict label inside this many characters copied verbatim from the judge's prompt is an echo.
ECHO_RUN = 80
_NO_LABEL = "no verdict label found"


@dataclass(frozen=True, slots=True)
class ParsedVerdict:
    verdict: Verdict
    reasoning: str


def _normalise(label: str) -> str | None:
    label = re.sub(r"\s+", "", label).upper()
    if label in _VERDICT_OF:
        return label
    # judges sometimes write the mirror image: "B<A" means "A>B"
    mirrored = {"B<A": "A>B", "B<<A": "A>>B", "A<B": "B>A", "A<<B": "B>>A", "B=A": "A=B"}
    return mirrored.get(label)


def _strip_echoed(hits: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Drop runs of three or more distinct labels written next to each other (an echoed label list)."""
    keep: list[tuple[int, int, str]] = []
    i = 0
    while i < len(hits):
        j = i
        while j + 1 < len(hits) and hits[j + 1][0] - hits[j][1] <= _ECHO_GAP:
            j += 1
        run = hits[i : j + 1]
        if len({label for _, _, label in run}) < 3:
            keep.extend(run)
        i = j + 1
    return keep


def _copied_run(body: str, s: int, e: int, prompt: str) -> int:
    """The length of the longest stretch of ``body`` around ``body[s:e]`` found verbatim in ``prompt``
    (0 if the label itself is not in it). Each side is found by bisection: a stretch's parts are in the
    prompt whenever the stretch is."""
    if body[s:e] not in prompt:
        return 0
    lo, hi = 0, s  # the smallest start l with body[l:e] in the prompt lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if body[mid:e] in prompt:
            hi = mid
        else:
            lo = mid + 1
    start = lo
    lo, hi = e, len(body)  # the largest end r with body[start:r] in the prompt
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if body[start:mid] in prompt:
            lo = mid
        else:
            hi = mid - 1
    return lo - start


def _blank_copied_labels(body: str, prompt: str) -> tuple[str, int]:
    """``body`` with every verdict label that sits in a long stretch copied from ``prompt`` blanked out,
    and how many were. A label counts as copied when it lies in at least :data:`ECHO_RUN` characters found
    verbatim in the prompt: an echo server sending the prompt back, format examples and all, or a judge
    quoting the instructions or an answer. A short reply equal to the prompt's example (``My final verdict
    is tie: [[A=B]]``, or a one-line JSON verdict) is shorter than that and is read as the verdict."""
    spans = []
    for regex in (_JSON_VERDICT_RE, _BRACKET_RE):
        for m in regex.finditer(body):
            if _copied_run(body, m.start(), m.end(), prompt) >= ECHO_RUN:
                spans.append(m.span())
    for s, e in spans:
        body = body[:s] + " " * (e - s) + body[e:]
    return body, len(spans)


def prompt_text(messages: list[dict[str, Any]]) -> str:
    """The text of a request's messages, as :func:`parse_verdict` compares a reply with it."""
    return "\n".join(m["content"] for m in messages if isinstance(m.get("content"), str))


def parse_verdict(text: str | None, prompt: str | None = None) -> ParsedVerdict:
    """Read one verdict from a judge's answer, in the JSON form or the ``[[A>B]]`` form.

    Think-blocks and code fences are ignored, as are label lists echoed from the instructions and, given
    the ``prompt`` the judge was sent (its messages' text), labels the reply copied from it. No label,
    or two different labels, raises :class:`VerdictError` with the reason.
    """
    if not text or not text.strip():
        raise VerdictError("empty judge answer")
    body = _THINK_RE.sub(" ", text)
    if "</think>" in body.lower():  # an opening tag lost by the server: keep what follows the last close
        body = body[body.lower().rfind("</think>") + len("</think>") :]
    body = _UNCLOSED_THINK_RE.sub(" ", body)
    body = _FENCE_RE.sub(" ", body)
    copied = 0
    if prompt:
        body, copied = _blank_copied_labels(body, prompt)
    try:
        return _parse_body(body)
    except VerdictError as exc:
        if copied and str(exc) == _NO_LABEL:
            raise VerdictError(f"the reply only repeats the judge prompt ({copied} verdict label(s) copied from its "
                               "text, e.g. its format examples): an echo, not a verdict") from None
        raise


def _parse_body(body: str) -> ParsedVerdict:

    reasoning = ""
    json_labels: list[str] = []
    for match in _JSON_OBJECT_RE.finditer(body):
        try:
            obj = orjson.loads(match.group(0))
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("verdict"), str):
            label = _normalise(obj["verdict"].strip("[] "))
            if label:
                json_labels.append(label)
                reasoning = str(obj.get("reasoning", "")) if obj.get("reasoning") is not None else ""
    if not json_labels:
        json_labels = [lab for m in _JSON_VERDICT_RE.finditer(body) if (lab := _normalise(m.group(1)))]
    if json_labels:
        distinct = set(json_labels)
        if len(distinct) > 1:
            raise VerdictError(f"conflicting verdicts {sorted(distinct)}")
        return ParsedVerdict(Verdict.from_label(json_labels[0]), reasoning)

    hits = [(m.start(), m.end(), lab) for m in _BRACKET_RE.finditer(body) if (lab := _normalise(m.group(1)))]
    hits = _strip_echoed(hits)
    distinct = {label for _, _, label in hits}
    if not distinct:
        raise VerdictError(_NO_LABEL)
    if len(distinct) > 1:
        raise VerdictError(f"conflicting verdicts {sorted(distinct)}")
    return ParsedVerdict(Verdict.from_label(hits[0][2]), body[: hits[0][0]].strip())


# ------------------------------------------------------------------------------------------ combination

SCORE_OF_SIGN = {2: 1.0, 1: 0.75, 0: 0.5, -1: 0.25, -2: 0.0}


def candidate_view(verdict: Verdict, candidate_is_a: bool) -> int:
    """The game's outcome from the candidate's side: 2 strong win .. -2 strong loss."""
    return int(verdict) if candidate_is_a else -int(verdict)


def sample_score(first: int | None, second: int | None) -> float | None:
    """Combine a battle's two games (candidate's view) into one score (docs/spec.md, section 1, item 6).

    If both orders agree on win/tie/loss that is the result, strong when an agreeing game said ``>>``;
    if they disagree the sample is a tie. A battle with an excluded game has no sample score.
    """
    if first is None or second is None:
        return None
    s1 = (first > 0) - (first < 0)
    s2 = (second > 0) - (second < 0)
    if s1 != s2:
        return 0.5
    if s1 == 0:
        return 0.5
    strong = abs(first) == 2 or abs(second) == 2
    return SCORE_OF_SIGN[s1 * (2 if strong else 1)]


def consistent(first: int | None, second: int | None) -> bool | None:
    """Whether the two games agree on win/tie/loss (None if a game is missing)."""
    if first is None or second is None:
        return None
    return ((first > 0) - (first < 0)) == ((second > 0) - (second < 0))
