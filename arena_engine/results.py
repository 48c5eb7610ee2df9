"""What a run's results are (:class:`ArenaResults`) and how they are put together from its games.

Both the sending run (``run.Arena``) and :func:`arena_engine.from_store.results_from_store`
(``report``, ``rate``, a finished rerun, the Ray driver's last pass) end here, so the boards, the
panel's figures and the reference metrics are made in one place. The reports read these types; this
module imports nothing of the run's lifecycle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .battles import Battle, Game, combine
from .config import RunConfig
from .game_columns import GameColumns
from .panel import battles_seen, judge_games, rated_games
from .roles import JUDGE, is_judge_role
from .runlog import RunHistory
from .usage import EndpointUsage

if TYPE_CHECKING:
    from .judge_quality import JudgeQuality
    from .leaderboard import Board
    from .stopping.schedule import StopSummary

#: (model, dataset, subset, answer, reference) of every answer to a query with a reference.
ReferenceItem = tuple[str, str, str, str, str]


@dataclass
class PanelResults:
    """A panel's figures: how many battles each judge saw, each judge's own boards, the judges' quality."""

    judges: tuple[str, ...]
    combine: str  # "mean", "majority", "each" or "cascade"
    battles_seen: dict[str, int]
    battles: int  # battles of the run (a cascade's first judge sees all of them)
    boards: dict[str, list[Board]]  # per judge: its leaderboards as if it were the only judge
    quality: JudgeQuality | None


@dataclass
class MetricSums:
    """Sums of per-sample reference metrics for one (model, dataset, subset)."""

    n: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        return {k: v / self.n for k, v in self.sums.items()} if self.n else {}


@dataclass(repr=False)
class ArenaResults:
    config: RunConfig
    run_dir: Path
    games: Sequence[Game]  # a list, or (results of a snapshot) GameColumns: a sequence of Game
    battles: Sequence[Battle]  # a list, or BattleColumns
    boards: list[Board]
    usage: dict[str, EndpointUsage]
    failures: int
    missing: int  # offline runs: requests that would have been needed
    reference_metrics: dict[tuple[str, str, str], dict[str, float]]
    reference_counts: dict[tuple[str, str, str], int]
    queries: dict[tuple[str, str], int]
    elapsed: float
    failure_lines: list[str] = field(default_factory=list)  # per endpoint and kind of failure, with counts
    history: RunHistory = field(default_factory=RunHistory)
    panel: PanelResults | None = None  # several judges, or human labels to compare the judge with
    all_games: Sequence[Game] | None = None  # with a panel: every judge's games (``games`` holds the rated ones)
    stopping: StopSummary | None = None  # [arena.stop]: which candidates stopped early, and their intervals
    #: digest of the inputs these results were computed from, when a results snapshot vouches for them
    #: (arena_engine.snapshot.inputs_digest): the report reuses the battle browser it made from the same inputs
    inputs: str | None = None

    def __repr__(self) -> str:
        # short: asyncio formats the task that returned the results into a message at exit (signal
        # handler lookup in asyncio.Runner.run), and the dataclass repr of 100,000 games was ~60 MB
        return (f"<ArenaResults {str(self.run_dir)!r}: {len(self.games)} games, {len(self.battles)} battles, "
                f"{len(self.boards)} boards>")

    @property
    def overall(self) -> Board:
        return self.boards[0]

    @property
    def judge_usage(self) -> EndpointUsage:
        """The judge's usage (``usage`` keys it under the internal ``JUDGE`` role)."""
        return self.usage[JUDGE]

    def usage_by_name(self) -> dict[str, EndpointUsage]:
        """Usage keyed by model name, the judge's as ``"judge:<judge name>"`` (never clashes with a model)."""
        return {f"judge:{u.name}" if is_judge_role(k) else k: u for k, u in self.usage.items()}


@dataclass
class Tally:
    """What a run's walk over its queries gathered, before the boards are rated."""

    games: Sequence[Game]  # a list, or a snapshot's GameColumns
    usage: dict[str, EndpointUsage]
    failures: int
    missing: int
    reference_items: Iterable[ReferenceItem]  # read once, by assemble (it may be a generator)
    queries: dict[tuple[str, str], int]
    started: float  # time.monotonic() when the run began
    failure_lines: list[str] = field(default_factory=list)
    history: RunHistory = field(default_factory=RunHistory)
    stopping: StopSummary | None = None
    #: the reference metrics' sums when already known (a snapshot, arena_engine.snapshot); None: made from
    #: ``reference_items`` by :func:`assemble`
    metric_sums: dict[tuple[str, str, str], MetricSums] | None = None
    #: a walk's: the fingerprint of what it read, taken before it (arena_engine.snapshot); None: nothing to save
    walked: dict[str, Any] | None = None
    inputs: str | None = None  # as ArenaResults.inputs


