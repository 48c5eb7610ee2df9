"""OpenAI-compatible chat client: one aiohttp session per endpoint, limits, retries, live counters.

    ChatClient.chat(messages, params) -> ChatResult      never raises for HTTP or network failures
      ├── Admission.acquire           concurrency slot, 429 hold-back, RPM/TPM windows (arena_engine.admission;
      │                               by default arena_engine.limits.EndpointLimiter)
      ├── one attempt                 POST {api_url}/chat/completions, per-attempt timeouts
      ├── classify -> RetryDecision   done | fatal (400/401/403/404/422, other 4xx, a request-validation
      │                               error whatever its status) | retry (429, 408, 409, 5xx, timeouts,
      │                               resets, malformed body, a busy error inside a 200) after a wait
      └── reshape                     a request the server refused for its shape is resent at once in
                                      the shape it takes, and the endpoint remembers (arena_engine.reshape)

What a 2xx body means (the answer, the model's reasoning kept apart from it, or a clear reason why there
is no answer) is `arena_engine.replies.read_reply`. Which failures are retried and after what wait is
`arena_engine.retry`; what a request costs the endpoint's quota and what the server says is left of it
(`x-ratelimit-*`, handed to the admission) is `arena_engine.quota`; the result and the live counters
are `arena_engine.chat_result`. This module re-exports their public names for older imports.

The API key is read from the environment variable the `Endpoint` names and only ever goes into the
Authorization header; errors, reprs and results never contain it (`arena_engine.masking`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import orjson

from arena_engine.chat_result import ChatResult, ClientStats, make_result
from arena_engine.endpoint_config import Endpoint, EnvVar, RetryPolicy, Timeouts
from arena_engine.errors import FailureReason, RetryKind, UsageError
from arena_engine.health import ENDPOINT_DOWN, EndpointHealth
from arena_engine.limits import EndpointLimiter
from arena_engine.masking import SHORT_KEY, read_secrets
from arena_engine.quota import estimate_tokens, observe_quota
from arena_engine.read_timeout import ReadWatchdog
from arena_engine.replies import Fault, format_ladder, is_validation_error, read_reply
from arena_engine.reshape import Shapes
from arena_engine.retry import (
    CONNECTION_RESET,
    RESHAPE,
    RETRY_BUDGET_EXHAUSTED,
    THROTTLE_STATUSES,
    TIMEOUT,
    RetryDecision,
    backoff_delay,
    classify_status,
    network_failure,
    parse_duration,
    server_message,
    server_wait,
)

if TYPE_CHECKING:
    from arena_engine.admission import Admission

__all__ = [
    "RETRY_BUDGET_EXHAUSTED",
    "SHORT_KEY",
    "ChatClient",
    "ChatResult",
    "ClientStats",
    "Endpoint",
    "EnvVar",
    "RetryDecision",
    "RetryKind",
    "RetryPolicy",
    "Timeouts",
    "backoff_delay",
    "classify_status",
    "estimate_tokens",
    "parse_duration",
    "server_wait",
]


class ChatClient:
    """Sends chat requests to one `Endpoint`. Use inside the running loop: `async with ChatClient(ep) as c`.

    The API key is `api_key`, else the value of the environment variable `endpoint.api_key_env`
    (ConfigError if that is named but unset); only the Authorization header ever sees it. Header values
    given as `EnvVar` are read the same way and are as secret.
    `clock` (default `time.monotonic`; must count seconds like the loop's clock) times latencies, waits and the retry budget; `rng` draws backoff
    jitter; `trace_configs` are handed to the aiohttp session (request timing hooks; they see the
    Authorization header, so treat them as trusted code). `stats` holds live counters; `limiter` the
    endpoint's admission state: `admission` (an `arena_engine.admission.Admission`; a distributed run
    passes one whose windows are the cluster's), else an `EndpointLimiter` of the endpoint's limits.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        api_key: str | None = None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
        admission: Admission[Any] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._admission = admission
        self.__key, self.__headers, self.__secrets = read_secrets(endpoint, api_key)
        self._params = dict(endpoint.query_params) or None
        self._extra_body = dict(endpoint.extra_body)
        # what this endpoint was found to refuse: response_format shapes, and which budget key it takes
        self._shapes = Shapes(endpoint.name, endpoint.chat_url, endpoint.model)
        #: the last "slow down" answer (status, reason): why a request that never left the queue failed
        self._throttled_by: tuple[int, str] | None = None
        self._clock: Callable[[], float] = clock or time.monotonic
        self._rng = rng or random.Random()
        self._url = endpoint.chat_url
        self._model = endpoint.model
        self._total_timeout = endpoint.timeouts.total
        self._session: aiohttp.ClientSession | None = None
        self._limiter: Admission[Any] | None = None
        t = endpoint.timeouts
        # the read timeout is the watchdog's (one timer for all attempts; see arena_engine.read_timeout)
        self._timeout = aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect)
        self._watchdog = ReadWatchdog(t.read, self._clock)
        self._trace_configs = list(trace_configs)
        self.stats = ClientStats()
        self.health = EndpointHealth()  # the circuit breaker (arena_engine.health)

    @property
    def limiter(self) -> Admission[Any]:
        if self._limiter is None:
            raise UsageError("ChatClient is not open: use `async with ChatClient(endpoint) as client:`")
        return self._limiter

    async def __aenter__(self) -> ChatClient:
        if self._session is not None:
            raise UsageError("ChatClient is already open")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.__key is not None:
            headers["Authorization"] = f"Bearer {self.__key.value}"
        headers.update(self.__headers.value)
        connector = aiohttp.TCPConnector(limit=self.endpoint.limits.concurrency, limit_per_host=0)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            timeout=self._timeout,
            raise_for_status=False,
            trace_configs=self._trace_configs or None,
        )
        admission = self._admission
        if admission is None:
            admission = EndpointLimiter(self.endpoint.limits, clock=self._clock, learn=True)
        self._limiter = admission
        return self

    async def __aexit__(self, *exc: object) -> None:
        session, self._session = self._session, None
        self._watchdog.close()
        if session is not None:
            await session.close()

    def __repr__(self) -> str:
        return (
            f"ChatClient(endpoint={self.endpoint.name!r}, model={self.endpoint.model!r}, "
            f"url={self._url!r}, key={'set' if self.__key is not None else 'none'}, {self.stats!r})"
        )

    def _scrub(self, text: str) -> str:
        for secret in self.__secrets:
            text = secret.mask(text)
        return text

    async def chat(
        self, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None = None, *,
        needed: Callable[[], str | None] | None = None,
    ) -> ChatResult:
        """Send one chat completion request, retrying as the policy allows; never raises for HTTP or
        network failures (see `ChatResult.error`). Cancellation propagates.

        ``needed`` (the caller's): asked once the request has its slot, before each attempt is sent;
        a reason means its answer can no longer be used (an endpoint it would be judged with is down),
        and the request ends unsent with ``error`` ``"not_needed: <reason>"``."""
        session = self._session
        limiter = self._limiter
        if session is None or limiter is None:
            raise UsageError("ChatClient is not open: use `async with ChatClient(endpoint) as client:`")
        body: dict[str, Any] = {"model": self._model, "messages": messages}
        if self._extra_body:
            body.update(self._extra_body)
        if params:
            body.update(params)
        ladder = format_ladder(body["response_format"]) if body.get("response_format") is not None else None
        shapes = self._shapes
        learned = shapes.learned
        if learned:
            shapes.adapt(body, ladder)
        data = orjson.dumps(body)
        est = estimate_tokens(messages, params) if limiter.needs_tokens else 0
        policy = self.endpoint.retry
        clock = self._clock
        stats = self.stats
        url = self._url
        watchdog = self._watchdog
        start = clock()
        deadline = start + policy.max_time
        attempt = 0
        throttled = 0  # attempts refused with "slow down" (429, 503 + wait): time-budgeted, not counted
        latency = 0.0
        status: int | None = None
        reason = FailureReason.TIMEOUT.value
        reshaped = 0  # attempts resent at once in another shape: they do not count against max_attempts
        finish: str | None = None
        health = self.health
        probe_retry = False  # this request is the limiter's parked probe: its retry goes first
        while True:
            attempt += 1
            if health.is_open:  # the endpoint stopped answering: send nothing more (arena_engine.health)
                if probe_retry:
                    limiter.end_probe()
                return self._failure(f"{ENDPOINT_DOWN}: {health.cause}", status, latency, attempt - 1, start, finish)
            if probe_retry:
                ticket = await limiter.acquire(est, probe=True)
            else:
                ticket = limiter.try_acquire(est) or await limiter.acquire(est)
            if health.is_open:  # it opened while this request waited for a slot
                limiter.release(ticket, sent=False)
                if limiter.probing:
                    limiter.end_probe()
                return self._failure(f"{ENDPOINT_DOWN}: {health.cause}", status, latency, attempt - 1, start, finish)
            why = needed() if needed is not None else None
            if why is not None:  # the caller can no longer use its answer: not sent, not a failure here
                limiter.release(ticket, sent=False)
                if limiter.probing:
                    limiter.end_probe()
                return ChatResult(None, (), finish, 0, 0, latency, attempt - 1, status,
                                  f"{FailureReason.NOT_NEEDED}: {why}", clock() - start)
            if limiter.probing:
                limiter.probe_sent()
            if learned != shapes.learned:  # a request ahead of this one found what the endpoint refuses
                learned = shapes.learned
                shapes.adapt(body, ladder)
                data = orjson.dumps(body)
            sent = False
            used: int | None = None
            try:
                t0 = clock()
                remaining = deadline - t0
                if remaining < self._total_timeout:
                    if remaining <= 0:  # the wait for admission used up the time budget
                        if attempt == 1 and self._throttled_by is not None:  # never sent: the endpoint's
                            status, reason = self._throttled_by  # "slow down" held it, say so (not "timeout")
                            reason += " (held in the queue by it, not sent)"
                        return self._failure(
                            f"{RETRY_BUDGET_EXHAUSTED}: {reason}", status, latency, attempt - 1, start, finish
                        )
                    timeout = aiohttp.ClientTimeout(total=remaining, sock_connect=self._timeout.sock_connect)
                else:
                    timeout = self._timeout
                sent = True
                stats.requests += 1
                stats.in_flight += 1
                watch = watchdog.start(t0)
                try:
                    async with session.post(url, data=data, timeout=timeout, params=self._params) as resp:
                        status = resp.status
                        watchdog.receiving(watch, resp.content, clock())
                        raw = await resp.read()
                except asyncio.CancelledError:
                    if not watchdog.absorb(watch):
                        raise
                    decision = TIMEOUT  # nothing received for timeouts.read seconds
                    status = None
                except aiohttp.ClientError as exc:
                    decision = network_failure(exc)
                    status = decision.status
                except TimeoutError:  # the attempt's total timeout
                    decision = TIMEOUT
                    status = None
                except OSError:  # a socket error aiohttp did not wrap
                    decision = CONNECTION_RESET
                    status = None
                else:
                    observe_quota(limiter, resp.headers, status, clock())
                    if 200 <= status < 300:
                        outcome = read_reply(raw, resp.headers.get("Content-Type"), self._scrub)
                        stats.tokens_in += outcome[3]
                        stats.tokens_out += outcome[4]
                        used = outcome[3] + outcome[4]
                        if not isinstance(outcome, Fault):
                            content, choices, finish_reason, prompt_tokens, completion_tokens, thought = outcome
                            latency = clock() - t0
                            stats.successes += 1
                            limiter.on_success(ticket, latency)
                            health.succeeded()
                            return make_result(
                                content,
                                choices,
                                finish_reason,
                                prompt_tokens,
                                completion_tokens,
                                latency,
                                attempt,
                                status,
                                None,
                                clock() - start,
                                thought,
                            )
                        finish = outcome.finish_reason
                        decision = RetryDecision(outcome.kind, outcome.reason, status=status)
                    else:
                        decision = self._http_failure(status, raw, resp.headers, ticket)
                        if status != 429 and decision.reason and shapes.reshape(decision.reason, body, ladder):
                            decision = RESHAPE
                finally:
                    watchdog.stop(watch)
                    stats.in_flight -= 1
                latency = clock() - t0
            finally:
                limiter.release(ticket, used_tokens=used, sent=sent)
            if decision is RESHAPE:  # resend at once in the shape the endpoint takes (once per endpoint)
                data = orjson.dumps(body)
                reshaped += 1
                stats.reshaped += 1
                continue
            reason = decision.reason or "error"
            health.failed(reason)
            if decision.kind is RetryKind.FATAL:
                if limiter.probing:
                    limiter.end_probe()  # a fatal answer: nothing to wait for
                return self._failure(reason, status, latency, attempt, start, finish)
            probe_retry = limiter.probe_parked  # only one request is out while probing: this one
            if limiter.probing and decision.status is None:
                limiter.end_probe()  # no answer at all (network, timeout): nothing to learn from waiting
            now = clock()
            server = decision.wait
            if server is not None:
                limiter.hold(now + server)  # nothing else goes to this endpoint before the wait is over
            if decision.status == 429 or (server is not None and decision.status in THROTTLE_STATUSES):
                throttled += 1  # "not now": the time budget decides; the wait grows while refusals go on
                self._throttled_by = (decision.status, reason)
                wait = backoff_delay(throttled, policy, self._rng)
                if server is not None and server > wait:
                    wait = server
                counted_out = False
            else:
                wait = server if server is not None else backoff_delay(attempt - throttled - reshaped, policy, self._rng)
                counted_out = attempt - throttled - reshaped >= policy.max_attempts
            if counted_out or now + wait >= deadline:
                if probe_retry:
                    limiter.end_probe()  # giving up: the others must not wait for a retry that never comes
                return self._failure(
                    f"{RETRY_BUDGET_EXHAUSTED}: {reason}", status, latency, attempt, start, finish
                )
            stats.retries += 1
            if wait > 0:
                try:
                    with anyio.move_on_after(wait):  # the backoff ends early if the endpoint is found down
                        await health.wait_open()
                except BaseException:
                    if probe_retry:
                        limiter.end_probe()
                    raise

    def _failure(
        self, error: str, status: int | None, latency: float, attempts: int, start: float,
        finish_reason: str | None = None,
    ) -> ChatResult:
        self.stats.failures += 1
        return ChatResult(
            None, (), finish_reason, 0, 0, latency, attempts, status, self._scrub(error), self._clock() - start
        )

    def _http_failure(
        self, status: int, raw: bytes, headers: Mapping[str, str], ticket: Any
    ) -> RetryDecision:
        message = server_message(raw, self._scrub)
        reason = f"http_{status}: {message}"
        if classify_status(status) is RetryKind.FATAL:
            return RetryDecision(RetryKind.FATAL, reason, status=status)
        if status == 429:
            self.stats.rate_limited += 1
            self.limiter.on_rate_limited(ticket)
        elif status == 503:  # overloaded: fewer slots too (an adaptive or auto gate)
            self.limiter.on_rate_limited(ticket)
        elif is_validation_error(message):  # the server's validator said no (llama-cpp-python: a 500)
            return RetryDecision(RetryKind.FATAL, reason, status=status)
        return RetryDecision(RetryKind.RETRY, reason, server_wait(headers), status=status)
