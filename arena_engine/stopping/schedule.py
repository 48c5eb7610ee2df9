"""Which candidates are still judged on which queries: blocks of the seeded order, decided from prefixes.

The queries are walked in the seeded order (:mod:`.order`) in blocks of ``block`` queries. Block ``k`` is
sent for the candidates still *active* after the decisions taken at the end of block ``k - 2``: so the
next block can be sent while the previous one is still being judged (the endpoints never wait for a
block to drain), and every decision is a function of a completed prefix of the order, never of which
request came back first. A decision taken at the end of block ``j`` therefore takes effect from block
``j + 2``: the candidate is still judged on block ``j + 1`` (already on its way when the decision could be
taken), and those games are used (the sequence is valid at any time, so more data never hurts it). The
number of requests a run sends is thereby fixed by the records and the seed: a resumed run, whose early
blocks come from the checkpoints, takes the same decisions and sends the same requests.

Pure bookkeeping, no I/O, no clock: the pipeline feeds each query's per-candidate score and weight
(:func:`query_score`) and asks :meth:`StopSchedule.active`; the benchmark drives the same class with
verdicts drawn in-process.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..stop_rules import EXHAUSTED, StopConfig, verdict
from .cs import GRID, RatioCS

LAG = 2  # block k is sent with the decisions of blocks up to k - LAG


@dataclass(frozen=True)
class CandidateStop:
    """One candidate's adaptive judging, as the reports show it."""

    name: str
    judged: int  # queries of the order it was judged on
    available: int  # queries the run has
    reason: str | None  # why the rule stopped it (None: judged to the end without a decision)
    decided_at: int | None  # queries judged when the rule said stop
    lower: float  # the confidence sequence's interval after every judged query
    upper: float
    estimate: float  # sum S / sum W over the judged queries

    @property
    def stopped_early(self) -> bool:
        return self.judged < self.available


@dataclass(frozen=True)
class StopSummary:
    rule: str
    confidence: float
    margin: float
    halfwidth: float
    min_queries: int
    block: int
    queries: int
    candidates: tuple[CandidateStop, ...]  # all-pairs mode: one per pair, named "a vs b"
    ranking: tuple[str, ...] = ()  # all-pairs mode: the models best first
    ranking_decided: bool = False  # all-pairs mode: every adjacent pair of the ranking is decided

    def candidate(self, name: str) -> CandidateStop:
        for c in self.candidates:
            if c.name == name:
                return c
        raise KeyError(name)


def score_of(outcome: int, strong_weight: int) -> tuple[float, float]:
    """(weighted score, weight) of one valid game from the candidate's side (as the rating counts it)."""
    w = float(strong_weight if abs(outcome) == 2 else 1)
    return (w if outcome > 0 else 0.5 * w if outcome == 0 else 0.0), w


def query_score(outcomes: Iterable[int | None], strong_weight: int) -> tuple[float, float]:
    """One query's (S, W) for a candidate from the outcomes of its rated games (None: excluded)."""
    s = w = 0.0
    for o in outcomes:
        if o is not None:
            ds, dw = score_of(o, strong_weight)
            s += ds
            w += dw
    return s, w


class StopSchedule:
    """The blocks of one adaptive run and the decisions taken on them."""

    def __init__(self, cfg: StopConfig, candidates: Sequence[str], n_queries: int, *, bound: float,
                 points: int = GRID, confidence: float | None = None) -> None:
        if cfg.block < 1:
            raise ValueError(f"block must be at least 1, got {cfg.block}")
        self.cfg = cfg
        self.candidates = tuple(candidates)
        self.n = n_queries
        self.blocks = math.ceil(n_queries / cfg.block) if n_queries else 0
        self._cs = {c: RatioCS(confidence=cfg.confidence if confidence is None else confidence, bound=bound,
                                queries=n_queries, points=points) for c in self.candidates}
        self._decided_block: dict[str, int] = {}
        self._reason: dict[str, str] = {}
        self._decided_at: dict[str, int] = {}
        self._pending: dict[int, dict[str, dict[int, tuple[float, float]]]] = {}
        self._done: dict[int, int] = {}
        self._plan: dict[int, tuple[str, ...]] = {}  # block -> who is judged on it (from block - LAG on)
        self.folded = 0  # blocks 0 .. folded - 1 are complete and in the sequences

    def block_range(self, k: int) -> range:
        """Order indices of block ``k``."""
        b = self.cfg.block
        return range(k * b, min((k + 1) * b, self.n))

    def block_of(self, index: int) -> int:
        return index // self.cfg.block

    def ready(self, k: int) -> bool:
        """Whether block ``k``'s candidates are known (the blocks up to ``k - LAG`` are complete)."""
        return self.folded >= k - LAG + 1

    def active(self, k: int) -> tuple[str, ...]:
        """The candidates judged on block ``k`` (needs :meth:`ready`)."""
        if not self.ready(k):
            raise RuntimeError(f"block {k} is not ready: blocks up to {k - LAG} are not complete")
        return self.candidates if k < LAG else self._plan.get(k, ())

    def _choose(self) -> tuple[str, ...]:
        """Who is judged on the block LAG after the one just folded: every candidate not yet decided."""
        return tuple(c for c in self.candidates if c not in self._decided_block)

    def record(self, index: int, candidate: str, s: float, w: float) -> None:
        """A judged query's score and weight for ``candidate`` (``index`` in the order)."""
        k = self.block_of(index)
        self._pending.setdefault(k, {}).setdefault(candidate, {})[index] = (s, w)

    def query_done(self, index: int) -> int:
        """Query ``index`` has every game it will get; returns how many blocks are now complete."""
        k = self.block_of(index)
        self._done[k] = self._done.get(k, 0) + 1
        while self.folded < self.blocks and self._done.get(self.folded, 0) >= len(self.block_range(self.folded)):
            self._fold(self.folded)
            self.folded += 1
        return self.folded

    def _fold(self, k: int) -> None:
        """Block ``k`` is complete: its queries enter each active candidate's sequence in order, and the
        rule is looked at on the prefix that ends with it."""
        scores = self._pending.pop(k, {})
        self._done.pop(k, None)
        for c in self.active(k):
            cs = self._cs[c]
            mine = scores.get(c, {})
            for index in self.block_range(k):
                s, w = mine.get(index, (0.0, 0.0))  # a query without a rated game adds nothing
                cs.add(s, w)
            if c not in self._decided_block:
                lo, hi = cs.bounds()
                why = verdict(self.cfg, lo, hi, cs.n)
                if why is not None:
                    self._decided_block[c] = k
                    self._reason[c] = why
                    self._decided_at[c] = cs.n
        self._plan[k + LAG] = self._choose()

    def finished(self, k: int) -> bool:
        """Whether nothing is left to send from block ``k`` on (no block left, or no active candidate)."""
        return k >= self.blocks or (self.ready(k) and not self.active(k))

    def summary(self) -> StopSummary:
        cfg = self.cfg
        out = []
        for c in self.candidates:
            cs = self._cs[c]
            lo, hi = cs.bounds()
            reason = self._reason.get(c)
            if reason is None and cs.n >= self.n and cfg.active:
                reason = EXHAUSTED
            out.append(CandidateStop(c, cs.n, self.n, reason, self._decided_at.get(c), lo, hi, cs.estimate))
        return StopSummary(cfg.rule, cfg.confidence, cfg.margin, cfg.halfwidth, cfg.min_queries, cfg.block,
                           self.n, tuple(out))
