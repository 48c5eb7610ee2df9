"""All-pairs mode: judge the pairs where they are most informative, stop once the ranking is decided.

Every pair of models ``(a, b)`` (``a`` before ``b`` in the config, as the pairs of an all-pairs run) has
its own confidence sequence for ``a``'s win rate against ``b``, each at confidence ``1 - alpha / P`` for
``P`` pairs, so that all of them hold at once with probability at least ``1 - alpha`` (Bonferroni).

- Until every pair has ``min_queries`` queries, every pair is judged (the burn-in gives a first ranking).
- After that, the models are ranked by their mean win rate over the other models, and an adjacent pair
  whose own sequence says the lower one is better (its interval excludes 50% the other way) is swapped;
  the next blocks judge only the adjacent pairs of that ranking that are not decided yet (their intervals
  neither exclude 50% nor lie within ``margin`` of it; for ``rule = "halfwidth"``, not that narrow yet).
  Adjacent pairs are where a ranking can be wrong; a pair far apart in the ranking tells little more.
- The run stops when no adjacent pair is left undecided: with win rates that are transitive (as a
  Bradley-Terry judge's are), adjacent pairs that are all decided, in the ranking's direction, decide the
  whole ranking at the confidence asked (pairs within the margin count as ties, in either order).

The same blocks, lag and prefix-only decisions as :mod:`.schedule`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from ..stop_rules import ABOVE, BELOW, StopConfig
from .cs import GRID
from .schedule import StopSchedule, StopSummary

SEPARATOR = " vs "


def pair_name(a: str, b: str) -> str:
    return f"{a}{SEPARATOR}{b}"


class PairSchedule(StopSchedule):
    """Blocks of an all-pairs run; its units are the pairs ``"a vs b"``."""

    def __init__(self, cfg: StopConfig, models: Sequence[str], n_queries: int, *, bound: float,
                 points: int = GRID) -> None:
        self.models = tuple(models)
        self.pairs = {pair_name(a, b): (a, b) for i, a in enumerate(self.models) for b in self.models[i + 1:]}
        if len(self.pairs) != len(self.models) * (len(self.models) - 1) // 2:
            raise ValueError("model names make two pairs look alike (a name holds ' vs ')")
        alpha = (1.0 - cfg.confidence) / max(1, len(self.pairs))
        super().__init__(cfg, list(self.pairs), n_queries, bound=bound, points=points, confidence=1.0 - alpha)

    def _estimate(self, a: str, b: str) -> float:
        """``a``'s estimated win rate against ``b``."""
        key = pair_name(a, b)
        if key in self._cs:
            return self._cs[key].estimate
        return 1.0 - self._cs[pair_name(b, a)].estimate

    def _beats(self, a: str, b: str) -> bool:
        """Whether the pair's own sequence says ``a`` is better than ``b``."""
        key = pair_name(a, b)
        if key in self._cs:
            return self._reason.get(key) == ABOVE
        return self._reason.get(pair_name(b, a)) == BELOW

    def ranking(self) -> list[str]:
        others = len(self.models) - 1
        order = sorted(self.models, key=lambda m: (-sum(self._estimate(m, o) for o in self.models if o != m) / others,
                                                   self.models.index(m)))
        for _ in range(len(order)):  # adjacent pairs whose own sequence contradicts the order change places
            swapped = False
            for i in range(len(order) - 1):
                if self._beats(order[i + 1], order[i]):
                    order[i], order[i + 1] = order[i + 1], order[i]
                    swapped = True
            if not swapped:
                break
        return order

    def _adjacent(self) -> list[str]:
        order = self.ranking()
        out = []
        for u, v in pairwise(order):
            out.append(pair_name(u, v) if pair_name(u, v) in self.pairs else pair_name(v, u))
        return out

    def _choose(self) -> tuple[str, ...]:
        if any(self._cs[p].n < self.cfg.min_queries for p in self.pairs):
            return tuple(self.pairs)  # the burn-in: every pair, for a first ranking
        return tuple(p for p in self._adjacent() if p not in self._decided_block)

    def summary(self) -> StopSummary:
        s = super().summary()
        decided = all(p in self._decided_block for p in self._adjacent())
        return StopSummary(s.rule, s.confidence, s.margin, s.halfwidth, s.min_queries, s.block, s.queries,
                           s.candidates, tuple(self.ranking()), decided)
