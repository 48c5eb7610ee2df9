"""Content keys: what identifies a request's result across runs."""

from __future__ import annotations

import hashlib
import json

import orjson

from arena_engine.store.frame import KEY_SIZE


def content_key(obj: object) -> bytes:
    """16-byte blake2b digest of the canonical (sorted-key) orjson encoding of ``obj``.

    Stable across runs, processes and machines for the same JSON-able value. A value orjson cannot
    encode (strings with lone surrogates) falls back to an ASCII-escaped stdlib encoding, so it still
    gets a distinct, stable key.
    """
    try:
        data = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        data = json.dumps(obj, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode()
    return hashlib.blake2b(data, digest_size=KEY_SIZE).digest()
