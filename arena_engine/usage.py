"""Per-endpoint usage of a run: records, tokens, latency and what this process sent."""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class EndpointUsage:
    """What one endpoint's work cost, read from the records the results use, and what this process sent.

    ``records``, the tokens and ``latencies`` are those of every answer or verdict the results use,
    whether this process sent it or an earlier one did (``reused``): so a resumed run, ``report`` and an
    uninterrupted run of the same work show the same totals. A verdict that two battles share (their
    judge prompts were identical) is counted once (``shared`` counts the other uses). ``requests``,
    ``attempts``, ``failures`` and the ``sent_*`` tokens are what this process itself sent.
    """

    name: str
    requests: int = 0
    reused: int = 0
    failures: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies: array = field(default_factory=lambda: array("d"))
    records: int = 0
    shared: int = 0
    sent_prompt_tokens: int = 0
    sent_completion_tokens: int = 0
    truncated: int = 0  # records whose answer was cut off by the completion budget (finish_reason "length")

    def use(self, rec: Mapping[str, Any]) -> None:
        """Count a record the results use (sent now or reused)."""
        self.records += 1
        if rec.get("finish_reason") == "length":
            self.truncated += 1
        self.prompt_tokens += int(rec.get("prompt_tokens") or 0)
        self.completion_tokens += int(rec.get("completion_tokens") or 0)
        latency = rec.get("latency")
        if isinstance(latency, int | float) and not isinstance(latency, bool):
            self.latencies.append(float(latency))

    def add_sent(self, other: EndpointUsage) -> None:
        """Add another process's sending counters (a distributed run's workers)."""
        self.requests += other.requests
        self.attempts += other.attempts
        self.failures += other.failures
        self.sent_prompt_tokens += other.sent_prompt_tokens
        self.sent_completion_tokens += other.sent_completion_tokens

    def percentiles(self) -> dict[str, float]:
        if not self.latencies:
            return {}
        lat = np.frombuffer(self.latencies, dtype=np.float64)
        p50, p90, p99 = np.percentile(lat, [50, 90, 99])
        return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(lat.max())}
