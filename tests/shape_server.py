"""A tiny OpenAI-compatible server for reply shapes the simulator and fakellm cannot send: the test
gives a function from the request body to the answer, and reads back every request it got."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

Reply = web.Response | dict[str, Any] | tuple[int, dict[str, Any]]
AnyReply = Reply | Awaitable[Reply]

# what llama-cpp-python 0.3.36's server answers to OpenAI's json_schema response format (HTTP 500), as
# captured from it (the traceback's path shortened)
LLAMA_CPP_REFUSAL = {"error": {
    "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
               "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
               "'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File \"llama_cpp/server/app.py\", "
               "line 376, in create_chat_completion\n    POST /v1/chat/completions",
    "type": "internal_server_error", "param": None, "code": None}}


@dataclass
class Seen:
    """One request as the server got it."""

    body: dict[str, Any]
    headers: dict[str, str]
    query: dict[str, str]


@dataclass
class ShapeServer:
    url: str  # ends in /v1
    seen: list[Seen] = field(default_factory=list)

    def bodies(self) -> list[dict[str, Any]]:
        return [s.body for s in self.seen]


def completion(content: str | None, *, finish_reason: str = "stop", prompt_tokens: int = 10,
               completion_tokens: int = 5, **message: Any) -> dict[str, Any]:
    """An OpenAI chat.completion body with one choice; `message` adds fields (tool_calls, refusal, ...)."""
    return {
        "id": "chatcmpl-shape", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, **message},
                     "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


@contextlib.asynccontextmanager
async def shape_server(answer: Callable[[dict[str, Any]], AnyReply]) -> AsyncIterator[ShapeServer]:
    """Serve POST /v1/chat/completions on 127.0.0.1 with `answer(body)`: a web.Response, a JSON body
    (status 200) or (status, JSON body)."""
    server: ShapeServer | None = None

    async def handle(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        assert server is not None
        server.seen.append(Seen(body, dict(request.headers), dict(request.query)))
        reply = answer(body)
        if inspect.isawaitable(reply):  # an async answer: e.g. a server that takes its time
            reply = await reply
        if isinstance(reply, web.Response):
            return reply
        status, data = reply if isinstance(reply, tuple) else (200, reply)
        return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server = ShapeServer(f"http://127.0.0.1:{port}/v1")
    try:
        yield server
    finally:
        await runner.cleanup()
