"""The default interval: Wilson's score interval on the cluster-robust effective sample size.

For a model with win rate p against the baseline (the point estimate) and a cluster-robust standard
error `se` of its logit strength, the delta method gives Var(p) = (p (1 - p) se)^2, so the games
are worth n_eff = p (1 - p) / Var(p) = 1 / (p (1 - p) se^2) independent Bernoulli trials (Kish's
effective sample size: clustering, strong-verdict weights and ties all enter through `se`). The
interval is Wilson's for p with n_eff trials:

    (p + z^2 / 2n  +-  z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n).

Unlike the percentile bootstrap or the normal (Wald) interval it does not collapse when p is near 0
or 1: with no wins at all it still reaches up to about z^2 / n. Where the data give no variance to
estimate (a model that only wins or only loses, is separated or disconnected, or plays in fewer than
two queries) n_eff falls back to the model's weighted games: one independent trial per weighted game;
a model with only losses (wins) then gets Wilson's interval for an observed share of 0 (1).
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
B1 = npt.NDArray[np.bool_]


PRIOR_UNITS = 4.0  # weighted games of evidence the pooled design effect counts for (see shrunk_design)


def shrunk_design(p: F64, q: F64, se: F64, games: F64, minority: F64, usable: B1) -> F64:
    """Design effect D per model (Var(p) = D p q / games): the cluster-robust estimate, shrunk towards
    the scope's pooled estimate (at least 1) with weight PRIOR_UNITS against the model's minority
    count min(wins, losses). With few wins (or losses) the robust estimate sees too few of the
    clustered events to measure their clustering and comes out low; with none it is 0 / 0."""
    var = p * q * se * se
    robust = usable & (var > 0) & np.isfinite(var) & (games > 0)
    d_hat = np.where(robust, var * games, 0.0)
    weight = np.where(robust, minority, 0.0)
    pooled = float(np.sum(weight * d_hat) / np.sum(weight)) if np.sum(weight) > 0 else 1.0
    prior = max(pooled, 1.0)
    return (weight * d_hat + PRIOR_UNITS * prior) / (weight + PRIOR_UNITS)


def wilson_lower(p: F64, q: F64, n: F64, z: float | F64) -> F64:
    """Wilson's lower score bound for a proportion p (q = 1 - p, passed separately for precision near 1)
    observed on `n` (effective) trials. The upper bound is 1 - wilson_lower(q, p, n, z)."""
    z2n = z * z / n
    center = (p + 0.5 * z2n) / (1.0 + z2n)
    half = z / (1.0 + z2n) * np.sqrt(p * q / n + 0.25 * z2n / n)
    # the roots of (1 + z^2/n) x^2 - (2p + z^2/n) x + p^2 = 0 multiply to p^2 / (1 + z^2/n): the lower
    # root from the upper keeps its relative precision when p is tiny (center - half would cancel)
    return p * p / ((1.0 + z2n) * (center + half))


def _logit(x: F64) -> F64:
    x = np.clip(x, 1e-22, 0.5)  # bounds below 1e-22 (n_eff < z^2): a logit of -50, finite
    return np.log(x) - np.log1p(-x)


def score_bounds(
    beta: F64, se: F64, games: F64, minority: F64, usable: B1, z: F64, observed: F64 | None = None
) -> tuple[F64, F64]:
    """Bounds of the logit strengths (natural log, baseline 0) from Wilson's interval on n_eff trials.

    `observed` (NaN where not given) replaces the point's share as Wilson's p: a model with only
    losses has observed share 0, while its point estimate carries a virtual tie."""
    p = 1.0 / (1.0 + np.exp(-beta))
    q = 1.0 / (1.0 + np.exp(beta))
    n = np.maximum(games / shrunk_design(p, q, se, games, minority, usable), 1.0)
    if observed is not None:
        given = np.isfinite(observed)
        p = np.where(given, observed, p)
        q = np.where(given, 1.0 - observed, q)
    lo = wilson_lower(p, q, n, z)
    lo_of_q = wilson_lower(q, p, n, z)
    lower = np.where(lo <= 0.5, _logit(lo), -_logit(1.0 - lo))
    upper = np.where(lo_of_q <= 0.5, -_logit(lo_of_q), _logit(1.0 - lo_of_q))
    return lower, upper


def _t_cdf(t: float, df: int) -> float:
    """Student t CDF for integer df by the finite trigonometric series (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    s = math.sin(theta)
    if df % 2 == 1:
        total, term = 0.0, 1.0
        if df > 1:
            total = 1.0
            for m in range(3, df - 1, 2):
                term *= (m - 1) / m * c2
                total += term
            total *= s * math.cos(theta)
        a = 2.0 / math.pi * (theta + total)
    else:
        total, term = 1.0, 1.0
        for m in range(2, df - 1, 2):
            term *= (m - 1) / m * c2
            total += term
        a = s * total
    return 0.5 * (1.0 + a)


@functools.lru_cache(maxsize=4096)
def t_quantile(prob: float, df: int) -> float:
    """Student t quantile for 0.5 < prob < 1: bisection on the exact CDF (df <= 400), else the normal's
    with Cornish-Fisher terms in 1/df (error far below 1e-6 there)."""
    z = NormalDist().inv_cdf(prob)
    if df > 400:
        v = float(df)
        return z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
    lo, hi = z, max(z, 1.0)
    while _t_cdf(hi, df) < prob:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < prob:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)
