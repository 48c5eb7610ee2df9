"""What the simulator answers to a chat request it serves: the request checked, then the completion.

Candidates answer with `answers.candidate_answer`; a judge model renders `judging.Judge`'s verdict.
The live route (`server`) and the batch routes (`complete`, given the simulator as a `Completer`) both
build their completions here.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import orjson
from aiohttp import web

from arena_engine.sim.answers import candidate_answer, last_user_text, message_text
from arena_engine.sim.config import SimConfig, SimModel
from arena_engine.sim.judging import Judge, render_bad_verdict, render_verdict
from arena_engine.sim.responses import JSON
from arena_engine.sim.stats import SimStats

MAX_N = 128


def estimate_tokens(text: str) -> int:
    return len(text) // 4 + 1


def validate_chat(data: Any) -> tuple[str | None, str | None]:
    """(problem, param) for a chat request body that cannot be served, else (None, None)."""
    if not isinstance(data, dict):
        return "The request body must be a JSON object.", None
    if not isinstance(data.get("model"), str):
        return "`model` is required and must be a string.", "model"
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        return "`messages` is required and must be a non-empty list.", "messages"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            return f"messages[{i}] must be an object with a string `role`.", f"messages[{i}]"
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            return f"messages[{i}].content must be a string or a list of parts.", f"messages[{i}].content"
    n = data.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N):
        return f"`n` must be an integer from 1 to {MAX_N}.", "n"
    if data.get("stream"):
        return "Streaming is not supported by the simulator; send stream=false.", "stream"
    return None, None


def chat_completion(
    config: SimConfig,
    judge: Judge,
    stats: SimStats,
    data: dict[str, Any],
    model: SimModel,
    body_key: int,
    occurrence: int,
    u_bad: float,
    u_form: float,
    broken: list[bool],
) -> web.Response:
    """The body of a successful chat completion: candidate answers, or verdicts for a judge model."""
    messages = data["messages"]
    n = data.get("n") or 1
    contents: list[str] = []
    if model.judge:
        prompt = last_user_text(messages)
        rf = data.get("response_format")
        if isinstance(rf, dict) and rf.get("type") in ("json_schema", "json_object"):
            as_json = True
        elif config.verdict_format == "mixed":
            as_json = u_form < 0.5
        else:
            as_json = config.verdict_format == "json"
        bad = config.faults.rate_bad_verdict > 0 and u_bad < config.faults.rate_bad_verdict
        if bad:
            stats.fault("bad_verdict")
            broken.append(True)
        for i in range(n):
            if bad:
                contents.append(render_bad_verdict(u_form, as_json))
            else:
                label = judge.verdict(prompt, body_key + i, model)
                contents.append(render_verdict(label, as_json))
    else:
        seed = data.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            seed = config.seed
        for i in range(n):
            contents.append(candidate_answer(model.tag or model.name, model.quality, messages, seed, i))
    max_tokens = data.get("max_tokens") or data.get("max_completion_tokens")
    choices = []
    completion_tokens = 0
    for i, content in enumerate(contents):
        finish = "stop"
        tokens = estimate_tokens(content)
        if isinstance(max_tokens, int) and 0 < max_tokens < tokens:
            content = content[: 4 * max_tokens]
            tokens = max_tokens
            finish = "length"
        completion_tokens += tokens
        choices.append(
            {
                "index": i,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": finish,
            }
        )
    prompt_tokens = sum(estimate_tokens(message_text(m.get("content"))) + 3 for m in messages)
    body = {
        "id": f"chatcmpl-sim-{body_key:016x}-{occurrence}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model.name,
        "system_fingerprint": "arena-engine-sim",
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return web.Response(body=orjson.dumps(body), content_type=JSON)


class Completer(Protocol):
    """What a batch needs of the simulator to answer a row as the live route would
    (`completion.chat_completion`): its config, models, judge and stats.

    `arena_engine.sim.server` implements it; naming it here keeps the imports one way (server → batches →
    completion).
    """

    config: SimConfig
    models: dict[str, SimModel]
    judge: Judge
    stats: SimStats


def complete(sim: Completer, body: dict[str, Any], model: SimModel, body_key: int, u_bad: float,
             u_form: float) -> web.Response:
    """A batch row's completion: the live route's for the same body, as its first occurrence."""
    return chat_completion(sim.config, sim.judge, sim.stats, body, model, body_key, 0, u_bad, u_form, [])
