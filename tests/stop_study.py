"""Adaptive stopping against known truth (issue 23), in-process: the simulator's own verdict model, the
engine's own stopping code, no HTTP.

The simulated judge (arena_engine.sim.judging) says, for a candidate of quality ``q_c`` against the
baseline (quality 0) on query ``j``: y = s_j (d_j) + bias + noise N(0,1) + Logistic(0,1), cut into the five
labels at +-m1 and +-(m1 + strong_margin), where d_j = q_c + answer_noise (N - N') is the per-query gap of
the two answers' strengths and s_j ~ U[1 - spread, 1 + spread] the query's scale; the two orders are
independent draws given the query. The truth a run estimates is E[S] / E[W] (docs/rating.md), which is
computed here by quadrature over d, s and the judge noise (exact to ~1e-9), and each candidate's quality
is solved for to hit the target win rate.

Used by tests/test_stopping_study.py (a few seeds) and benchmarks/bench_stopping.py (100 seeds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from arena_engine.sim.config import SimConfig, SimModel
from arena_engine.sim.judging import tie_margin
from arena_engine.stop_rules import StopConfig
from arena_engine.stopping.order import stratified_order
from arena_engine.stopping.schedule import StopSchedule, StopSummary

TARGETS = (0.20, 0.40, 0.48, 0.60, 0.85)
QUERIES = 2000
STRONG = 3

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(48)
_GH_W = _GH_W / _GH_W.sum()
_GL_X, _GL_W = np.polynomial.legendre.leggauss(24)
_GL_W = _GL_W / _GL_W.sum()


def base_config(seed: int = 0) -> SimConfig:
    return SimConfig(models=(SimModel("base", 0.0),), seed=seed)


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _label_probs(y: np.ndarray, cfg: SimConfig) -> list[np.ndarray]:
    """P(A>>B), P(A>B), P(A=B), P(B>A), P(B>>A) for latent means ``y`` (logistic noise only)."""
    m1 = tie_margin(cfg.tie_rate)
    m2 = m1 + cfg.strong_margin
    up = [_sig(y - c) for c in (m2, m1, -m1, -m2)]
    return [up[0], up[1] - up[0], up[2] - up[1], up[3] - up[2], 1.0 - up[3]]


def truth(quality: float, cfg: SimConfig, strong: int = STRONG) -> float:
    """E[S] / E[W] of a candidate of ``quality`` against the baseline (quality 0)."""
    d = quality + math.sqrt(2.0) * cfg.answer_noise * _GH_X  # per-query gap of the strengths
    s = 1.0 + cfg.difficulty_spread * _GL_X  # per-query scale, uniform on [1 - spread, 1 + spread]
    noise = cfg.judge_noise * _GH_X
    mean_s = mean_w = 0.0
    for sign in (1.0, -1.0):  # candidate as A (+ bias on its side) and as B (bias on the baseline's)
        y = sign * (s[:, None, None] * d[None, :, None]) + cfg.position_bias + noise[None, None, :]
        p = _label_probs(y, cfg)
        weight = _GL_W[:, None, None] * _GH_W[None, :, None] * _GH_W[None, None, :]
        strong_win, win, tie, loss, strong_loss = p if sign > 0 else p[::-1]
        mean_s += float(np.sum(weight * (strong * strong_win + win + 0.5 * tie)))
        mean_w += float(np.sum(weight * (strong * (strong_win + strong_loss) + win + tie + loss)))
    return mean_s / mean_w


def quality_for(target: float, cfg: SimConfig) -> float:
    lo, hi = -6.0, 6.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if truth(mid, cfg) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def draw_outcomes(rng: np.random.Generator, cfg: SimConfig, qualities: Sequence[float], n: int) -> np.ndarray:
    """Outcomes (candidate's view, -2..2) of shape (n queries, candidates, 2 orders), as the simulator draws."""
    k = len(qualities)
    m1 = tie_margin(cfg.tie_rate)
    m2 = m1 + cfg.strong_margin
    base = cfg.answer_noise * rng.standard_normal((n, 1))
    strength = np.asarray(qualities)[None, :] + cfg.answer_noise * rng.standard_normal((n, k))
    scale = 1.0 - cfg.difficulty_spread + 2.0 * cfg.difficulty_spread * rng.random((n, 1))
    gap = scale * (strength - base)
    out = np.empty((n, k, 2), dtype=np.int8)
    for order, sign in ((0, 1.0), (1, -1.0)):
        u = np.clip(rng.random((n, k)), 1e-12, 1 - 1e-12)
        y = sign * gap + cfg.position_bias + cfg.judge_noise * rng.standard_normal((n, k)) + np.log(u / (1 - u))
        label = np.where(y > m2, 2, np.where(y > m1, 1, np.where(y >= -m1, 0, np.where(y >= -m2, -1, -2))))
        out[:, :, order] = sign * label  # as B the candidate's view is the label reversed
    return out


@dataclass(frozen=True)
class StudyRun:
    summary: StopSummary
    judge_requests: int
    full_requests: int


def names(k: int) -> list[str]:
    return [f"c{i}" for i in range(k)]


def run_study(seed: int, stop: StopConfig, qualities: Sequence[float], n: int = QUERIES,
              cfg: SimConfig | None = None) -> StudyRun:
    """One seed: draw every verdict, walk the seeded order in blocks with the engine's schedule."""
    cfg = cfg or base_config()
    rng = np.random.default_rng([seed, 23])
    outcomes = draw_outcomes(rng, cfg, qualities, n)
    cands = names(len(qualities))
    keys = [("d", "s0" if i % 3 else "s1", str(i)) for i in range(n)]
    order = stratified_order(keys, seed)
    sched = StopSchedule(stop, cands, n, bound=2.0 * STRONG)
    requests = 0
    k = 0
    while not sched.finished(k):
        # the engine sends block k once blocks <= k - 2 are folded; in-process they fold in order
        active = sched.active(k)
        for index in sched.block_range(k):
            row = outcomes[order[index]]
            for c in active:
                j = cands.index(c)
                s = w = 0.0
                for o in row[j]:
                    ws = STRONG if abs(int(o)) == 2 else 1
                    w += ws
                    s += ws if o > 0 else 0.5 * ws if o == 0 else 0.0
                sched.record(index, c, s, w)
                requests += 2
            sched.query_done(index)
        k += 1
    return StudyRun(sched.summary(), requests, 2 * len(qualities) * n)


PAIR_QUALITIES = (0.0, 0.3, 0.6, 0.9, 1.2, 1.5)  # 6 models, adjacent ones about 57/43 apart


def draw_pair_outcomes(rng: np.random.Generator, cfg: SimConfig, qualities: Sequence[float], n: int) -> np.ndarray:
    """Outcomes (-2..2, from a's side) of shape (n, pairs, 2) for every pair a < b, as the simulator draws:
    per query one strength per model, shared by all its pairs."""
    k = len(qualities)
    m1 = tie_margin(cfg.tie_rate)
    m2 = m1 + cfg.strong_margin
    strength = np.asarray(qualities)[None, :] + cfg.answer_noise * rng.standard_normal((n, k))
    scale = 1.0 - cfg.difficulty_spread + 2.0 * cfg.difficulty_spread * rng.random((n, 1))
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    gap = np.stack([scale[:, 0] * (strength[:, i] - strength[:, j]) for i, j in pairs], axis=1)
    out = np.empty((n, len(pairs), 2), dtype=np.int8)
    for order, sign in ((0, 1.0), (1, -1.0)):
        u = np.clip(rng.random(gap.shape), 1e-12, 1 - 1e-12)
        y = sign * gap + cfg.position_bias + cfg.judge_noise * rng.standard_normal(gap.shape) + np.log(u / (1 - u))
        label = np.where(y > m2, 2, np.where(y > m1, 1, np.where(y >= -m1, 0, np.where(y >= -m2, -1, -2))))
        out[:, :, order] = sign * label
    return out


@dataclass(frozen=True)
class PairRun:
    ranking: tuple[str, ...]
    decided: bool
    judge_requests: int
    full_requests: int


def run_pair_study(seed: int, stop: StopConfig, qualities: Sequence[float] = PAIR_QUALITIES,
                   n: int = QUERIES, cfg: SimConfig | None = None) -> PairRun:
    """One seed of all-pairs mode with the engine's PairSchedule: verdicts drawn in-process."""
    from arena_engine.stopping.pairs import PairSchedule

    cfg = cfg or base_config()
    rng = np.random.default_rng([seed, 2323])
    outcomes = draw_pair_outcomes(rng, cfg, qualities, n)
    models = names(len(qualities))
    sched = PairSchedule(stop, models, n, bound=2.0 * STRONG)
    index = {p: i for i, p in enumerate(sched.pairs)}
    keys = [("d", "s0" if i % 3 else "s1", str(i)) for i in range(n)]
    order = stratified_order(keys, seed)
    requests = 0
    k = 0
    while not sched.finished(k):
        active = sched.active(k)
        for i in sched.block_range(k):
            row = outcomes[order[i]]
            for p in active:
                s = w = 0.0
                for o in row[index[p]]:
                    ws = STRONG if abs(int(o)) == 2 else 1
                    w += ws
                    s += ws if o > 0 else 0.5 * ws if o == 0 else 0.0
                sched.record(i, p, s, w)
                requests += 2
            sched.query_done(i)
        k += 1
    summary = sched.summary()
    return PairRun(summary.ranking, summary.ranking_decided, requests, 2 * len(sched.pairs) * n)
