"""The HTTP pieces the chat routes share: an OpenAI-style error body and the Retry-After headers."""

from __future__ import annotations

import math

import orjson
from aiohttp import web

JSON = "application/json"


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type=JSON, headers=headers)


def format_seconds(wait: float) -> str:
    """Retry-After in seconds: an integer when whole, else a decimal rounded up to the millisecond."""
    ms = math.ceil(wait * 1000.0 - 1e-9)
    return str(ms // 1000) if ms % 1000 == 0 else f"{ms / 1000:.3f}"


def retry_headers(wait: float, fmt: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    if fmt in ("seconds", "both"):
        headers["Retry-After"] = format_seconds(wait)
    if fmt in ("ms", "both"):
        headers["retry-after-ms"] = str(math.ceil(wait * 1000.0 - 1e-9))
    return headers