METRIC_CHUNK = 4096  # answers per (model, dataset, subset) held at once while the metrics are scored


def reference_metrics(items: Iterable[ReferenceItem]) -> dict[tuple[str, str, str], MetricSums]:
    """ROUGE/BLEU of every answer to a query with a reference, batched per (model, dataset, subset).

    ``items`` is consumed as it comes: at most ``METRIC_CHUNK`` answers per group are held before they
    are scored (a run's answers are read from the checkpoints one by one, not all kept at once)."""
    from .metrics import METRIC_NAMES, sample_metrics_batch

    pending: dict[tuple[str, str, str], tuple[list[str], list[str]]] = {}
    scored: dict[tuple[str, str, str], list[np.ndarray]] = {}
    for model, dataset, subset, answer, reference in items:
        group = (model, dataset, subset)
        preds, refs = pending.setdefault(group, ([], []))
        scored.setdefault(group, [])
        preds.append(answer)
        refs.append(reference)
        if len(preds) >= METRIC_CHUNK:
            scored[group].append(sample_metrics_batch(preds, refs))
            preds.clear()
            refs.clear()
    sums: dict[tuple[str, str, str], MetricSums] = {}
    for group, parts in scored.items():
        preds, refs = pending[group]
        if preds:
            parts.append(sample_metrics_batch(preds, refs))
        scores = np.concatenate(parts)
        # fsum: exactly rounded, so the order the answers arrived in (a run's) does not show in the last digit
        totals = [math.fsum(col) for col in scores.T.tolist()]
        sums[group] = MetricSums(len(scores), dict(zip(METRIC_NAMES, totals, strict=True)))
    return sums


def game_order(g: Game) -> tuple[str, str, str, str, str, bool]:
    """The order of a run's games in its results (a stable sort: games of one key keep their walk order)."""
    return (g.dataset, g.subset, g.candidate, g.opponent, g.query_id, not g.candidate_is_a)


def assemble(cfg: RunConfig, run_dir: Path, tally: Tally) -> ArenaResults:
    """The results of a walk: its games sorted, the panel combined, the boards rated, the metrics scored."""
    from .leaderboard import leaderboards

    judges = [j.name for j in cfg.panel_judges]
    tagged = len(judges) > 1  # games say which judge made them
    metric_sums = tally.metric_sums if tally.metric_sums is not None else reference_metrics(tally.reference_items)
    games: Sequence[Game]
    if isinstance(tally.games, GameColumns):  # a snapshot's: sorted by numpy, no game objects made
        games = tally.games.sorted_by_game_order()
        if tagged or cfg.panel.human_labels:
            games = list(games)  # panels' figures walk game objects
    else:
        games = sorted(tally.games, key=game_order)
    names = [m.name for m in cfg.models]
    panel = panel_results(cfg, list(games), names) if tagged or cfg.panel.human_labels else None
    all_games = games
    if panel is not None and panel.combine == "each":
        boards = [b for j in panel.judges for b in panel.boards[j]]
    else:
        games = rated_games(games, cfg.panel, judges)
        boards = leaderboards(games, names, cfg.baseline, cfg.rating, cfg.seed)
    return ArenaResults(
        config=cfg, run_dir=run_dir, games=games, battles=combine(games), boards=boards,
        panel=panel, all_games=all_games if tagged else None, stopping=tally.stopping,
        usage=tally.usage, failures=tally.failures, missing=tally.missing,
        reference_metrics={k: s.means() for k, s in metric_sums.items()},
        reference_counts={k: s.n for k, s in metric_sums.items()},
        queries=tally.queries, elapsed=time.monotonic() - tally.started, failure_lines=tally.failure_lines,
        history=tally.history, inputs=tally.inputs,
    )


def panel_results(cfg: RunConfig, games: list[Game], names: list[str]) -> PanelResults:
    """Per judge: the battles it saw, its own leaderboards; and the judges' quality figures."""
    from .judge_quality import assess
    from .leaderboard import leaderboards

    judges = tuple(j.name for j in cfg.panel_judges)
    tagged = len(judges) > 1
    boards: dict[str, list[Board]] = {}
    if tagged:
        for j in judges:
            own = judge_games(games, j)
            boards[j] = [_replace(b, scope=_replace(b.scope, judge=j))
                         for b in leaderboards(own, names, cfg.baseline, cfg.rating, cfg.seed)]
    mode = "cascade" if tagged and cfg.panel.cascade else cfg.panel.combine
    seen = battles_seen(games, judges) if tagged else {}
    n_battles = len({(g.dataset, g.subset, g.query_id, g.candidate, g.opponent) for g in games})
    quality = assess(games, cfg, judges if tagged else (), seed=cfg.seed)
    return PanelResults(judges, mode, seen, n_battles, boards, quality)
