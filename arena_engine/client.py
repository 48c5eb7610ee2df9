"""OpenAI-compatible chat client: one aiohttp session per endpoint, limits, retries, live counters.

    ChatClient.chat(messages, params) -> ChatResult      never raises for HTTP or network failures
      ├── Admission.acquire           concurrency slot, 429 hold-back, RPM/TPM windows (arena_engine.admission;
      │                               by default arena_engine.limits.EndpointLimiter)
      ├── one attempt                 POST {api_url}/chat/completions, per-attempt timeouts
      ├── classify -> RetryDecision   done | fatal (400/401/403/404/422, other 4xx, a request-validation
      │                               error whatever its status) | retry (429, 408, 409, 5xx, timeouts,
      │                               resets, malformed body, a busy error inside a 200) after a wait
      └── reshape                     a request the server refused for its shape is resent at once in
                                      the shape it takes, and the endpoint remembers (see below)

What a 2xx body means (the answer, the model's reasoning kept apart from it, or a clear reason why there
is no answer) is `arena_engine.replies.read_reply`.

Reshaping, once per endpoint and remembered by the client: a `response_format` the server refuses
(llama-cpp-python 0.3.x answers OpenAI's json_schema with a 500 "Input should be 'text' or
'json_object'") steps down `replies.format_ladder` (json_schema -> json_object with the schema ->
json_object -> plain text); a `max_tokens` it calls unsupported becomes `max_completion_tokens` (or
back). The caller's params are never changed, so checkpoint keys stay those of the requested shape.

Retry waits: the server's `retry-after-ms`, `Retry-After` (seconds or HTTP date) or
`x-ratelimit-reset-requests/-tokens` when given (and then the whole endpoint is held back until the
wait has passed), otherwise exponential backoff with full jitter. A 429 (or a 503 with a server wait)
says "not now", not "this request is broken": its budget is time (`RetryPolicy.max_time`) alone, and
it waits the longer of the server's wait and the backoff, so a server that keeps refusing is asked
less and less often. Other failures are capped by `RetryPolicy.max_attempts` as well. A request that
cannot be retried in time ends with `error="retry_budget_exhausted: <last reason>"`.

Quota-aware pacing: every answer's `x-ratelimit-limit/remaining/reset-requests/-tokens` go to the
endpoint's admission (`Admission.observe`; `EndpointLimiter.observe` by default): where the config gives no rpm/tpm the server's
advertised limit becomes the endpoint's window (the first request goes alone until an answer says
it), and a quota about to run out holds the endpoint until the server has refilled.

The API key is read from the environment variable the `Endpoint` names and only ever goes into the
Authorization header; errors, reprs and results never contain it.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import orjson

from arena_engine.endpoint_config import Endpoint, EnvVar, RetryPolicy, Timeouts
from arena_engine.errors import (
    ConfigError,
    FailureReason,
    FatalHTTPError,
    RequestError,
    RetryKind,
    UsageError,
    failure_reason,
)
from arena_engine.health import ENDPOINT_DOWN, EndpointHealth
from arena_engine.limits import EndpointLimiter
from arena_engine.read_timeout import ReadWatchdog
from arena_engine.replies import (
    Fault,
    FormatShape,
    format_ladder,
    is_validation_error,
    read_reply,
    refused_token_param,
    refuses_format,
    snippet,
)

if TYPE_CHECKING:
    from arena_engine.admission import Admission

__all__ = [
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

#: Completion tokens assumed for the token-rate estimate when the request sets no max_tokens.
DEFAULT_COMPLETION_ESTIMATE = 256
#: Longest server message kept in an error string.
MAX_ERROR_MESSAGE = 300

#: Statuses that mean "slow down": with a server wait (any, for 429) their budget is time, not attempts.
THROTTLE_STATUSES = frozenset({429, 503})
FATAL_STATUSES = frozenset({400, 401, 403, 404, 422})
RETRY_STATUSES = frozenset({408, 409, 429})
RETRY_BUDGET_EXHAUSTED = FailureReason.RETRY_BUDGET_EXHAUSTED.value

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChatResult:
    """The outcome of one `chat` call, successful or not.

    `content` is the first choice's answer text, `choices` all choices' answers ("" where the server
    sent null); a reasoning model's thinking (`reasoning_content` / `reasoning` fields, leading
    `<think>...</think>` blocks) is never part of them but kept in `reasoning`. `finish_reason` is the
    first choice's ("length": cut off by the completion budget), on failed results too when a reply
    arrived.
    `latency` is the successful (or last) attempt's round trip; `elapsed` the whole call including
    queueing, rate-limit waits and retries. `status` is the last HTTP status (None if none arrived).
    `error` is None on success, else a short reason: "http_401: <server message>", "no_choices", the
    reasons of `arena_engine.replies.read_reply` ("refusal: ...", "tool_calls instead of content: ...",
    "text/html body, not JSON: ...", ...), or "retry_budget_exhausted: <last reason>" where the last
    reason is e.g. "timeout", "connection_reset", "malformed_json", "http_503: <server message>",
    "error_in_body: <server message>". `reason` is its typed code (a FailureReason), and
    `raise_for_error()` raises it as a RequestError (FatalHTTPError for a status retrying cannot fix).
    """

    content: str | None
    choices: tuple[str, ...]
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency: float
    attempts: int
    status: int | None
    error: str | None
    elapsed: float = 0.0
    reasoning: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def reason(self) -> FailureReason | None:
        """Why there is no answer, typed (None on success); `error` has the details."""
        return failure_reason(self.error)

    def raise_for_error(self) -> None:
        """Raise the failure as a :class:`RequestError` (a :class:`FatalHTTPError` for a 4xx other than
        408/409/429); nothing on success. For callers that want an exception where the run keeps a record."""
        if self.error is None:
            return
        reason = failure_reason(self.error) or FailureReason.OTHER
        status = self.status
        fatal = reason is FailureReason.HTTP and status is not None and classify_status(status) is RetryKind.FATAL
        cls = FatalHTTPError if fatal else RequestError
        raise cls(f"request failed: {self.error}", status=status, reason=reason)


@dataclass(slots=True)
class ClientStats:
    """Live counters of one client (for progress bars and tests)."""

    requests: int = 0  # attempts sent
    successes: int = 0
    failures: int = 0  # calls that ended with an error
    retries: int = 0
    rate_limited: int = 0  # 429 answers
    tokens_in: int = 0
    tokens_out: int = 0
    in_flight: int = 0  # attempts on the wire now
    reshaped: int = 0  # attempts resent at once in a shape the server takes (response_format, max_tokens)

    @property
    def done(self) -> int:
        return self.successes + self.failures

    def __repr__(self) -> str:
        return (
            f"ClientStats(requests={self.requests}, ok={self.successes}, failed={self.failures}, "
            f"retries={self.retries}, 429s={self.rate_limited}, tokens_in={self.tokens_in}, "
            f"tokens_out={self.tokens_out}, in_flight={self.in_flight}, reshaped={self.reshaped})"
        )


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after an attempt (`kind`: a RetryKind); `wait` is the server's wait."""

    kind: RetryKind
    reason: str | None = None
    wait: float | None = None  # seconds the server asked for (None: use backoff)
    status: int | None = None  # HTTP status of the answer, if one arrived


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration ("1s", "6m0s", "20ms", "1h2m3.5s") or a bare number of seconds."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    pos = 0
    total = 0.0
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            return None
        total += float(match.group(1)) * scale[match.group(2)]
        pos = match.end()
    return total


