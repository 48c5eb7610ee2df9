"""Errors of the batch layer."""

from __future__ import annotations

from ..errors import ArenaError


class BatchError(ArenaError):
    """A batch API call or a whole batch failed (the message names the batch and, if known, the line)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status of a refused call
