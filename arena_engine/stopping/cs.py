"""An anytime-valid confidence sequence for a win rate with the query as the unit (betting, hedged).

The leaderboard's win rate against the baseline is a ratio: per query ``i`` the candidate's valid games
have a weight ``W_i`` (a strong verdict counts ``strong_weight`` times) and a weighted score ``S_i``
(win 1, tie 1/2, loss 0), and the estimate is ``sum S / sum W``; what it estimates on infinitely many
queries is ``theta = E[S] / E[W]`` (docs/rating.md). So ``theta = m`` exactly when the bounded
increments ``D_i(m) = (S_i - m W_i) / B`` have mean 0, where ``B`` bounds ``W_i`` (``strong_weight``
times the most games a query can have). With ``Y_i(m) = m + D_i(m)`` in [0, 1] this is a test of the
mean of bounded variables, and the hedged betting test of Waudby-Smith & Ramdas (2023, "Estimating
means of bounded random variables by betting", JRSS-B, Theorem 3 with the predictable plug-in bets of
their eq. (26)) applies for every candidate ``m`` of a grid:

    K+_t(m) = prod (1 + l+_i D_i(m)),   K-_t(m) = prod (1 - l-_i D_i(m)),   K_t = (K+_t + K-_t) / 2,

with bets ``l_i = sqrt(2 log(2/alpha) / (s2_{i-1} h))`` from the running variance ``s2_{i-1}`` of the
``Y(m)`` seen before query ``i`` (so the bet is predictable), truncated to ``c / m`` and ``c / (1 - m)``
with ``c = 1/2``. A bet of that size is the one WSR tune for a sample of ``h`` queries; instead of their
``h = i log(1 + i)`` (which at 2,000 queries is 1.3 times wider than it need be) the capital is the
*average* of the processes tuned for ``h = 32, 128, 512, ...`` up to the number of queries the run has:
each is a nonnegative martingale with mean 1 under ``theta = m``, so their average is one too, and at
every sample size one of them bets about right (narrower at the run's size than the single process:
``tests/test_stopping.py``; benchmarks/README.md, *Figures behind design choices*). By Ville's inequality
``P(exists t: K_t(theta) >= 1/alpha) <= alpha``. The sequence keeps every grid point
that has *never* been rejected (a subset of the running intersection, valid at all times at once), and
its bounds are the grid points just outside the kept hull, so a true value between two grid points is
never cut off. Peeking after every query, and stopping on what is seen, keeps the coverage.

Pure numpy and synchronous; :func:`reference_bounds` is the slow, obviously-correct version the tests
compare it with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

GRID = 1000  # grid step 1/GRID: the bounds are conservative by at most this much
HEDGE = 0.5  # c: the largest share of the capital a bet may risk (WSR's recommended 1/2)
FIRST_HORIZON = 32  # the bets are tuned for 32, 128, 512, ... queries


def _grid(points: int) -> np.ndarray:
    return np.arange(1, points, dtype=np.float64) / points


def horizons(queries: int) -> tuple[int, ...]:
    """The sample sizes the averaged bets are tuned for: 32, 128, ... up to the first at least ``queries``."""
    out = [FIRST_HORIZON]
    while out[-1] < queries:
        out.append(out[-1] * 4)
    return tuple(out)


class RatioCS:
    """The running confidence sequence of one candidate's win rate; :meth:`add` one query at a time.

    ``bound``: the largest weight a query can have; ``queries``: how many the run has (it sets the
    horizons of the bets, nothing else)."""

    __slots__ = (
        "_horizons",
        "_log_factor",
        "_log_minus",
        "_log_plus",
        "_points",
        "_rejected",
        "_sum_dev2",
        "_sum_y",
        "_threshold",
        "alpha",
        "bound",
        "m",
        "n",
        "sum_s",
        "sum_w",
    )

    def __init__(self, *, confidence: float, bound: float, queries: int, points: int = GRID) -> None:
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound}")
        self.alpha = 1.0 - confidence
        self.bound = float(bound)
        self._points = points
        self.m = _grid(points)
        self._horizons = np.asarray(horizons(queries), dtype=np.float64)[:, None]
        self.n = 0  # queries added
        self.sum_s = 0.0
        self.sum_w = 0.0
        g, h = len(self.m), len(self._horizons)
        self._sum_y = np.zeros(g)
        self._sum_dev2 = np.zeros(g)
        self._log_plus = np.zeros((h, g))
        self._log_minus = np.zeros((h, g))
        self._rejected = np.zeros(g, dtype=bool)
        # log of the mean of 2 h processes (each hedged pair halved, the h pairs averaged) >= log(1/alpha)
        self._threshold = math.log(1.0 / self.alpha) + math.log(2.0 * h)
        self._log_factor = 2.0 * math.log(2.0 / self.alpha)

    def add(self, s: float, w: float) -> None:
        """One query's weighted score ``s`` and weight ``w`` (0 <= s <= w <= bound)."""
        if not (0.0 <= s <= w + 1e-9 and w <= self.bound + 1e-9):
            raise ValueError(f"need 0 <= s <= w <= {self.bound}, got s={s}, w={w}")
        m = self.m
        i = self.n + 1
        mean_prev = (0.5 + self._sum_y) / i  # running mean and variance of Y(m) before query i
        var_prev = (0.25 + self._sum_dev2) / i
        lam = np.sqrt(self._log_factor / (var_prev[None, :] * self._horizons))
        d = (s - m * w) / self.bound
        self._log_plus += np.log1p(np.minimum(lam, HEDGE / m) * d)
        self._log_minus += np.log1p(-np.minimum(lam, HEDGE / (1.0 - m)) * d)
        y = m + d
        self._sum_y += y
        self._sum_dev2 += (y - mean_prev) ** 2
        self.n = i
        self.sum_s += s
        self.sum_w += w
        total = np.logaddexp.reduce(np.logaddexp(self._log_plus, self._log_minus), axis=0)
        self._rejected |= total >= self._threshold

    def bounds(self) -> tuple[float, float]:
        """(lower, upper) of the sequence now: every value it has never rejected lies inside."""
        kept = np.flatnonzero(~self._rejected)
        if len(kept) == 0:  # every value rejected (probability <= alpha): the point estimate alone
            p = self.estimate
            return p, p
        step = 1.0 / self._points
        return float(kept[0] * step), float((kept[-1] + 2) * step)

    @property
    def estimate(self) -> float:
        return self.sum_s / self.sum_w if self.sum_w > 0 else 0.5

    @property
    def halfwidth(self) -> float:
        lo, hi = self.bounds()
        return (hi - lo) / 2.0