def _retry_after(value: str, server_date: str | None) -> float | None:
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    reference: float | None = None
    if server_date:
        try:  # measure against the server's own clock: immune to skew between the machines
            reference = email.utils.parsedate_to_datetime(server_date).timestamp()
        except (TypeError, ValueError, IndexError):
            reference = None
    if reference is None:
        reference = time.time()
    return max(0.0, when.timestamp() - reference)


def server_wait(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks us to wait, from (in order of precedence) `retry-after-ms`,
    `Retry-After` (seconds or HTTP date), `x-ratelimit-reset-requests/-tokens`; None if none is usable.

    Of the reset headers, those whose `x-ratelimit-remaining-*` is 0 count (all, if none says 0); the
    longest wins.
    """
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            ms = float(value)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms) and ms >= 0:
            return ms / 1000.0
    value = headers.get("retry-after")
    if value is not None:
        seconds = _retry_after(value, headers.get("date"))
        if seconds is not None:
            return seconds
    waits: list[tuple[bool, float]] = []
    for kind in ("requests", "tokens"):
        reset = headers.get(f"x-ratelimit-reset-{kind}")
        if reset is None:
            continue
        seconds = parse_duration(reset)
        if seconds is None:
            continue
        exhausted = headers.get(f"x-ratelimit-remaining-{kind}", "").strip() == "0"
        waits.append((exhausted, seconds))
    if not waits:
        return None
    binding = [s for exhausted, s in waits if exhausted] or [s for _, s in waits]
    return max(binding)


def _header_number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def observe_quota(limiter: Admission[Any], headers: Mapping[str, str], status: int, now: float) -> None:
    """Hand an answer's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` to the limiter (OpenAI's
    names; reset as a Go-style duration like `6m0s` or `20ms`, or seconds). A kind without a
    `remaining` header is skipped, so a server that sends none costs two header look-ups. Ends the
    limiter's probe unless this was a 429/503 that taught it nothing: then the probe is parked, and
    its retry goes before anything else."""
    for kind, remaining_key, limit_key, reset_key in _QUOTA_HEADERS:
        text = headers.get(remaining_key)
        if text is None:
            continue
        limit = _header_number(headers.get(limit_key))
        remaining = _header_number(text)
        reset = None
        if remaining is not None and limiter.running_out(kind, limit, remaining):  # else not needed
            text = headers.get(reset_key)
            reset = parse_duration(text) if text is not None else None
        limiter.observe(kind, limit, remaining, reset, now)
    if limiter.probing:
        if status not in THROTTLE_STATUSES or limiter.learned:
            limiter.end_probe()
        else:
            limiter.park_probe()


_QUOTA_HEADERS = tuple(
    (kind, f"x-ratelimit-remaining-{kind}", f"x-ratelimit-limit-{kind}", f"x-ratelimit-reset-{kind}")
    for kind in ("requests", "tokens")
)


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Full-jitter exponential backoff before attempt `attempt + 1` (attempt counts from 1)."""
    cap = min(policy.max_delay, policy.base_delay * 2.0 ** min(attempt - 1, 60))
    return rng.uniform(0.0, cap)


