"""The server-side requests-per-minute limit: an exact sliding-window log.

At most `capacity` = floor(rpm_limit * window_s / 60) requests (at least 1) are admitted in any window
of `window` seconds, with `window` stretched so that capacity / window = rpm_limit / 60 exactly. A
rejected request learns exactly how long until a slot frees up. `window_s` defaults to the minute;
shorter windows make the limit observable in fast tests.
"""

from __future__ import annotations

import math
from collections import deque


class SlidingWindowLimit:
    """Admit at most rpm_limit requests per 60 s over every sliding window. Sync, clock passed in."""

    def __init__(self, rpm_limit: float, window_s: float = 60.0) -> None:
        if rpm_limit <= 0 or window_s <= 0:
            raise ValueError("rpm_limit and window_s must be > 0")
        self.capacity = max(1, math.floor(rpm_limit * window_s / 60.0 + 1e-9))
        self.window = 60.0 * self.capacity / rpm_limit
        self._admitted: deque[float] = deque()

    def try_admit(self, now: float) -> float:
        """Admit at `now` (returns 0.0) or return the seconds until a request would be admitted."""
        admitted = self._admitted
        horizon = now - self.window
        while admitted and admitted[0] <= horizon:
            admitted.popleft()
        if len(admitted) < self.capacity:
            admitted.append(now)
            return 0.0
        return admitted[0] + self.window - now

    def __repr__(self) -> str:
        return f"SlidingWindowLimit(capacity={self.capacity}, window={self.window:g}s, in_window={len(self._admitted)})"
