"""What a checkpointed answer or verdict belongs to: the content keys of generations and judgments.

A **generation** key holds the configured model's *identity*, the endpoint's model id, the generation
params and the messages. The identity is ``"<name> @ <api_url>"`` unless the model sets ``identity``
(any string: to rename a model or move it to a mirror URL without paying again, set it to the old
identity, which ``--dry-run`` and report.json show) or ``reuse_answers_of = "<other model>"`` (share
that configured model's answers; both must then send the same model id and params, or nothing is
shared). So two configured models serving the same model id from two providers never share answers.

A **judgment** key holds the judge's identity (``"<name> @ <api_url>"`` or the judge's ``identity``),
its model id, params and the messages, which carry the question, both answers and their order. Two
battles whose judge prompts are byte-identical (two candidates gave the same answer) share one verdict:
the request is the same, so it is sent and paid once.

**Legacy keys.** Run folders written by arena-engine 0.1.0 keyed generations and judgments without any
identity. A lookup that misses tries the legacy key and accepts the record only when the record itself
names this model (``model``) or this judge (``judge``); the record is then copied under its new key,
so the folder migrates as it is used and nothing already paid for is asked again. A judge on the
default system prompt also finds the verdicts 0.1.0 got with its own default prompt (which asked for a
JSON object with placeholder text); those records carry ``legacy_key``.

**Retries of excluded verdicts.** ``run --retry-excluded`` asks the judge again for a verdict that was
unparseable; the new answer is stored under :func:`retry_key` (the old record stays), and a lookup
follows that chain to the latest answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .config import JudgeConfig, ModelConfig, RunConfig
from .datasets import Query
from .judge import DEFAULT_REFERENCE_TEMPLATE, DEFAULT_TEMPLATE, VERDICT_SCHEMA, render_prompt
from .store import content_key

KEY_VERSION = 2


def default_identity(name: str, api_url: str) -> str:
    return f"{name} @ {api_url}"


def model_identity(cfg: RunConfig, m: ModelConfig) -> str:
    """The identity a model's answers are stored under (see the module docstring)."""
    if m.reuse_answers_of is not None:
        m = cfg.model(m.reuse_answers_of)
    return m.identity or default_identity(m.name, m.endpoint.api_url)


def judge_identity(judge: JudgeConfig) -> str:
    return judge.identity or default_identity(judge.name, judge.endpoint.api_url)


def model_messages(m: ModelConfig, q: Query) -> list[dict[str, str]]:
    """The messages sent to ``m`` for ``q``: the query's, with the model's ``system_prompt`` combined
    with the query's own system message (its ``system`` field, or a leading system message) by
    ``system_prompt_combine``:

    - ``"prepend"`` (default): one system message, the model's prompt, a blank line, then the query's;
    - ``"replace"``: the model's prompt instead of the query's;
    - ``"fallback"``: the query's where it has one, else the model's.

    Without a ``system_prompt`` the query's messages are sent as they are (so the answer keys of runs
    made before the key existed do not change). The messages are part of the generation key: a
    changed prompt is a new answer, asked again.
    """
    messages = [dict(msg) for msg in q.messages]
    prompt = m.system_prompt
    if prompt is None:
        return messages
    own = messages[0]["content"] if messages and messages[0].get("role") == "system" else None
    if own is None:
        return [{"role": "system", "content": prompt}, *messages]
    if m.system_prompt_combine == "fallback":
        return messages
    content = prompt if m.system_prompt_combine == "replace" else f"{prompt}\n\n{own}"
    return [{"role": "system", "content": content}, *messages[1:]]


def generation_key(identity: str, endpoint_model: str, params: Mapping[str, Any],
                   messages: Sequence[Mapping[str, Any]]) -> bytes:
    return content_key({"t": "generation", "v": KEY_VERSION, "who": identity, "model": endpoint_model,
                        "params": params, "messages": messages})


def judgment_key(identity: str, endpoint_model: str, params: Mapping[str, Any],
                 messages: Sequence[Mapping[str, Any]]) -> bytes:
    return content_key({"t": "judgment", "v": KEY_VERSION, "who": identity, "model": endpoint_model,
                        "params": params, "messages": messages})


def legacy_generation_key(endpoint_model: str, params: Mapping[str, Any],
                          messages: Sequence[Mapping[str, Any]]) -> bytes:
    """The 0.1.0 key: no identity, so it cannot tell two providers of one model id apart."""
    return content_key({"t": "generation", "model": endpoint_model, "params": params, "messages": messages})


def legacy_judgment_key(endpoint_model: str, params: Mapping[str, Any],
                        messages: Sequence[Mapping[str, Any]]) -> bytes:
    return content_key({"t": "judgment", "model": endpoint_model, "params": params, "messages": messages})


def retry_key(key: bytes, n: int) -> bytes:
    """The key of the ``n``-th re-ask (n >= 1) of the verdict stored under ``key``."""
    return hashlib.blake2b(key + b"\0retry\0" + str(n).encode(), digest_size=len(key)).digest()


