"""What an OpenAI-compatible server's reply means, and how to reshape a request it refused.

Pure functions over bytes, strings and dicts (no I/O, no state); `client.ChatClient` calls them.

    read_reply(raw, content_type)  a 2xx body ->
        (content, choices, finish_reason, prompt_tokens, completion_tokens, reasoning)   an answer
        | Fault(kind RETRY | FATAL, reason, finish_reason, prompt_tokens, completion_tokens)

        answer     content is text; leading `<think>...</think>` blocks and the `reasoning_content` /
                   `reasoning` field are kept out of it and returned as `reasoning`
        fatal      "refusal: <text>", "tool_calls instead of content: <names>", "content_filter: ...",
                   "no content (finish_reason: stop)", "no content, only reasoning (finish_reason:
                   length)", "no_choices[: <server message>]", "text/html body, not JSON: <start of
                   the body>" (a non-JSON body of a non-JSON type), "error_in_body: <message>"
        retry      "malformed_json" (a JSON-typed body that does not parse), "error_in_body: <message>"
                   when the message says the server is overloaded / rate limited / unavailable

    is_validation_error(message)      the server's request validator refused the request (pydantic's
                                      "Input should be ...", "Extra inputs are not permitted", ...):
                                      the same request fails the same way, whatever the status says
    format_ladder(response_format)    structured output shapes to try in turn: OpenAI's json_schema,
                                      llama.cpp's {"type": "json_object", "schema": ...}, json_object,
                                      then none (plain text)
    refuses_format(message)           the refusal is about the response format
    refused_token_param(message, body) "max_tokens" -> "max_completion_tokens" (or back) when the
                                      server says the one sent is not supported
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import orjson

from .errors import NOT_JSON_BODY, RetryKind

#: how the reason for a 2xx whose body is another type (an HTML page) ends, after the content type
NOT_JSON = NOT_JSON_BODY

__all__ = [
    "TOKEN_PARAMS",
    "Fault",
    "FormatShape",
    "format_ladder",
    "is_validation_error",
    "read_reply",
    "refused_token_param",
    "refuses_format",
    "snippet",
    "split_reasoning",
]

#: Longest server message kept in a reason.
MAX_MESSAGE = 300
#: Characters of a non-JSON body quoted in its reason.
BODY_QUOTE = 80

Answer = tuple[str, tuple[str, ...], str | None, int, int, str | None]


class Fault(NamedTuple):
    """Why a 2xx body holds no answer; `kind` is RETRY (worth another attempt) or FATAL."""

    kind: RetryKind
    reason: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


MALFORMED = Fault(RetryKind.RETRY, "malformed_json")

_WS = re.compile(r"\s+")
# An error object inside a 200 that is worth retrying: the server (or the one behind it) is busy.
_TRANSIENT_RE = re.compile(
    r"overload|rate.?limit|too many requests|capacity|busy|temporar|unavailable|try again|timed? ?out|"
    r"server.?error|internal error|bad gateway",
    re.IGNORECASE,
)
_TRANSIENT_CODES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_VALIDATION_RE = re.compile(
    r"input should be|validation error|extra inputs are not permitted|field required|"
    r"value is not a valid|literal_error|unprocessable entity|extra_forbidden",
    re.IGNORECASE,
)
_FORMAT_RE = re.compile(r"response_format|json_schema|json_object|'text'", re.IGNORECASE)
_UNSUPPORTED_RE = re.compile(
    r"unsupported|not supported|extra inputs|extra_forbidden|not permitted|unrecognized|unknown|not allowed|"
    r"use '?max_completion_tokens|use '?max_tokens",
    re.IGNORECASE,
)
_OPEN_THINK = ("<think>", "<thinking>")
_THINK_BLOCK_RE = re.compile(r"\A\s*<(think|thinking)>(.*?)</\1>\s*", re.DOTALL | re.IGNORECASE)
_THINK_CLOSE_RE = re.compile(r"</think(?:ing)?>", re.IGNORECASE)


def snippet(text: str, limit: int = BODY_QUOTE) -> str:
    """`text` on one line, at most `limit` characters, control characters escaped (model and server
    output is untrusted: never let it start a new log line or carry terminal escapes)."""
    text = _WS.sub(" ", text).strip()
    cut = len(text) > limit
    text = text[:limit]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text + "..." if cut else text


def _message(text: str, scrub: Callable[[str], str]) -> str:
    return snippet(scrub(text), MAX_MESSAGE)


def split_reasoning(text: str) -> tuple[str, str | None]:
    """(answer, reasoning): leading `<think>...</think>` blocks taken out of a reply. A `</think>` whose
    opening tag the chat template sent (so the reply starts inside the block) ends the reasoning; a
    block that never closes (cut off by max_tokens) is all reasoning and leaves no answer."""
    if "hink" not in text and "HINK" not in text:  # the common case: no tag (think, Think, THINKING)
        return text, None
    parts: list[str] = []
    rest = text
    while True:
        match = _THINK_BLOCK_RE.match(rest)
        if match is None:
            break
        parts.append(match.group(2).strip())
        rest = rest[match.end() :]
    head = rest.lstrip()[:12].lower()
    if head.startswith(_OPEN_THINK):  # opened, never closed
        parts.append(rest.lstrip().split(">", 1)[1].strip())
        rest = ""
    elif not parts:
        close = _THINK_CLOSE_RE.search(rest)
        if close is not None and "<think" not in rest[: close.start()].lower():
            parts.append(rest[: close.start()].strip())
            rest = rest[close.end() :]
    if not parts:
        return text, None
    return rest.strip(), "\n\n".join(p for p in parts if p) or None


def _text(content: Any) -> str | None:
    """A message's content as text: a string, or the text parts of a list of content parts."""
    if type(content) is str:
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "".join(texts) if texts else None
    return None


