"""What `ChatClient.chat` returns (`ChatResult`) and the client's live counters (`ClientStats`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from arena_engine.errors import FailureReason, FatalHTTPError, RequestError, RetryKind, failure_reason
from arena_engine.retry import classify_status

__all__ = ["ChatResult", "ClientStats", "make_result"]


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


_RESULT_SETTERS = tuple(getattr(ChatResult, f.name).__set__ for f in fields(ChatResult))
_new = object.__new__


def make_result(
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
