"""What a simulated candidate model answers: deterministic text that echoes the question and carries a tag.

The tag `[sim:model=NAME q=HEX8]` lets the simulated judge recover which model answered which query;
`q` hashes the user messages, so per-query difficulty can derive from it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

from arena_engine.sim.draws import text_key

TAG_RE = re.compile(r"\[sim:model=([^\s\]]+) q=([0-9a-f]{8})\]")
_WORD_RE = re.compile(r"\w+")

_FILLER = (
    "the",
    "a",
    "this",
    "that",
    "is",
    "are",
    "can",
    "will",
    "often",
    "usually",
    "because",
    "and",
    "so",
    "which",
    "helps",
    "means",
    "important",
    "consider",
    "approach",
    "example",
    "first",
    "then",
    "finally",
    "practice",
    "result",
    "clear",
    "simple",
    "key",
    "idea",
    "step",
    "useful",
    "better",
    "also",
    "most",
    "common",
    "way",
    "point",
    "detail",
    "overall",
    "in",
    "short",
)


def message_text(content: Any) -> str:
    """The text of a chat message's content: a string, or a list of OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def user_text(messages: Sequence[dict[str, Any]]) -> str:
    """All user messages joined (what identifies a query)."""
    return "\n".join(message_text(m.get("content")) for m in messages if m.get("role") == "user")


def last_user_text(messages: Sequence[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m.get("content"))
    return ""


def query_hash(messages: Sequence[dict[str, Any]]) -> str:
    """8 hex digits identifying the query (hash of the user messages)."""
    return f"{text_key('q', user_text(messages)) & 0xFFFFFFFF:08x}"


def make_tag(model: str, qhex: str) -> str:
    return f"[sim:model={model} q={qhex}]"


def candidate_answer(
    model: str, quality: float, messages: Sequence[dict[str, Any]], seed: int, index: int = 0
) -> str:
    """The answer of `model` to `messages`: deterministic in (model, user messages, seed, choice index).

    Better models answer a little longer and echo more of the question's words.
    """
    question = user_text(messages)
    qhex = f"{text_key('q', question) & 0xFFFFFFFF:08x}"
    # 128 pseudo-random bytes drive every choice (two bytes per word): cheaper than a seeded PRNG.
    h = blake2b(f"{model}\x00{qhex}\x00{seed}\x00{index}".encode("utf-8", "surrogatepass"), digest_size=64)
    rand = h.digest()
    h.update(b"more")
    rand += h.digest()
    q = max(-4.0, min(4.0, quality))
    echo_below = int(256 * (0.2 + 0.6 / (1.0 + math.exp(-q))))
    n_words = max(6, min(60, round(20 + 4 * q) + rand[0] % 9))
    qwords = _WORD_RE.findall(question)[:256]
    nq = len(qwords)
    n_filler = len(_FILLER)
    words = [
        qwords[rand[j + 1] % nq] if nq and rand[j] < echo_below else _FILLER[rand[j + 1] % n_filler]
        for j in range(2, 2 + 2 * n_words, 2)
    ]
    sentences = []
    i = 0
    k = 0
    while i < n_words:
        step = 6 + rand[(k * 7 + 1) % 128] % 7
        sentence = " ".join(words[i : i + step])
        sentences.append(sentence[:1].upper() + sentence[1:] + ".")
        i += step
        k += 1
    return f"{make_tag(model, qhex)} " + " ".join(sentences)