def _body_error(error: Any, scrub: Callable[[str], str]) -> Fault:
    """An error object inside a 2xx body: retried when it says the server is busy, else fatal."""
    message: Any = error
    code: Any = None
    kind: Any = None
    if isinstance(error, dict):
        message = error.get("message") or error.get("msg") or error.get("detail")
        code = error.get("code") or error.get("status")
        kind = error.get("type")
    if not isinstance(message, str):
        message = orjson.dumps(error).decode()
    status = code if type(code) is int else int(code) if isinstance(code, str) and code.isdigit() else None
    transient = status in _TRANSIENT_CODES or any(
        isinstance(x, str) and _TRANSIENT_RE.search(x) for x in (message, kind, code)
    )
    return Fault(RetryKind.RETRY if transient else RetryKind.FATAL, f"error_in_body: {_message(message, scrub)}")


def _no_choices(data: dict[str, Any], scrub: Callable[[str], str]) -> Fault:
    for key in ("message", "detail", "msg", "warning"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return Fault(RetryKind.FATAL, f"no_choices: {_message(value, scrub)}")
    if data.get("prompt_filter_results") is not None:
        return Fault(RetryKind.FATAL, "no_choices: the server's content filter stopped the prompt (prompt_filter_results)")
    return Fault(RetryKind.FATAL, "no_choices")


def _no_content(message: Any, finish_reason: str | None, reasoning: str | None,
                scrub: Callable[[str], str]) -> str:
    """Why a choice holds no answer text, from what it holds instead."""
    if isinstance(message, dict):
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal.strip():
            return f"refusal: {_message(refusal, scrub)}"
        calls = message.get("tool_calls")
        function_call = message.get("function_call")
        if calls or function_call:
            names = []
            for call in calls if isinstance(calls, list) else [function_call]:
                fn = call.get("function", call) if isinstance(call, dict) else None
                name = fn.get("name") if isinstance(fn, dict) else None
                names.append(name if isinstance(name, str) else "?")
            return f"tool_calls instead of content: {_message(', '.join(names), scrub)}"
    if finish_reason == "content_filter":
        return "content_filter: the server's content filter removed the answer"
    what = "no content, only reasoning" if reasoning else "no content"
    return f"{what} (finish_reason: {finish_reason})"


def _holds_other(message: Any) -> bool:
    """An empty answer that comes with a refusal or tool calls instead."""
    if type(message) is not dict:
        return False
    refusal = message.get("refusal")
    return bool((isinstance(refusal, str) and refusal.strip()) or message.get("tool_calls") or message.get("function_call"))


def read_reply(raw: bytes, content_type: str | None = None, scrub: Callable[[str], str] = str) -> Answer | Fault:
    """An answer (a plain tuple, see the module docstring) from a 2xx body, or the `Fault` why not.
    `scrub` runs over server text before it is cut short (a key echoed back and cut in half would
    escape a later scrub)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        ctype = (content_type or "").split(";")[0].strip().lower()
        if not ctype or ctype.endswith("json"):
            return MALFORMED
        # an HTML page (a proxy, a login wall, a web UI at the api_url): no retry will turn it into JSON
        quote = snippet(scrub(raw[: 4 * BODY_QUOTE].decode("utf-8", "replace")))
        return Fault(RetryKind.FATAL, f"{ctype}{NOT_JSON}: {quote}")
    if type(data) is not dict:
        return MALFORMED
    usage = data.get("usage")
    prompt_tokens = completion_tokens = 0
    if type(usage) is dict:
        p = usage.get("prompt_tokens")
        c = usage.get("completion_tokens")
        prompt_tokens = p if type(p) is int else 0
        completion_tokens = c if type(c) is int else 0
    raw_choices = data.get("choices")
    if type(raw_choices) is not list or not raw_choices:
        if data.get("error"):
            fault = _body_error(data["error"], scrub)
        elif data.get("object") == "error":  # vLLM's error shape: {"object": "error", "message": ..., "code": ...}
            fault = _body_error(data, scrub)
        else:
            fault = _no_choices(data, scrub)
        return fault._replace(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    texts: list[str] = []
    content: str | None = None
    reasoning: str | None = None
    finish_reason: str | None = None
    first_message: Any = None
    for i, choice in enumerate(raw_choices):
        if type(choice) is not dict:
            return MALFORMED._replace(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        message = choice.get("message")
        if type(message) is dict:
            text = _text(message.get("content"))
        else:
            text = _text(choice.get("text"))  # a completions-style choice
        thought: str | None = None
        if text is not None:
            text, thought = split_reasoning(text)
        if i == 0:
            first_message = message
            content = text
            reason = choice.get("finish_reason")
            finish_reason = reason if type(reason) is str else None
            if type(message) is dict:
                field = message.get("reasoning_content") or message.get("reasoning")
                if isinstance(field, str) and field.strip():
                    thought = field.strip() if thought is None else f"{field.strip()}\n\n{thought}"
            reasoning = thought
        texts.append(text or "")
    if content is None or (not content.strip() and (reasoning or _holds_other(first_message))):
        why = _no_content(first_message, finish_reason, reasoning, scrub)
        return Fault(RetryKind.FATAL, why, finish_reason, prompt_tokens, completion_tokens)
    return content, tuple(texts), finish_reason, prompt_tokens, completion_tokens, reasoning


def is_validation_error(message: str) -> bool:
    """The server's request validator refused the request (pydantic / FastAPI wording)."""
    return _VALIDATION_RE.search(message) is not None


# --------------------------------------------------------------------------- reshaping a refused request

#: The names servers give the completion budget: OpenAI's newer models take only the second.
TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")


class FormatShape(NamedTuple):
    """One way to ask for structured output: `name` identifies it in an endpoint's memory of what it
    refused; `value` is the request's `response_format` (None: ask without one, plain text)."""

    name: str
    value: Mapping[str, Any] | None


def format_ladder(response_format: Any) -> tuple[FormatShape, ...]:
    """The shapes to try for a requested `response_format`, best first, ending in plain text.

    OpenAI's `{"type": "json_schema", "json_schema": {"schema": S}}`, then llama.cpp's
    `{"type": "json_object", "schema": S}` (llama-cpp-python 0.3.x accepts only "text" and
    "json_object"), then no response_format at all. A request with another kind gets only itself.
    """
    if not isinstance(response_format, Mapping):
        return (FormatShape("custom", response_format),)
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        rungs = [FormatShape("json_schema", response_format)]
        if isinstance(schema, Mapping):
            rungs.append(FormatShape("json_object+schema", {"type": "json_object", "schema": schema}))
        rungs.append(FormatShape("json_object", {"type": "json_object"}))
        return (*rungs, FormatShape("text", None))
    if kind == "json_object":
        name = "json_object+schema" if "schema" in response_format else "json_object"
        return FormatShape(name, response_format), FormatShape("text", None)
    return (FormatShape(str(kind), response_format),)


def refuses_format(message: str) -> bool:
    """The server's complaint is about the response format (OpenAI: "Invalid parameter:
    'response_format' ..."; llama-cpp-python: "Input should be 'text' or 'json_object'")."""
    return _FORMAT_RE.search(message) is not None


def refused_token_param(message: str, body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(sent, instead) when the server says the completion-budget parameter that was sent is not
    supported, e.g. OpenAI's "Unsupported parameter: 'max_tokens' is not supported with this model.
    Use 'max_completion_tokens' instead."; None otherwise."""
    for sent, instead in (TOKEN_PARAMS, TOKEN_PARAMS[::-1]):
        if sent in body and instead not in body and _mentions(message, sent) and _UNSUPPORTED_RE.search(message):
            return sent, instead
    return None


def _mentions(message: str, name: str) -> bool:
    # "max_tokens" is not a part of "max_completion_tokens", so a plain search tells them apart
    return re.search(rf"(?<![a-z_]){name}(?![a-z_])", message) is not None
