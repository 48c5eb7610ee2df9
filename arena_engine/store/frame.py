"""One checkpoint line: ``{"k":"<32 hex key>","c":"<8 hex crc32>","r":<record JSON>}\\n``.

The key and the checksum sit at fixed byte offsets, so a scan can check a line's frame and read its key
without parsing the record, and the crc32 of the record bytes catches damage inside the line.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import orjson

KEY_SIZE = 16

P0 = b'{"k":"'
P1 = b'","c":"'
P2 = b'","r":'
KEY_AT = len(P0)  # 6
KEY_END = KEY_AT + 2 * KEY_SIZE  # 38
CRC_AT = KEY_END + len(P1)  # 45
CRC_END = CRC_AT + 8  # 53
BODY_AT = CRC_END + len(P2)  # 59: the record's "{"
MIN_LINE = BODY_AT + len(b"{}") + len(b"}\n")  # 63 bytes, newline included

_LINE_FMT = b'{"k":"%s","c":"%08x","r":%s}\n'
_HEX32 = re.compile(rb"[0-9a-f]{32}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def encode_record(record: dict[str, Any]) -> bytes:
    """The record's JSON bytes. Lone surrogates (broken text; not UTF-8) become U+FFFD."""
    if not isinstance(record, dict):
        raise TypeError(f"a checkpoint record is a dict, got {type(record).__name__}")
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError as exc:
        if "surrogates" not in str(exc):
            raise TypeError(f"checkpoint record is not JSON-able: {exc}") from exc
        return orjson.dumps(_scrub_surrogates(record))


def _scrub_surrogates(obj: Any) -> Any:
    if isinstance(obj, str):
        return _SURROGATE.sub("\ufffd", obj)
    if isinstance(obj, dict):
        return {_scrub_surrogates(k): _scrub_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_scrub_surrogates(v) for v in obj]
    return obj


def frame(key: bytes, body: bytes) -> bytes:
    """The full line (newline included) storing ``body`` under ``key``."""
    return _LINE_FMT % (key.hex().encode("ascii"), zlib.crc32(body), body)


def body_of(line: bytes) -> bytes | None:
    """The record bytes of a line read back by offset, or None if its frame or checksum is wrong."""
    if len(line) < MIN_LINE or not line.endswith(b"}\n") or not line.startswith(P0):
        return None
    body = line[BODY_AT:-2]
    try:
        crc = int(line[CRC_AT:CRC_END], 16)
    except ValueError:
        return None
    return body if zlib.crc32(body) == crc else None


def parse_line(line: bytes) -> tuple[bytes, bytes] | None:
    """(key, record bytes) of one line (its newline optional), or None if it is not a valid record."""
    if not line.endswith(b"\n"):
        line += b"\n"
    if line[KEY_END:CRC_AT] != P1 or line[CRC_END:BODY_AT] != P2:
        return None
    key = key_of(line)
    body = body_of(line)
    if key is None or body is None or not body.startswith(b"{"):
        return None
    return key, body


def key_of(line: bytes) -> bytes | None:
    """The key at the start of a line whose opening frame is intact (even if the rest is damaged)."""
    if not line.startswith(P0) or line[KEY_END : KEY_END + 1] != b'"':
        return None
    raw = line[KEY_AT:KEY_END]
    if not _HEX32.fullmatch(raw):
        return None
    return bytes.fromhex(raw.decode("ascii"))