# ------------------------------------------------------------------------------------ lookups


@dataclass(frozen=True, slots=True)
class Request:
    """What one request sends, and the key its record is stored under."""

    messages: list[dict[str, Any]]
    params: dict[str, Any]
    key: bytes


def generation_request(identity: str, m: ModelConfig, q: Query) -> Request:
    messages = model_messages(m, q)
    params = dict(m.generation)
    return Request(messages, params, generation_key(identity, m.endpoint.model, params, messages))


def judgment_request(judge: JudgeConfig, identity: str, system: str, q: Query, answer_a: str,
                     answer_b: str) -> Request:
    """The judge request of one game (A's answer first) and its key, before any --retry-excluded re-ask."""
    messages, params = judge_request(judge, system, q.question, q.reference, answer_a, answer_b)
    return Request(messages, params, judgment_key(identity, judge.endpoint.model, params, messages))


class RecordReader(Protocol):
    def get(self, kind: str, key: bytes) -> dict[str, Any] | None: ...


class RecordStore(RecordReader, Protocol):
    def items(self, kind: str) -> Iterator[tuple[bytes, dict[str, Any]]]: ...


GENERATIONS = "generations"
JUDGMENTS = "judgments"

#: The default judge system prompt of release 0.1.0 (its verdicts stay usable: see find_judgment).
LEGACY_SYSTEM_PROMPT = """\
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

Reply with one JSON object and nothing else: {"reasoning": "<your short reasoning>", "verdict": "<label>"}"""




def judge_request(judge: JudgeConfig, system: str, question: str, reference: str | None, answer_a: str,
                  answer_b: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(messages, params) of the judge request for one game: what its key is made of."""
    template = judge.template or (DEFAULT_REFERENCE_TEMPLATE if reference is not None else DEFAULT_TEMPLATE)
    user = render_prompt(template, question=question, answer_a=answer_a, answer_b=answer_b, reference=reference)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    params = dict(judge.generation)
    if judge.structured_output:
        params["response_format"] = VERDICT_SCHEMA
    return messages, params


def holds_legacy(store: RecordStore, kind: str) -> bool:
    """Whether ``kind``'s records may include 0.1.0 ones: the folder's first record of that kind has no
    key version (a folder begun by this release never writes an old key, so its lookups skip them)."""
    for _, rec in store.items(kind):
        return "v" not in rec
    return False


def find_generation(store: RecordReader, m: ModelConfig, req: Request, *,
                    legacy: bool) -> tuple[dict[str, Any] | None, bool]:
    """(the answer stored for ``m`` under ``req.key``, or, in a folder that ``holds_legacy``, under the
    0.1.0 key if that record names ``m``; True when it came from the old key and should be copied)."""
    rec = store.get(GENERATIONS, req.key)
    if rec is not None or not legacy:
        return rec, False
    old_key = legacy_generation_key(m.endpoint.model, req.params, req.messages)
    old = store.get(GENERATIONS, old_key)
    if old is not None and old.get("model") == m.name and "v" not in old:
        return {**old, "v": KEY_VERSION, "legacy_key": old_key.hex()}, True
    return None, False


def find_judgment(store: RecordReader, judge: JudgeConfig, req: Request, *,
                  legacy: bool) -> tuple[bytes, dict[str, Any] | None, int, bool]:
    """(key of the latest stored verdict, its record, how many re-asks the retry chain holds, True when
    the first record came from the 0.1.0 key and should be copied under ``req.key``).

    In a folder that ``holds_legacy``, a 0.1.0 verdict is looked up under the prompt the request has
    and, when the judge uses the default system prompt, under the prompt 0.1.0 sent by default (only its
    closing format line differs), so a folder of that release is not paid for twice after the default
    prompt changed."""
    key = req.key
    rec = store.get(JUDGMENTS, key)
    migrated = False
    if rec is None and legacy:
        for old_messages in _legacy_variants(judge, req.messages):
            old_key = legacy_judgment_key(judge.endpoint.model, req.params, old_messages)
            old = store.get(JUDGMENTS, old_key)
            if old is not None and old.get("judge") == judge.name and "v" not in old:
                rec, migrated = {**old, "v": KEY_VERSION, "legacy_key": old_key.hex()}, True
                break
    found, n = key, 0
    while rec is not None and rec.get("verdict") is None:
        again = store.get(JUDGMENTS, retry_key(key, n + 1))
        if again is None:
            break
        n += 1
        found, rec = retry_key(key, n), again
    return found, rec, n, migrated


def _legacy_variants(judge: JudgeConfig, messages: Sequence[Mapping[str, Any]]) -> list[Sequence[Mapping[str, Any]]]:
    variants: list[Sequence[Mapping[str, Any]]] = [messages]
    if judge.system_prompt is None and messages and messages[0].get("role") == "system":
        variants.append([{**messages[0], "content": LEGACY_SYSTEM_PROMPT}, *messages[1:]])
    return variants
