"""One row of an EvalScope review or prediction file as an :class:`ImportedAnswer` (see
`evalscope_import` for which fields of a row give the answer, the question, its context and the usage);
a problem is a :class:`DatasetError` naming ``file:line: field: problem``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from arena_engine.errors import DatasetError
from arena_engine.evalscope_files import BOM

__all__ = ["Context", "ImportedAnswer", "read_rows"]

Context = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ImportedAnswer:
    """One answer of one model to one sample of an EvalScope run."""

    model: str
    """The ``<model>`` folder name of the EvalScope run."""
    dataset: str
    subset: str
    index: int
    """EvalScope's 0-based sample index in the subset (our default query id when records have no ``id``)."""
    question: str
    answer: str
    reference: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency: float | None
    context: Context | None = ()
    """(role, text) of the messages before the question: system prompt, earlier turns; () for a bare
    question, None when the row does not say (an older row whose ``input`` is a plain string)."""
    source: str = field(default="", compare=False)
    """The file the row was read from (where it was read is not part of the answer: not compared)."""
    line: int = field(default=0, compare=False)
    """The row's 1-based line in ``source``."""


def read_rows(path: Path, model: str, dataset: str, subset: str) -> dict[int, ImportedAnswer]:
    rows: dict[int, ImportedAnswer] = {}
    first_line: dict[int, int] = {}
    for lineno, rec in _iter_jsonl(path):
        where = f"{path}:{lineno}"
        key = _row_key(rec, where)
        if key is None:
            continue  # a repeat (generation_index > 0)
        if key in first_line:
            raise DatasetError(f"{where}: index: duplicate index {key} (first on line {first_line[key]})")
        first_line[key] = lineno
        rows[key] = _answer(rec, where, model, dataset, subset, key, str(path), lineno)
    return rows


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1:
                raw = raw.removeprefix(BOM)
            if not raw.strip():
                continue
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: json: invalid JSON ({exc})") from None
            if not isinstance(rec, dict):
                raise DatasetError(f"{path}:{lineno}: row: expected a JSON object")
            yield lineno, rec


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _row_key(rec: Mapping[str, Any], where: str) -> int | None:
    score = rec.get("sample_score")
    if isinstance(score, dict) and "generation_index" in score:
        gen = score["generation_index"]
        if not _int(gen):
            raise DatasetError(f"{where}: sample_score.generation_index: expected an integer")
        if gen != 0:
            return None
        group = score.get("group_id")
        if isinstance(group, int) and not isinstance(group, bool) and group >= 0:
            return group
    if "index" not in rec:
        raise DatasetError(f"{where}: index: missing (every EvalScope row has its sample index)")
    index = rec["index"]
    if not _int(index) or index < 0:
        raise DatasetError(f"{where}: index: expected a non-negative integer, got {index!r}")
    return int(index)


def _text(content: Any, where: str, field: str) -> str:
    """Text of a message content: a string, or the text parts of an EvalScope/OpenAI content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise DatasetError(f"{where}: {field}: a text part without a string 'text'")
                parts.append(text)
        return "".join(parts)
    raise DatasetError(f"{where}: {field}: expected a string or a list of content parts")


def _last(messages: list[Any], role: str) -> tuple[int, Mapping[str, Any]] | None:
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        if isinstance(msg, dict) and msg.get("role") == role:
            return i, msg
    return None


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _answer(
    rec: Mapping[str, Any], where: str, model: str, dataset: str, subset: str, key: int, source: str, line: int
) -> ImportedAnswer:
    messages = rec.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise DatasetError(f"{where}: messages: expected a list")
    messages = messages or []
    output = _dict(rec.get("model_output"))
    choices = output.get("choices")
    first_choice = _dict(choices[0]) if isinstance(choices, list) and choices else {}
    sample_score = _dict(rec.get("sample_score"))

    answer_msg: Mapping[str, Any] | None = None
    found = _last(messages, "assistant")
    user = _last(messages, "user")
    if found is not None and user is not None and found[0] < user[0]:
        found = None  # an earlier turn of the chat, not the answer to its last question
    if found is not None:
        answer_msg = found[1]
        answer = _text(answer_msg.get("content"), where, f"messages[{found[0]}].content")
    elif "message" in first_choice:
        answer_msg = _dict(first_choice["message"])
        answer = _text(answer_msg.get("content"), where, "model_output.choices[0].message.content")
    elif isinstance(_dict(sample_score.get("score")).get("prediction"), str):
        answer = sample_score["score"]["prediction"]
    else:
        raise DatasetError(f"{where}: messages: no assistant message and no model_output or prediction")

    context: Context | None
    if user is not None:
        question = _text(user[1].get("content"), where, f"messages[{user[0]}].content")
        context = _context(messages[: user[0]], where, "messages")
    elif "input" in rec:
        raw = rec["input"]
        user_in = _last(raw, "user") if isinstance(raw, list) else None
        question = _text(user_in[1].get("content") if user_in else raw, where, "input")
        context = _context(raw[: user_in[0]], where, "input") if user_in else None
    else:
        raise DatasetError(f"{where}: messages: no user message (and no input)")

    reference: str | None = None
    if "target" in rec:
        target = rec["target"]
        if isinstance(target, list):
            target = next((t for t in target if isinstance(t, str) and t.strip()), None)
        elif target is not None and not isinstance(target, str):
            raise DatasetError(f"{where}: target: expected a string or a list of strings")
        reference = target if target and target.strip() else None

    usage = _dict(output.get("usage"))
    prompt_tokens = usage.get("input_tokens", usage.get("prompt_tokens"))
    completion_tokens = usage.get("output_tokens", usage.get("completion_tokens"))
    for name, value in (("input_tokens", prompt_tokens), ("output_tokens", completion_tokens)):
        if value is not None and (not _int(value) or value < 0):
            raise DatasetError(f"{where}: model_output.usage.{name}: expected a non-negative integer")

    latency = _dict(answer_msg.get("perf_metrics") if answer_msg else None).get("latency")
    if latency is None:
        latency = _dict(output.get("perf_metrics")).get("latency", output.get("time"))
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, int | float)):
        raise DatasetError(f"{where}: perf_metrics.latency: expected a number of seconds")

    return ImportedAnswer(
        model=model,
        dataset=dataset,
        subset=subset,
        index=key,
        question=question,
        answer=answer,
        reference=reference,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency=float(latency) if latency is not None else None,
        context=context,
        source=source,
        line=line,
    )


def _context(messages: list[Any], where: str, field_name: str) -> Context:
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise DatasetError(f"{where}: {field_name}[{i}]: expected a message with a string 'role'")
        content = msg.get("content")
        text = "" if content is None else _text(content, where, f"{field_name}[{i}].content")
        out.append((msg["role"], text))
    return tuple(out)
