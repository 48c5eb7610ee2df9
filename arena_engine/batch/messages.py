"""Our chat request and reply in Anthropic's Messages shape and back (pure functions, no I/O).

``chat_to_params`` turns the body ``BatchChat`` builds (OpenAI chat: ``model``, ``messages``, the
generation params) into a Messages API request: the system messages become the top-level ``system``
(joined by a blank line), the other messages keep their order, ``max_tokens`` (or
``max_completion_tokens``) becomes ``max_tokens`` (required: the config refuses an anthropic batch
endpoint without it), ``stop`` becomes ``stop_sequences``. The keys keep the body's order. Keys the
Messages API has under the same name (``temperature``, ``top_p``, ``top_k``, ``thinking``,
``metadata``, ...) pass through; ``seed`` and ``response_format``, which it has no equivalent for, are
left out (the verdict format stays in the judge's prompt); any other key is refused, naming it.

``message_to_chat`` turns a Message result into the chat completion body the live reply reader
(``replies.read_reply``) reads: the text blocks joined as the content, thinking blocks as
``reasoning_content``, ``stop_reason`` as ``finish_reason``, ``usage.input_tokens`` /
``output_tokens`` as ``prompt_tokens`` / ``completion_tokens``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: chat keys the Messages API takes unchanged
PASS = frozenset({"temperature", "top_p", "top_k", "thinking", "metadata", "tools", "tool_choice", "service_tier",
                  "stop_sequences", "system"})
#: chat keys with no Messages equivalent, left out
DROPPED = frozenset({"seed", "response_format", "stream"})
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                "refusal": "content_filter", "pause_turn": "length"}


class ConversionError(ValueError):
    """A chat request the Messages API cannot express (the message names the key)."""


def _content(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                out.append({"type": "text", "text": part["text"]})
            else:
                raise ConversionError(f"{where}: only text parts can be sent to the Messages API, got {part!r:.80}")
        return out
    raise ConversionError(f"{where}: content must be a string or a list of text parts")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content)


def chat_to_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """The Messages API request for a chat request body (see the module docstring)."""
    n = body.get("n")
    if n not in (None, 1):
        raise ConversionError(f"n = {n}: the Messages API returns one reply per request")
    out: dict[str, Any] = {}
    budget = False
    for key, value in body.items():
        if key == "messages":
            system: list[str] = []
            turns: list[dict[str, Any]] = []
            for i, m in enumerate(value):
                role = m.get("role")
                content = _content(m.get("content"), f"messages[{i}]")
                if role in ("system", "developer"):
                    system.append(_text(content))
                elif role in ("user", "assistant"):
                    turns.append({"role": role, "content": content})
                else:
                    raise ConversionError(f"messages[{i}]: role {role!r} cannot be sent to the Messages API")
            if system:
                out["system"] = "\n\n".join(system)
            out["messages"] = turns
        elif key in ("max_tokens", "max_completion_tokens"):
            out["max_tokens"] = value
            budget = True
        elif key == "stop":
            if value is not None:
                out["stop_sequences"] = [value] if isinstance(value, str) else list(value)
        elif key in DROPPED or key == "n":
            continue
        elif key == "model" or key in PASS:
            out[key] = value
        else:
            raise ConversionError(f"{key!r} has no equivalent in the Messages API; remove it from the generation "
                                  "params or extra_body of this endpoint")
    if not budget:
        raise ConversionError("max_tokens is required by the Messages API; set generation.max_tokens")
    return out


def message_to_chat(message: Mapping[str, Any]) -> dict[str, Any]:
    """The chat completion body the live reply reader sees for a Message (see the module docstring)."""
    blocks = message.get("content") or []
    text = "".join(b.get("text") or "" for b in blocks if isinstance(b, Mapping) and b.get("type") == "text")
    thought = "".join(b.get("thinking") or "" for b in blocks if isinstance(b, Mapping) and b.get("type") == "thinking")
    reply: dict[str, Any] = {"role": "assistant", "content": text}
    if thought:
        reply["reasoning_content"] = thought
    usage = message.get("usage") or {}
    p = int(usage.get("input_tokens") or 0)
    c = int(usage.get("output_tokens") or 0)
    stop = message.get("stop_reason")
    return {"id": message.get("id"), "object": "chat.completion", "model": message.get("model"),
            "choices": [{"index": 0, "message": reply, "finish_reason": STOP_REASONS.get(str(stop), stop)}],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}
