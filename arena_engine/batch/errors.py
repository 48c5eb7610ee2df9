"""Errors of the batch layer."""

from __future__ import annotations

from ..errors import ArenaError, FailureReason, FatalHTTPError, RequestError


class BatchError(ArenaError):
    """A batch API call or a whole batch failed (the message names the batch and, if known, the line)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status of a refused call


class BatchRequestError(BatchError, RequestError):
    """A call to a batch API failed for good (after its retries, or at once): a RequestError too."""

    def __init__(self, message: str, status: int | None = None,
                 reason: FailureReason = FailureReason.HTTP) -> None:
        RequestError.__init__(self, message, status=status, reason=reason)


class BatchRefusedError(BatchRequestError, FatalHTTPError):
    """The batch API refused a call with a status retrying cannot fix (a 4xx other than 408/409/429)."""
