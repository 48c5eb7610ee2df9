"""Live counters of a run, readable by progress bars, log lines, tests and embedding services."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class StageProgress:
    """One stage: the generation of one model, or the judging."""

    name: str
    total: int = 0
    done: int = 0  # finished: sent and answered, reused from the checkpoint, or failed for good
    reused: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    def rate(self, now: float | None = None) -> float:
        """Requests finished per second (reused ones excluded)."""
        elapsed = (now or time.monotonic()) - self.started
        return (self.done - self.reused) / elapsed if elapsed > 0 else 0.0

    def eta(self, now: float | None = None) -> float | None:
        rate = self.rate(now)
        left = self.total - self.done
        if left <= 0:
            return 0.0
        return left / rate if rate > 0 else None

    def __repr__(self) -> str:
        return (f"<{self.name}: {self.done}/{self.total} done, {self.reused} reused, {self.failed} failed, "
                f"{self.prompt_tokens}+{self.completion_tokens} tokens>")


@dataclass(frozen=True)
class ProgressEvent:
    """A snapshot of every stage, sent by :meth:`Arena.events`."""

    stages: tuple[StageProgress, ...]
    retries: int
    errors: int
    finished: bool
    elapsed: float
