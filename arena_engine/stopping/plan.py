"""``run --dry-run`` for an adaptive run: the worst case and an expected number of judged queries.

The worst case is today's run: every candidate judged on every query. What is expected depends on how
far each candidate is from the baseline, which nothing sent yet can say; so the plan gives, for true win
rates from 10% to 90%, the queries after which the rule would stop a candidate, found by running the
run's own schedule (blocks, min_queries, confidence, bound) on verdicts drawn from a fixed verdict model
(seeded: the same figures every time), and the expected total if the candidates' true win rates were
spread evenly over that range. The verdict model: per game independently a tie with probability 0.15,
else a win with probability (p - 0.075) / 0.85, a third of decisive verdicts strong; real judges whose
two orders agree more often than independent draws stop somewhat later (benchmarks/bench_stopping.py
measures the simulator's judge).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..stop_rules import StopConfig
from .schedule import StopSchedule

if TYPE_CHECKING:
    from ..config import RunConfig

WINRATES = (0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9)
TIE = 0.15
STRONG_SHARE = 1.0 / 3.0
REPEATS = 2
PLAN_GRID = 200  # a coarser grid than the run's (bounds up to 0.005 wider): the plan errs on the late side


@dataclass(frozen=True)
class StopPlan:
    queries: int
    candidates: int
    by_winrate: tuple[tuple[float, int], ...]  # (true win rate, queries judged before the rule stops it)

    @property
    def expected_queries(self) -> float:
        """Judged queries per candidate, averaged over the win rates of the table."""
        return sum(n for _, n in self.by_winrate) / len(self.by_winrate)

    @property
    def worst_queries(self) -> int:
        return self.queries


def _game(rng: random.Random, p: float) -> int:
    u = rng.random()
    if u < TIE:
        return 0
    sign = 1 if rng.random() < (p - TIE / 2) / (1 - TIE) else -1
    return sign * (2 if rng.random() < STRONG_SHARE else 1)


def judged_queries(stop: StopConfig, queries: int, p: float, *, strong_weight: int, games: int,
                   seed: int = 0) -> int:
    """Queries a candidate at true win rate ``p`` is judged on before the rule stops it (mean of REPEATS)."""
    total = 0
    for r in range(REPEATS):
        rng = random.Random(f"stop plan\0{seed}\0{p}\0{r}")
        sched = StopSchedule(stop, ["c"], queries, bound=float(games * strong_weight), points=PLAN_GRID)
        k = 0
        while not sched.finished(k):
            for i in sched.block_range(k):
                s = w = 0.0
                for _ in range(games):
                    o = _game(rng, p)
                    weight = strong_weight if abs(o) == 2 else 1
                    w += weight
                    s += weight if o > 0 else 0.5 * weight if o == 0 else 0.0
                sched.record(i, "c", s, w)
                sched.query_done(i)
            k += 1
        total += sched.summary().candidate("c").judged
    return math.ceil(total / REPEATS)


def stop_plan(stop: StopConfig, queries: int, candidates: int, *, strong_weight: int, games: int) -> StopPlan:
    rows = tuple((p, judged_queries(stop, queries, p, strong_weight=strong_weight, games=games)) for p in WINRATES)
    return StopPlan(queries, candidates, rows)


def plan_lines(cfg: RunConfig, queries: int) -> list[str]:
    """The dry run's lines for an adaptive run (none without ``[arena.stop]``)."""
    from .hook import games_per_query

    stop = cfg.stop
    if not stop.active:
        return []
    judges = 1 if cfg.panel.cascade else len(cfg.panel_judges)  # a cascade's later judges: fewer still
    if cfg.mode == "all_pairs":
        pairs = len(cfg.models) * (len(cfg.models) - 1) // 2
        burn_in = min(queries, (math.ceil(stop.min_queries / stop.block) + 1) * stop.block)
        return [f"adaptive judging, all pairs: stop = {stop.rule}; judge requests: worst case "
                f"{2 * judges * pairs * queries} (every pair on every query), at least {2 * judges * pairs * burn_in} "
                f"(the burn-in: every pair on {burn_in} queries); after it only the undecided adjacent pairs of the "
                f"ranking ({len(cfg.models) - 1} at most) are judged, until the ranking is decided"]
    k = len(cfg.candidates)
    plan = stop_plan(stop, queries, k, strong_weight=cfg.rating.strong_weight, games=games_per_query(cfg))
    per_query = 2 * judges
    expected = round(plan.expected_queries * k)
    target = f"margin {stop.margin:g}" if stop.rule == "decided" else f"half-width {stop.halfwidth:g}"
    return [
        f"adaptive judging: stop = {stop.rule} ({target}, confidence {stop.confidence:g}, at least "
        f"{stop.min_queries} queries, blocks of {stop.block}); the rows above are the worst case",
        f"  judge requests: worst case {per_query * k * queries} (every candidate on every query), expected "
        f"about {per_query * expected} if the candidates' true win rates were spread evenly over "
        f"{100 * WINRATES[0]:.0f}%..{100 * WINRATES[-1]:.0f}%",
        f"  candidate answers: worst case {k * queries}, expected about {expected}",
        "  queries a candidate is judged on before it stops, by its true win rate: "
        + ", ".join(f"{100 * p:g}%: {n}" for p, n in plan.by_winrate),
    ]
