"""What the pipeline asks of an adaptive run: the queries in blocks of the seeded order, which
candidates each query is judged for, and what a finished query's games scored.

The pipeline (``Arena``) stays in charge of sending and storing; this module only says what to send.
A sending run and an offline replay (``report``) call it the same way, so both take the same decisions
from the same records.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from ..panel import rated_games
from .order import QueryKey, stratified_order
from .schedule import StopSchedule, StopSummary, query_score

if TYPE_CHECKING:
    from ..battles import Game
    from ..config import RunConfig
    from ..datasets import Query


def games_per_query(cfg: RunConfig) -> int:
    """The most rated games a candidate can have on one query: two orders, times every judge of a
    panel that pools its judges' games (``combine = "mean"``); a cascade or a majority rates two."""
    judges = cfg.panel_judges
    pooled = len(judges) > 1 and not cfg.panel.cascade and cfg.panel.combine == "mean"
    return 2 * (len(judges) if pooled else 1)


class GameLog(list["Game"]):
    """The run's games, also kept per query until the query is finished (:meth:`take`)."""

    def __init__(self) -> None:
        super().__init__()
        self._by_query: dict[QueryKey, list[Game]] = {}

    def append(self, g: Game) -> None:
        super().append(g)
        self._by_query.setdefault((g.dataset, g.subset, g.query_id), []).append(g)

    def take(self, key: QueryKey) -> list[Game]:
        return self._by_query.pop(key, [])


class AdaptiveRun:
    """One adaptive run's order, schedule and per-query candidates."""

    def __init__(self, cfg: RunConfig, queries: Sequence[Query]) -> None:
        self.cfg = cfg
        keys = [(q.dataset, q.subset, q.id) for q in queries]
        order = stratified_order(keys, cfg.seed)
        self.queries = [queries[i] for i in order]  # in the order they are judged
        self.index = {keys[pos]: i for i, pos in enumerate(order)}
        self.candidates = tuple(m.name for m in cfg.candidates)
        self.schedule = StopSchedule(cfg.stop, self.candidates, len(queries),
                                     bound=float(games_per_query(cfg) * cfg.rating.strong_weight))
        self._judges = [j.name for j in cfg.panel_judges]
        self._active: dict[QueryKey, tuple[str, ...]] = {}

    def block(self, k: int) -> Iterator[Query]:
        """Block ``k``'s queries (needs ``schedule.ready(k)``), each noted with the candidates it is judged for."""
        active = self.schedule.active(k)
        for i in self.schedule.block_range(k):
            q = self.queries[i]
            self._active[(q.dataset, q.subset, q.id)] = active
            yield q

    def active_of(self, q: Query) -> tuple[str, ...]:
        return self._active.get((q.dataset, q.subset, q.id), ())

    def dropped(self, k: int) -> tuple[str, ...]:
        """Candidates judged on block ``k - 1`` but not on block ``k``."""
        if k == 0:
            return ()
        now = set(self.schedule.active(k))
        return tuple(c for c in self.schedule.active(k - 1) if c not in now)

    def done(self, q: Query, games: Iterable[Game]) -> bool:
        """Query ``q`` is finished with these games (all of it, every judge); True when a block completed."""
        key = (q.dataset, q.subset, q.id)
        active = self._active.pop(key, ())
        rated = rated_games(list(games), self.cfg.panel, self._judges)
        index = self.index[key]
        base = self.cfg.baseline
        for c in active:
            outcomes = [g.outcome for g in rated if g.candidate == c and g.opponent == base]
            s, w = query_score(outcomes, self.cfg.rating.strong_weight)
            self.schedule.record(index, c, s, w)
        before = self.schedule.folded
        return self.schedule.query_done(index) > before

    def summary(self) -> StopSummary:
        return self.schedule.summary()
