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
from arena_engine.sim.batches import BatchStats, SimBatches
from arena_engine.sim.completion import chat_completion, validate_chat
from arena_engine.sim.config import Latency, SimConfig, SimModel
from arena_engine.sim.draws import digest64, normal, uniforms
from arena_engine.sim.faults import MALFORMED_BODY, dribble, drop, hang, no_choices
from arena_engine.sim.judging import Judge
from arena_engine.sim.ratelimit import SlidingWindowLimit
from arena_engine.sim.responses import JSON, error_response, retry_headers
from arena_engine.sim.stats import SimStats


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
        return web.Response(body=self._models_body, content_type=JSON)

    async def get_stats(self, request: web.Request) -> web.Response:
        times = request.query.get("times", "") not in ("", "0", "false")
        return web.Response(body=orjson.dumps(self.snapshot(times=times)), content_type=JSON)

    def snapshot(self, *, times: bool = False) -> dict[str, Any]:
        return {**self.stats.snapshot(times=times), "batches": self.batches.stats.snapshot()}

    async def post_reset(self, request: web.Request) -> web.Response:
        self.stats.reset()
        self.batches.stats = BatchStats()
        return web.Response(body=b'{"ok": true}', content_type=JSON)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body_key = digest64(raw)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        problem, param = validate_chat(data)
        if problem is not None:
            self.stats.arrive(None, body_key)
            self.stats.done(body_key, "400")
            return error_response(400, problem, "invalid_request_error", None, param)
        name = data["model"]
        model = self.models.get(name)
        if model is None:
            self.stats.arrive(None, body_key)
            self.stats.done(body_key, "404")
            return error_response(
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
                return "429", error_response(
                    429,
                    f"Rate limit reached for requests ({config.rpm_limit:g} per minute). Retry later.",
                    "requests",
                    "rate_limit_exceeded",
                    headers=retry_headers(wait, "both"),
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
            return "429", error_response(
                429,
                "Rate limit reached (simulated). Please retry after a while.",
                "requests",
                "rate_limit_exceeded",
                headers=retry_headers(faults.retry_after_s, faults.retry_after),
            )
        lat = self.latency[model.name]
        delay = lat.seconds if lat.kind == "fixed" else lat.seconds * math.exp(lat.sigma * normal(u_latency))
        if delay > 0.0:
            await asyncio.sleep(delay)
        if fault is not None:
            self.stats.fault(fault)
            if fault in ("500", "502", "503"):
                return fault, error_response(int(fault), f"Simulated server error {fault}.", "server_error")
            if fault == "reset":
                drop(request)
                return "reset", web.Response(status=500)
            if fault == "hang":
                outcome[0] = "hang_abandoned"
                if await hang(request, config.faults.hang_seconds, self.closing):
                    drop(request)  # the client left or the server is closing: no answer
                    return "hang_abandoned", web.Response(status=504)
            elif fault in ("stall", "trickle"):
                response = chat_completion(self.config, self.judge, self.stats, data, model, body_key, occurrence, u_bad, u_form,
                                       broken)
                return await dribble(request, response, fault, outcome, config.faults, self.closing)
            elif fault == "malformed":
                broken.append(True)
                return "200", web.Response(body=MALFORMED_BODY, content_type=JSON)
            elif fault == "no_choices":
                broken.append(True)
                return "200", no_choices(model, body_key, occurrence)
        return "200", chat_completion(self.config, self.judge, self.stats, data, model, body_key, occurrence, u_bad, u_form,
                                       broken)


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
