"""The simulated OpenAI-compatible HTTP endpoint (aiohttp.web).

Routes: `GET /v1/models`, `POST /v1/chat/completions` (non-streaming), `GET /sim/stats`
(`?times=1` adds arrival times), `POST /sim/reset`. Everything random is keyed on
(seed, request body digest, occurrence of that body), so outcomes do not depend on arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from arena_engine.errors import ConfigError
from arena_engine.sim.answers import candidate_answer, last_user_text, message_text
from arena_engine.sim.batches import BatchStats, SimBatches
from arena_engine.sim.config import Latency, SimConfig, SimModel
from arena_engine.sim.draws import digest64, normal, uniforms
from arena_engine.sim.judging import Judge, render_bad_verdict, render_verdict
from arena_engine.sim.ratelimit import SlidingWindowLimit
from arena_engine.sim.stats import SimStats

_JSON = "application/json"
_MAX_N = 128
_HANG_POLL_S = 0.05
# A 200 whose body is cut off mid-string: valid HTTP, invalid JSON.
_MALFORMED_BODY = (
    b'{"id": "chatcmpl-sim", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assi'
)


def _error(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON, headers=headers)


def _format_seconds(wait: float) -> str:
    """Retry-After in seconds: an integer when whole, else a decimal rounded up to the millisecond."""
    ms = math.ceil(wait * 1000.0 - 1e-9)
    return str(ms // 1000) if ms % 1000 == 0 else f"{ms / 1000:.3f}"


def _retry_headers(wait: float, fmt: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    if fmt in ("seconds", "both"):
        headers["Retry-After"] = _format_seconds(wait)
    if fmt in ("ms", "both"):
        headers["retry-after-ms"] = str(math.ceil(wait * 1000.0 - 1e-9))
    return headers


def _drop(request: web.Request) -> None:
    """Drop the connection without an answer."""
    if request.transport is not None:
        request.transport.abort()


def _estimate_tokens(text: str) -> int:
    return len(text) // 4 + 1


class _Simulator:
    """Per-app state and the request handlers."""

    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.models: dict[str, SimModel] = {m.name: m for m in config.models}
        self.latency: dict[str, Latency] = {m.name: m.latency or config.latency for m in config.models}
        self.judge = Judge(config)
        self.batches = SimBatches(self)
        self.stats = SimStats(track_bodies=config.track_bodies, grace=config.violation_grace_s, clock=clock)
        self.limit = (
            SlidingWindowLimit(config.rpm_limit, config.rpm_window_s)
            if config.rpm_limit is not None
            else None
        )
        self.fault_table = [(kind, rate) for kind, rate in config.faults.http_fault_rates() if rate > 0]
        self.closing = asyncio.Event()
        self._models_body = orjson.dumps(
            {
                "object": "list",
                "data": [
                    {"id": m.name, "object": "model", "created": 0, "owned_by": "arena-engine-sim"}
                    for m in config.models
                ],
            }
        )

    # -- routes -------------------------------------------------------------------------------------

    async def list_models(self, request: web.Request) -> web.Response:
        return web.Response(body=self._models_body, content_type=_JSON)

    async def get_stats(self, request: web.Request) -> web.Response:
        times = request.query.get("times", "") not in ("", "0", "false")
        return web.Response(body=orjson.dumps(self.snapshot(times=times)), content_type=_JSON)

    def snapshot(self, *, times: bool = False) -> dict[str, Any]:
        return {**self.stats.snapshot(times=times), "batches": self.batches.stats.snapshot()}

    async def post_reset(self, request: web.Request) -> web.Response:
        self.stats.reset()
        self.batches.stats = BatchStats()
        return web.Response(body=b'{"ok": true}', content_type=_JSON)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body_key = digest64(raw)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        problem, param = _validate(data)
        if problem is not None:
            self.stats.arrive(None, body_key)
            self.stats.done(body_key, "400")
            return _error(400, problem, "invalid_request_error", None, param)
        name = data["model"]
        model = self.models.get(name)
        if model is None:
            self.stats.arrive(None, body_key)
            self.stats.done(body_key, "404")
            return _error(
                404,
                f"The model `{name}` does not exist.",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        occurrence = self.stats.arrive(name, body_key)
        outcome = ["500"]  # how the request ended, for the stats (the hang marks itself before waiting)
        broken: list[bool] = []  # a 200 made unusable on purpose: a client is right to send it again
        try:
            outcome[0], response = await self._answer(request, data, model, body_key, occurrence, outcome, broken)
            return response
        except asyncio.CancelledError:
            # the client went away (our runners cancel handlers on disconnect)
            if outcome[0] not in ("hang_abandoned", "stall_abandoned"):
                outcome[0] = "client_gone"
            raise
        finally:
            self.stats.done(body_key, outcome[0], usable=not broken)

    # -- the simulated behaviour ----------------------------------------------------------------------

    async def _answer(
        self,
        request: web.Request,
        data: dict[str, Any],
        model: SimModel,
        body_key: int,
        occurrence: int,
        outcome: list[str],
        broken: list[bool],
    ) -> tuple[str, web.StreamResponse]:
        config = self.config
        if self.limit is not None:
            wait = self.limit.try_admit(self.clock())
            if wait > 0.0:
                self.stats.fault("rpm_429")
                self.stats.told_to_wait(body_key, wait)
                return "429", _error(
                    429,
                    f"Rate limit reached for requests ({config.rpm_limit:g} per minute). Retry later.",
                    "requests",
                    "rate_limit_exceeded",
                    headers=_retry_headers(wait, "both"),
                )
        u_fault, u_latency, u_bad, u_form = uniforms(config.seed, body_key, occurrence, 4)
        fault = None
        acc = 0.0
        for kind, rate in self.fault_table:
            acc += rate
            if u_fault < acc:
                fault = kind
                break
        if fault == "429":
            self.stats.fault("429")
            faults = config.faults
            if faults.retry_after != "none":
                self.stats.told_to_wait(body_key, faults.retry_after_s)
            return "429", _error(
                429,
                "Rate limit reached (simulated). Please retry after a while.",
                "requests",
                "rate_limit_exceeded",
                headers=_retry_headers(faults.retry_after_s, faults.retry_after),
            )
        lat = self.latency[model.name]
        delay = lat.seconds if lat.kind == "fixed" else lat.seconds * math.exp(lat.sigma * normal(u_latency))
        if delay > 0.0:
            await asyncio.sleep(delay)
        if fault is not None:
            self.stats.fault(fault)
            if fault in ("500", "502", "503"):
                return fault, _error(int(fault), f"Simulated server error {fault}.", "server_error")
            if fault == "reset":
                _drop(request)
                return "reset", web.Response(status=500)
            if fault == "hang":
                outcome[0] = "hang_abandoned"
                if await self._hang(request, config.faults.hang_seconds):
                    _drop(request)  # the client left or the server is closing: no answer
                    return "hang_abandoned", web.Response(status=504)
            elif fault in ("stall", "trickle"):
                response = self._completion(data, model, body_key, occurrence, u_bad, u_form, broken)
                return await self._dribble(request, response, fault, outcome)
            elif fault == "malformed":
                broken.append(True)
                return "200", web.Response(body=_MALFORMED_BODY, content_type=_JSON)
            elif fault == "no_choices":
                broken.append(True)
                body = {
                    "id": f"chatcmpl-sim-{body_key:016x}-{occurrence}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model.name,
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                }
                return "200", web.Response(body=orjson.dumps(body), content_type=_JSON)
        return "200", self._completion(data, model, body_key, occurrence, u_bad, u_form, broken)

    async def _dribble(
        self, request: web.Request, response: web.Response, fault: str, outcome: list[str]
    ) -> tuple[str, web.StreamResponse]:
        """Send `response` slowly: "trickle" spreads the body over trickle_seconds in 10 pieces; "stall"
        sends the headers and half the body, then nothing for hang_seconds (then drops the connection)."""
        body = response.body
        assert isinstance(body, bytes)
        stream = web.StreamResponse(status=response.status, headers={"Content-Type": _JSON})
        stream.content_length = len(body)
        await stream.prepare(request)
        faults = self.config.faults
        if fault == "stall":
            outcome[0] = "stall_abandoned"
            await stream.write(body[: len(body) // 2])
            await self._hang(request, faults.hang_seconds)
            _drop(request)
            raise asyncio.CancelledError  # the answer is never finished; the runner logs nothing for this
        pieces = 10
        step = -(-len(body) // pieces)
        for i in range(0, len(body), step):
            await stream.write(body[i : i + step])
            await asyncio.sleep(faults.trickle_seconds / pieces)
        await stream.write_eof()
        return "200", stream

    async def _hang(self, request: web.Request, seconds: float) -> bool:
        """Sleep `seconds` or until the client goes away / the server shuts down; True if abandoned."""
        # Server shutdown wakes the wait at once; a client leaving cancels the handler when the runner has
        # handler_cancellation (ours do), else the transport poll notices it, backing off to one check a second.
        deadline = time.monotonic() + seconds
        poll = _HANG_POLL_S
        while True:
            transport = request.transport
            if transport is None or transport.is_closing() or self.closing.is_set():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(poll, left)):
                    await self.closing.wait()
            poll = min(2 * poll, 1.0)

    def _completion(
        self,
        data: dict[str, Any],
        model: SimModel,
        body_key: int,
        occurrence: int,
        u_bad: float,
        u_form: float,
        broken: list[bool],
    ) -> web.Response:
        config = self.config
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
                self.stats.fault("bad_verdict")
                broken.append(True)
            for i in range(n):
                if bad:
                    contents.append(render_bad_verdict(u_form, as_json))
                else:
                    label = self.judge.verdict(prompt, body_key + i, model)
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
            tokens = _estimate_tokens(content)
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
        prompt_tokens = sum(_estimate_tokens(message_text(m.get("content"))) + 3 for m in messages)
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
        return web.Response(body=orjson.dumps(body), content_type=_JSON)


def _validate(data: Any) -> tuple[str | None, str | None]:
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
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= _MAX_N):
        return f"`n` must be an integer from 1 to {_MAX_N}.", "n"
    if data.get("stream"):
        return "Streaming is not supported by the simulator; send stream=false.", "stream"
    return None, None


SIM_KEY = web.AppKey("arena_engine_sim", _Simulator)


def make_app(config: SimConfig, clock: Callable[[], float] = time.monotonic) -> web.Application:
    """The aiohttp application serving `config` (state lives in the app; nothing global). `clock` times
    the rate limit and the Retry-After bookkeeping (tests pass a fake one)."""
    sim = _Simulator(config, clock)
    app = web.Application(client_max_size=256 * 1024 * 1024)  # batch input files go up to 200 MB
    app[SIM_KEY] = sim
    app.router.add_get("/v1/models", sim.list_models)
    app.router.add_post("/v1/chat/completions", sim.chat)
    app.router.add_post("/chat/completions", sim.chat)
    app.router.add_get("/sim/stats", sim.get_stats)
    app.router.add_post("/sim/reset", sim.post_reset)
    sim.batches.routes(app)

    async def on_shutdown(app: web.Application) -> None:
        sim.closing.set()

    app.on_shutdown.append(on_shutdown)
    return app


class SimServer:
    """The simulator in-process: `async with SimServer(config) as sim: ... sim.url ... sim.stats()`.

    `clock` (monotonic seconds) times the rate limit and the Retry-After bookkeeping; a test that moves
    a fake one on sees those waits pass at once."""

    def __init__(
        self,
        config: SimConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        shutdown_timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.host = host
        self._port = port
        self._shutdown_timeout = shutdown_timeout
        self._app = make_app(config, clock)
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("SimServer is not running; use `async with SimServer(...)`")
        return self._port

    @property
    def url(self) -> str:
        """The OpenAI-style base URL, e.g. http://127.0.0.1:PORT/v1."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def simulator(self) -> _Simulator:
        return self._app[SIM_KEY]

    def stats(self, *, times: bool = False) -> dict[str, Any]:
        """The same dict as `GET /sim/stats`."""
        return self._app[SIM_KEY].snapshot(times=times)

    def reset_stats(self) -> None:
        """Zero the counters, the batch ones too (as ``POST /sim/reset`` does)."""
        sim = self._app[SIM_KEY]
        sim.stats.reset()
        sim.batches.stats = BatchStats()

    async def start(self) -> None:
        runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self._shutdown_timeout,
            handler_cancellation=True,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._port, backlog=4096)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"simulator cannot listen on {self.host}:{self._port}: {exc.strerror or exc}; pick another --port"
            ) from None
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        self._port = int(addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        where = self.url if self._runner is not None else "not running"
        return f"SimServer({where}, models={[m.name for m in self.config.models]})"


def serve(
    config: SimConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run the simulator until SIGINT/SIGTERM (blocking). Uses uvloop when installed.

    `ready(url)` is called once the server listens (useful with port 0).
    """

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        async with SimServer(config, host, port) as sim:
            if ready is not None:
                ready(sim.url)
            await stop.wait()

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
