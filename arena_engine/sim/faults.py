"""The simulator's injected faults that are more than an error status: a connection dropped, a request
left hanging, an answer stalled or trickled, a body cut off or without choices.

Which fault a request gets is drawn in `server` (from `SimConfig.faults`); what each does is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
from aiohttp import web

from arena_engine.sim.config import Faults, SimModel
from arena_engine.sim.responses import JSON

HANG_POLL_S = 0.05
# A 200 whose body is cut off mid-string: valid HTTP, invalid JSON.
MALFORMED_BODY = (
    b'{"id": "chatcmpl-sim", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assi'
)


def drop(request: web.Request) -> None:
    """Drop the connection without an answer."""
    if request.transport is not None:
        request.transport.abort()


def no_choices(model: SimModel, body_key: int, occurrence: int) -> web.Response:
    """A 200 completion without its `choices`."""
    body = {
        "id": f"chatcmpl-sim-{body_key:016x}-{occurrence}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model.name,
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    return web.Response(body=orjson.dumps(body), content_type=JSON)


async def dribble(
    request: web.Request,
    response: web.Response,
    fault: str,
    outcome: list[str],
    faults: Faults,
    closing: asyncio.Event,
) -> tuple[str, web.StreamResponse]:
    """Send `response` slowly: "trickle" spreads the body over trickle_seconds in 10 pieces; "stall"
    sends the headers and half the body, then nothing for hang_seconds (then drops the connection)."""
    body = response.body
    assert isinstance(body, bytes)
    stream = web.StreamResponse(status=response.status, headers={"Content-Type": JSON})
    stream.content_length = len(body)
    await stream.prepare(request)
    if fault == "stall":
        outcome[0] = "stall_abandoned"
        await stream.write(body[: len(body) // 2])
        await hang(request, faults.hang_seconds, closing)
        drop(request)
        raise asyncio.CancelledError  # the answer is never finished; the runner logs nothing for this
    pieces = 10
    step = -(-len(body) // pieces)
    for i in range(0, len(body), step):
        await stream.write(body[i : i + step])
        await asyncio.sleep(faults.trickle_seconds / pieces)
    await stream.write_eof()
    return "200", stream


async def hang(request: web.Request, seconds: float, closing: asyncio.Event) -> bool:
    """Sleep `seconds` or until the client goes away / the server shuts down; True if abandoned."""
    # Server shutdown wakes the wait at once; a client leaving cancels the handler when the runner has
    # handler_cancellation (ours do), else the transport poll notices it, backing off to one check a second.
    deadline = time.monotonic() + seconds
    poll = HANG_POLL_S
    while True:
        transport = request.transport
        if transport is None or transport.is_closing() or closing.is_set():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(poll, left)):
                await closing.wait()
        poll = min(2 * poll, 1.0)