def classify_status(status: int) -> RetryKind:
    """RETRY for 408/409/429/5xx, FATAL for other errors, DONE for 2xx."""
    if 200 <= status < 300:
        return RetryKind.DONE
    if status in RETRY_STATUSES or status >= 500:
        return RetryKind.RETRY
    return RetryKind.FATAL


def estimate_tokens(messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None) -> int:
    """A cheap upper-ish estimate of the tokens a request will count against a TPM limit:
    prompt characters / 4 plus 4 per message, plus `max_tokens` (or the default completion estimate)."""
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping):
                    text = part.get("text")
                    if isinstance(text, str):
                        chars += len(text)
    completion = DEFAULT_COMPLETION_ESTIMATE
    if params:
        for key in ("max_completion_tokens", "max_tokens"):
            value = params.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                completion = value
                break
        n = params.get("n")
        if isinstance(n, int) and not isinstance(n, bool) and n > 1:
            completion *= n
    return chars // 4 + 4 * len(messages) + completion


def _server_message(raw: bytes, scrub: Callable[[str], str] = str) -> str:
    """The server's error message from an OpenAI-style error body, or the body's start; ``scrub`` runs
    before it is cut short (a key echoed back and cut in half would escape a later scrub)."""
    message: Any = None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        elif isinstance(error, str):
            message = error
        if message is None:
            message = data.get("message") or data.get("detail")
        if isinstance(message, list):  # FastAPI/pydantic: [{"loc": [...], "msg": "Input should be ..."}]
            message = "; ".join(_validation_item(item) for item in message)
    if not isinstance(message, str):
        message = raw.decode("utf-8", "replace")
    message = snippet(scrub(message), MAX_ERROR_MESSAGE)
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[: MAX_ERROR_MESSAGE - 3] + "..."
    return message


