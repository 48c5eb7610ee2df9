"""The generation parameters of a chat request, checked against the OpenAI chat API's ranges before
anything is sent.

A model's or the judge's ``generation`` table goes into every request body as it is, so a value the
API refuses (``temperature = nan``, ``max_tokens = -5``) would be paid for in failed requests, or
worse, sent and half-obeyed. The parameters the chat API defines are held to its ranges; parameters it
does not define stay allowed (providers have their own), but every value must be JSON (no dates, no
integers past 64 bits) and no number anywhere may be NaN or infinite (JSON has no such numbers; a
serializer would send ``null``). ``model``, ``messages`` and ``stream`` are set by arena-engine.

Every problem is a :class:`ConfigError` naming the config file and the key path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConfigError

__all__ = ["SET_BY_ENGINE", "check_generation"]

SET_BY_ENGINE = ("model", "messages", "stream")
MAX_STOP_SEQUENCES = 4
MAX_TOP_LOGPROBS = 20
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what a JSON serializer (orjson) can write

Rule = Callable[[Any], str | None]  # a value -> what is wrong with it, or None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(low: float, high: float, *, open_low: bool = False) -> Rule:
    span = f"{'(' if open_low else '['}{low:g}, {high:g}]"

    def rule(value: Any) -> str | None:
        ok = _is_number(value) and (low < value if open_low else low <= value) and value <= high
        return None if ok else f"must be a number in {span}"

    return rule


def _integer(low: int, high: int | None = None) -> Rule:
    want = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"

    def rule(value: Any) -> str | None:
        ok = _is_int(value) and value >= low and (high is None or value <= high)
        return None if ok else f"must be {want}"

    return rule


def _any_integer(value: Any) -> str | None:
    return None if _is_int(value) else "must be an integer"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _stop(value: Any) -> str | None:
    if isinstance(value, str):
        return None
    if isinstance(value, list) and len(value) <= MAX_STOP_SEQUENCES and all(isinstance(s, str) for s in value):
        return None
    return f"must be a string or a list of at most {MAX_STOP_SEQUENCES} strings"


def _logit_bias(value: Any) -> str | None:
    want = "must be a table of token ids (integers, as keys) to integer biases in [-100, 100]"
    if not isinstance(value, dict):
        return want
    for token, bias in value.items():
        if not (isinstance(token, str) and token.isascii() and token.isdigit()):
            return f"{want}; key {token!r} is not a token id"
        if not (_is_int(bias) and -100 <= bias <= 100):
            return f"{want}; {token} = {bias!r}"
    return None


def _n(value: Any) -> str | None:
    if _is_int(value) and value == 1:
        return None
    return "arena battles judge one answer per query; set n = 1 (or leave it out)"


# The OpenAI chat completions API's ranges (platform.openai.com/docs/api-reference/chat/create).
RULES: dict[str, Rule] = {
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "max_tokens": _integer(1),
    "max_completion_tokens": _integer(1),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "seed": _any_integer,
    "stop": _stop,
    "logprobs": _boolean,
    "top_logprobs": _integer(0, MAX_TOP_LOGPROBS),
    "logit_bias": _logit_bias,
    "n": _n,
}


def _not_json(value: Any, path: str) -> tuple[str, Any, str] | None:
    """The first value under ``value`` that is no JSON value (or a NaN/infinite number): path, value, problem."""
    if value is None or isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        return None if _INT_MIN <= value <= _INT_MAX else (path, value, "an integer too large for JSON (64 bits)")
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value, "must be a finite number (JSON has no NaN or infinity)")
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _not_json(item, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, value, f"has a key that is not a string: {key!r}"
            found = _not_json(item, f"{path}.{key}")
            if found:
                return found
        return None
    return path, value, f"must be a JSON value (a string, number, true/false, list or table), not {type(value).__name__}"


def check_generation(params: Mapping[str, Any], source: str, where: str) -> dict[str, Any]:
    """``params`` as a plain dict if every value is fit to send; else a ConfigError naming
    ``source`` (the config file) and the key path under ``where`` (e.g. ``models[0].generation``).

    Values are returned as given (an integer stays an integer), so the content keys of earlier runs
    stay the same. A JSON ``null`` for an API parameter means "the API's default", as in the API.
    """
    for banned in SET_BY_ENGINE:
        if banned in params:
            raise ConfigError(f"{source}: '{where}.{banned}' is set by arena-engine, remove it")
    for key, rule in RULES.items():
        value = params.get(key)
        if value is None:
            continue
        wrong = rule(value)
        if wrong:
            raise ConfigError(f"{source}: '{where}.{key}' = {value!r}: {wrong}")
    found = _not_json(dict(params), where)
    if found:
        path, value, problem = found
        raise ConfigError(f"{source}: '{path}' = {value!r}: {problem}")
    if params.get("top_logprobs") is not None and params.get("logprobs") is not True:
        raise ConfigError(f"{source}: '{where}.top_logprobs' needs '{where}.logprobs' = true (as the API does)")
    return dict(params)