def reference_bounds(scores: Sequence[tuple[float, float]], *, confidence: float, bound: float, queries: int,
                     points: int = GRID) -> tuple[float, float]:
    """The same sequence's bounds after ``scores`` ((s, w) per query), one grid value and one bet at a
    time in plain Python (slow: for tests)."""
    alpha = 1.0 - confidence
    tuned = horizons(queries)
    kept = []
    for k in range(1, points):
        m = k / points
        log_k = [[0.0, 0.0] for _ in tuned]
        sum_y = sum_dev2 = 0.0
        ever = False
        for i, (s, w) in enumerate(scores, start=1):
            mean_prev = (0.5 + sum_y) / i
            var_prev = (0.25 + sum_dev2) / i
            d = (s - m * w) / bound
            for j, h in enumerate(tuned):
                lam = math.sqrt(2.0 * math.log(2.0 / alpha) / (var_prev * h))
                log_k[j][0] += math.log(1.0 + min(lam, HEDGE / m) * d)
                log_k[j][1] += math.log(1.0 - min(lam, HEDGE / (1.0 - m)) * d)
            y = m + d
            sum_y += y
            sum_dev2 += (y - mean_prev) ** 2
            capital = sum(math.exp(a) + math.exp(b) for a, b in log_k) / (2 * len(tuned))
            if capital >= 1.0 / alpha:
                ever = True
        if not ever:
            kept.append(k)
    if not kept:
        total_w = sum(w for _, w in scores)
        p = sum(s for s, _ in scores) / total_w if total_w else 0.5
        return p, p
    return (kept[0] - 1) / points, (kept[-1] + 1) / points
