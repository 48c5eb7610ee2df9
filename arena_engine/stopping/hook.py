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
from .pairs import PairSchedule, pair_name
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
        bound = float(games_per_query(cfg) * cfg.rating.strong_weight)
        self.all_pairs = cfg.mode == "all_pairs"
        self.schedule: StopSchedule
        if self.all_pairs:  # the units are the pairs "a vs b"
            self.schedule = PairSchedule(cfg.stop, [m.name for m in cfg.models], len(queries), bound=bound)
        else:  # the units are the candidates (each against the baseline)
            self.schedule = StopSchedule(cfg.stop, [m.name for m in cfg.candidates], len(queries), bound=bound)
        self.candidates = self.schedule.candidates
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

    def unit(self, candidate: str, opponent: str) -> str:
        """The schedule's name for a battle: its candidate, or (all pairs) the pair."""
        return pair_name(candidate, opponent) if self.all_pairs else candidate

    def battles(self, q: Query, pairs: Sequence[tuple[str, str]]) -> tuple[set[str], list[tuple[str, str]]]:
        """(the models whose answers ``q`` needs, its battles) among ``pairs`` for the units active on it:
        a baseline-mode run's active candidates and, while one is left, the baseline."""
        active = set(self.active_of(q))
        kept = [(c, o) for c, o in pairs if self.unit(c, o) in active]
        return {m for pair in kept for m in pair}, kept

    def models_for(self, units: Iterable[str]) -> set[str]:
        """The models whose answers the battles of ``units`` need."""
        if isinstance(self.schedule, PairSchedule):
            return {m for u in units for m in self.schedule.pairs[u]}
        chosen = set(units)
        return chosen | {self.cfg.baseline} if chosen else set()

    def done(self, q: Query, games: Iterable[Game]) -> bool:
        """Query ``q`` is finished with these games (all of it, every judge); True when a block completed."""
        key = (q.dataset, q.subset, q.id)
        active = self._active.pop(key, ())
        rated = rated_games(list(games), self.cfg.panel, self._judges)
        index = self.index[key]
        for c in active:
            cand, opp = self.schedule.pairs[c] if isinstance(self.schedule, PairSchedule) else (c, self.cfg.baseline)
            outcomes = [g.outcome for g in rated if g.candidate == cand and g.opponent == opp]
            s, w = query_score(outcomes, self.cfg.rating.strong_weight)
            self.schedule.record(index, c, s, w)
        before = self.schedule.folded
        return self.schedule.query_done(index) > before

    def summary(self) -> StopSummary:
        return self.schedule.summary()