def _validation_item(item: Any) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("msg"), str):
        return str(item)
    loc = item.get("loc")
    where = ".".join(str(part) for part in loc) if isinstance(loc, list | tuple) else ""
    return f"{where}: {item['msg']}" if where else item["msg"]


SHORT_KEY = 8  # API keys shorter than this are masked only where they stand as a token (see _Secret)
MASK = "***"
_TOKEN_BEFORE = r"(?<![A-Za-z0-9_])(?<![A-Za-z0-9_][.-])"
_TOKEN_AFTER = r"(?![A-Za-z0-9_])(?![.-][A-Za-z0-9_])"


class _Hidden:
    """Holds secret values that are not text (the request headers); its repr never shows them."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


class _Secret:
    """Holds the API key; its repr never shows it (so neither do `vars(client)` nor debuggers).

    `mask` hides the key in text bound for logs and records (server messages, failure reasons).
    A key shorter than SHORT_KEY characters is hidden only where it stands as a token: not inside a
    longer run of letters, digits and `_ - .` (a `-` or `.` that does not go on into such a character,
    like a full stop, ends a token). Hiding every occurrence of the key `x` turned
    "retry_budget_exhausted" into "retry_budget_e***hausted". Short keys are not refused: they are the
    placeholders local servers are run with ("EMPTY" in vLLM's examples, "ollama" in Ollama's), and
    refusing them would break those setups while protecting nothing (they are not secrets).
    A key of SHORT_KEY or more characters is hidden wherever it occurs, also glued to other text
    (an echo such as "Bearer%20sk-..." or "\\nsk-..." is still the key, and that many characters of a
    key do not turn up inside ordinary words): there, a leak would cost more than a masked word.
    """

    __slots__ = ("_pattern", "value")

    def __init__(self, value: str) -> None:
        self.value = value
        escaped = re.escape(value)
        self._pattern = re.compile(escaped if len(value) >= SHORT_KEY else _TOKEN_BEFORE + escaped + _TOKEN_AFTER)

    def mask(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self.value in text else text

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


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
        if api_key is None and endpoint.api_key_env:
            api_key = os.environ.get(endpoint.api_key_env) or None
            if api_key is None:
                raise ConfigError(
                    f"endpoint {endpoint.name!r}: environment variable {endpoint.api_key_env} is not set; "
                    "export the API key there (or leave api_key_env out for an endpoint without keys)"
                )
        self.__key = _Secret(api_key) if api_key else None
        headers: dict[str, str] = {}
        secrets: list[str] = [api_key] if api_key else []
        for header, value in endpoint.extra_headers.items():
            if isinstance(value, EnvVar):
                found = os.environ.get(value.name)
                if not found:
                    raise ConfigError(
                        f"endpoint {endpoint.name!r}: environment variable {value.name} (header {header!r}) "
                        "is not set; export it"
                    )
                secrets.append(found)
                value = found
            headers[header] = value
        self.__headers = _Hidden(headers)
        # longest first, so a key that contains another secret is masked whole
        self.__secrets = tuple(_Secret(s) for s in sorted({s for s in secrets if s}, key=len, reverse=True))
        self._params = dict(endpoint.query_params) or None
        self._extra_body = dict(endpoint.extra_body)
        # what this endpoint was found to refuse: response_format shapes, and which budget key it takes
        self._refused_formats: set[str] = set()
        self._token_param: tuple[str, str] | None = None  # (refused, instead)
        self._learned = 0  # how many of those were found: a request built before the last one re-adapts
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
        self, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None = None
    ) -> ChatResult:
        """Send one chat completion request, retrying as the policy allows; never raises for HTTP or
        network failures (see `ChatResult.error`). Cancellation propagates."""
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
        learned = self._learned
        if learned:
            self._adapt(body, ladder)
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
            if limiter.probing:
                limiter.probe_sent()
            if learned != self._learned:  # a request ahead of this one found what the endpoint refuses
                learned = self._learned
                self._adapt(body, ladder)
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
                    decision = _network_failure(exc)
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
                            return _result(
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
                        if status != 429 and decision.reason and self._reshape(decision.reason, body, ladder):
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
        message = _server_message(raw, self._scrub)
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

    def _adapt(self, body: dict[str, Any], ladder: Sequence[FormatShape] | None) -> None:
        """Give `body` the shape this endpoint is known to take."""
        if ladder is not None:
            self._shape(body, ladder)
        if self._token_param is not None:
            refused, instead = self._token_param
            if refused in body and instead not in body:
                body[instead] = body.pop(refused)

    def _shape(self, body: dict[str, Any], ladder: Sequence[FormatShape]) -> str:
        """Put the best response_format of `ladder` this endpoint has not refused into `body`."""
        shape = next((s for s in ladder if s.name not in self._refused_formats), ladder[-1])
        if shape.value is None:
            body.pop("response_format", None)
        else:
            body["response_format"] = shape.value
        return shape.name

    def _reshape(self, reason: str, body: dict[str, Any], ladder: Sequence[FormatShape] | None) -> bool:
        """Whether the server refused the request for a shape it can be sent in otherwise; if so `body`
        now has that shape, and the endpoint remembers it for every later request."""
        if ladder is not None and len(ladder) > 1 and refuses_format(reason):
            sent = body.get("response_format")
            rung = next((s.name for s in ladder if s.value == sent), None)
            if rung is not None and rung != ladder[-1].name:
                if rung not in self._refused_formats:
                    self._refused_formats.add(rung)
                    self._learned += 1
                    log.warning("endpoint %r (%s, model %s) refuses response_format %s (%s); sending %s from now on",
                                self.endpoint.name, self._url, self._model, rung, reason,
                                self._shape({}, ladder))
                self._shape(body, ladder)
                return True
        swap = refused_token_param(reason, body)
        if swap is not None:
            if self._token_param != swap:
                self._token_param = swap
                self._learned += 1
                log.warning("endpoint %r (%s, model %s) refuses %s (%s); sending %s from now on",
                            self.endpoint.name, self._url, self._model, swap[0], reason, swap[1])
            body[swap[1]] = body.pop(swap[0])
            return True
        return False


def _network_failure(exc: aiohttp.ClientError) -> RetryDecision:
    """Map an aiohttp exception to a retry decision (all network trouble is worth another attempt)."""
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return TIMEOUT
    if isinstance(exc, aiohttp.ClientConnectorError):
        return RetryDecision(RetryKind.RETRY, f"{FailureReason.CONNECT_ERROR}: {type(exc).__name__}")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        return CONNECTION_RESET
    if isinstance(exc, aiohttp.ClientResponseError):
        return RetryDecision(RetryKind.RETRY, f"{FailureReason.BAD_RESPONSE}: {exc.status}", status=exc.status or None)
    return RetryDecision(RetryKind.RETRY, f"{FailureReason.CLIENT_ERROR}: {type(exc).__name__}")


TIMEOUT = RetryDecision(RetryKind.RETRY, FailureReason.TIMEOUT.value)
CONNECTION_RESET = RetryDecision(RetryKind.RETRY, FailureReason.CONNECTION_RESET.value)
RESHAPE = RetryDecision(RetryKind.RESHAPE)

_RESULT_SETTERS = tuple(getattr(ChatResult, f.name).__set__ for f in fields(ChatResult))
_new = object.__new__


def _result(
    content: str | None,
    choices: tuple[str, ...],
    finish_reason: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    latency: float,
    attempts: int,
    status: int | None,
    error: str | None,
    elapsed: float,
    reasoning: str | None = None,
) -> ChatResult:
    """`ChatResult(...)` at half the cost of the frozen dataclass __init__ (the hot path builds one per
    request): the slots are filled through their descriptors, which is what the frozen init does too."""
    r: ChatResult = _new(ChatResult)
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10 = _RESULT_SETTERS
    s0(r, content)
    s1(r, choices)
    s2(r, finish_reason)
    s3(r, prompt_tokens)
    s4(r, completion_tokens)
    s5(r, latency)
    s6(r, attempts)
    s7(r, status)
    s8(r, error)
    s9(r, elapsed)
    s10(r, reasoning)
    return r
