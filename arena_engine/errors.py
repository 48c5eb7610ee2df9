"""One exception root for everything arena-engine raises on purpose, and the typed reasons of failures.

    ArenaError
    ├── ConfigError        a config file or object is wrong (names file and key)
    ├── DatasetError       a dataset line is wrong (names file, line and field)
    │   └── ImportMismatchError  an imported answer's question is not in the dataset (names file and line)
    ├── CheckpointError    a run folder cannot be used (locked, unreadable, corrupt beyond repair)
    ├── UsageError         the library was called the wrong way (also a RuntimeError): an Arena or a
    │                      ChatClient used outside its ``async with``, run_arena inside a running loop
    ├── ArgumentError      an argument of a library call is out of range (also a ValueError): Arena's
    │                      part, write_reports' inline/part_size, rate_battles' arrays and options
    ├── RequestError       an endpoint request failed for good (after retries or at once); ``status``
    │   │                  is the HTTP status (if an answer arrived), ``reason`` a FailureReason.
    │   │                  Raised by ``ChatResult.raise_for_error()`` and by batch API calls
    │   └── FatalHTTPError a 4xx other than 408/409/429 (400/401/403/404/422...): retrying cannot help
    ├── BatchError         (arena_engine.batch.errors) a batch API call or a whole batch failed; its
    │                      HTTP failures are RequestErrors too (BatchRequestError, BatchRefusedError)
    └── VerdictError       a judge answer held no usable verdict (judge.parse_verdict; the run records
                           its message as the judgment's error and goes on)

A request that fails inside a run is not raised: the run goes on and the failure is a record (the
``error`` of ``ChatResult`` and of the ``failures`` checkpoints, a string such as ``"http_401: ..."``,
kept as it always was on disk). Its typed reason is :func:`failure_reason` (``ChatResult.reason``), a
:class:`FailureReason`; ``ChatResult.raise_for_error()`` turns it into the RequestError above.

Messages say what went wrong and what to do. They never contain API keys.
"""

from __future__ import annotations

from enum import StrEnum

#: how the reason for a 2xx whose body is another type (an HTML page) ends, after the content type
NOT_JSON_BODY = " body, not JSON"


class RetryKind(StrEnum):
    """What to do after a request attempt (``RetryDecision.kind``, ``replies.Fault.kind``). The values
    are the strings these kinds always were, so a kind compares equal to (and serialises as) them."""

    DONE = "done"  # an answer
    FATAL = "fatal"  # the same request fails the same way: give up now
    RETRY = "retry"  # worth another attempt after a wait
    RESHAPE = "reshape"  # resend at once in a shape the server takes


class FailureReason(StrEnum):
    """Why a request has no answer: the code a failure's error string starts with.

    The values are those codes as the client writes them (``HTTP`` stands for ``http_<status>``, the
    status being the record's own); the error strings on disk are unchanged.
    """

    HTTP = "http"  # "http_401: <server message>": an HTTP error status
    TIMEOUT = "timeout"  # no (complete) answer within the timeouts
    CONNECTION_RESET = "connection_reset"  # the connection broke mid-request
    CONNECT_ERROR = "connect_error"  # no connection (closed port, unknown host)
    BAD_RESPONSE = "bad_response"  # an HTTP answer aiohttp could not read
    CLIENT_ERROR = "client_error"  # another aiohttp failure
    MALFORMED_JSON = "malformed_json"  # a JSON-typed 2xx body that does not parse
    NOT_JSON = "not_json"  # "text/html body, not JSON: ...": a 2xx body of another type
    ERROR_IN_BODY = "error_in_body"  # a 2xx body holding an error object
    NO_CHOICES = "no_choices"  # a 2xx body without choices
    NO_CONTENT = "no_content"  # "no content (finish_reason: ...)", "no content, only reasoning (...)"
    REFUSAL = "refusal"  # the model refused ("refusal: <text>")
    TOOL_CALLS = "tool_calls"  # "tool_calls instead of content: <names>"
    CONTENT_FILTER = "content_filter"  # the server's content filter removed the answer
    RETRY_BUDGET_EXHAUSTED = "retry_budget_exhausted"  # "retry_budget_exhausted: <last attempt's reason>"
    ENDPOINT_DOWN = "endpoint_down"  # "endpoint_down: <cause>": the endpoint's circuit is open (health)
    BATCH_FAILED = "batch_failed"  # "batch_failed: <reason> (tried n times)": a batch request given up
    DEFERRED = "deferred_to_batch"  # queued for the next batch (not a failure of the run)
    NOT_NEEDED = "not_needed"  # "not_needed: <why>": dropped before sending, its answer could not be used
    OTHER = "error"  # anything else


_BY_CODE = {r.value: r for r in FailureReason}


def failure_reason(error: str | None) -> FailureReason | None:
    """The typed reason of a failure's error string (None for no error, i.e. an answer)."""
    if error is None:
        return None
    code = error.split(":", 1)[0].strip()
    found = _BY_CODE.get(code)
    if found is not None and found is not FailureReason.HTTP:
        return found
    if code.startswith("http_"):
        return FailureReason.HTTP
    if code.startswith("tool_calls instead of content"):
        return FailureReason.TOOL_CALLS
    if code.startswith("no content"):
        return FailureReason.NO_CONTENT
    if code.endswith(NOT_JSON_BODY):
        return FailureReason.NOT_JSON
    return FailureReason.OTHER


class ArenaError(Exception):
    """Root of every error arena-engine raises on purpose."""


class ConfigError(ArenaError):
    """A configuration file or object is invalid."""


class DatasetError(ArenaError):
    """A dataset file or line is invalid."""


class ImportMismatchError(DatasetError):
    """An imported answer (an EvalScope row) answers no query of the arena's dataset."""


class CheckpointError(ArenaError):
    """A run folder cannot be used."""


class UsageError(ArenaError, RuntimeError):
    """The library was called the wrong way (a RuntimeError too, which it used to be)."""


class ArgumentError(ArenaError, ValueError):
    """An argument of a library call is out of range (a ValueError too, which it used to be)."""


class RequestError(ArenaError):
    """A request to an endpoint failed for good: ``status`` the HTTP status if an answer arrived,
    ``reason`` the typed :class:`FailureReason`."""

    def __init__(self, message: str, *, status: int | None = None,
                 reason: FailureReason = FailureReason.OTHER) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class FatalHTTPError(RequestError):
    """The endpoint answered with a status that retrying cannot fix (a 4xx other than 408/409/429)."""


class VerdictError(ArenaError):
    """A judge answer held no usable verdict."""


def unwrap(exc: BaseException, kind: type[BaseException] = ArenaError, *, alone: bool = True) -> BaseException:
    """What a task group's exception group stands for: its first ``kind`` error.

    A task group wraps what its tasks raise (and its other tasks end cancelled), so callers would see an
    exception group where one :class:`ArenaError` was raised. This returns the first ``kind`` leaf (depth
    first, in order) when every other leaf is a ``kind`` too or a cancellation; with ``alone=False`` even
    when the group holds other errors. Otherwise (or for an exception that is not a group) ``exc`` itself.
    The one place exception groups are taken apart: ``raise unwrap(group) from None``.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    from asyncio import CancelledError  # loaded already wherever a task group ran

    leaves: list[BaseException] = []
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseExceptionGroup):
            stack.extend(reversed(e.exceptions))
        else:
            leaves.append(e)
    found = [e for e in leaves if isinstance(e, kind)]
    if not found:
        return exc
    if alone and any(not isinstance(e, kind | CancelledError) for e in leaves):
        return exc
    return found[0]
