"""One exception root for everything arena-engine raises on purpose.

    ArenaError
    ├── ConfigError        a config file or object is wrong (names file and key)
    ├── DatasetError       a dataset line is wrong (names file, line and field)
    │   └── ImportMismatchError  an imported answer's question is not in the dataset (names file and line)
    ├── CheckpointError    a run folder cannot be used (locked, unreadable, corrupt beyond repair)
    ├── RequestError       an endpoint request failed for good (after retries or at once)
    │   └── FatalHTTPError 400/401/403/404/422: retrying cannot help
    └── VerdictError       a judge answer held no usable verdict

Messages say what went wrong and what to do. They never contain API keys.
"""

from __future__ import annotations

from enum import StrEnum


class RetryKind(StrEnum):
    """What to do after a request attempt (``RetryDecision.kind``, ``replies.Fault.kind``). The values
    are the strings these kinds always were, so a kind compares equal to (and serialises as) them."""

    DONE = "done"  # an answer
    FATAL = "fatal"  # the same request fails the same way: give up now
    RETRY = "retry"  # worth another attempt after a wait
    RESHAPE = "reshape"  # resend at once in a shape the server takes


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


class RequestError(ArenaError):
    """A request to an endpoint failed for good."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class FatalHTTPError(RequestError):
    """The endpoint answered with a status that retrying cannot fix."""


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
