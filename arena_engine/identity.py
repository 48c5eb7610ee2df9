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
so the folder migrates as it is used and nothing already paid for is asked again.

**Retries of excluded verdicts.** ``run --retry-excluded`` asks the judge again for a verdict that was
unparseable; the new answer is stored under :func:`retry_key` (the old record stays), and a lookup
follows that chain to the latest answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from .config import JudgeConfig, ModelConfig, RunConfig
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
