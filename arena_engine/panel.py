"""Judge panels: several judges on one run, and how their verdicts become the games that are rated.

Pure bookkeeping, no I/O: the pipeline asks :func:`escalate` after each judge of a cascade whether the
battle goes on to the next judge, and :func:`rated_games` turns every judge's games into the games the
leaderboards rate. Nothing here depends on how the requests are sent (one by one, or in a batch) or on
which queries are judged: it sees only the games that came back.

- ``combine = "mean"``: every judge's games are rated together. Each judge judges every battle in both
  orders, so pooling the games gives each judge the same weight: the win rate is the mean of the
  per-judge win rates (Arena-Hard-Auto's ensemble), and the rating's intervals still treat the query as
  the unit (one cluster holds every judge's games of that query).
- ``combine = "majority"``: per game (one battle in one order) the label most judges gave; without a
  strict majority the median label (for an even count, the middle label nearer a tie).
- ``combine = "each"``: one leaderboard per judge, none combined (the pipeline rates each judge alone).
- ``cascade = [cheap, ..., strong]``: a battle goes on to the next judge only when the previous one was
  inconsistent across the two orders, called a tie, gave no usable verdict, or (with probability
  ``calibration``, drawn from the battle's key and the seed: the same battle always draws the same) for
  calibration. A battle's rated games are those of the last judge that saw it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .config_fields import key
from .judge import consistent, sample_score

if TYPE_CHECKING:  # battles loads numpy; the config (which holds a PanelConfig) must not
    from .battles import Game

Combine = Literal["mean", "majority", "each"]
COMBINE_MODES: tuple[str, ...] = ("mean", "majority", "each")


@dataclass(frozen=True)
class PanelConfig:
    """How several judges' verdicts are used (``[panel]``; irrelevant with one judge)."""

    combine: Combine = key("mean", kind=str, check="choice", choices=COMBINE_MODES,
                           doc="how the judges' games are rated: together, by majority, each alone")
    # judge names, cheapest first; empty: every judge judges every battle
    cascade: tuple[str, ...] = key((), kind=list, custom=True, dump="non_empty", doc="judges, cheapest first")
    # probability that a battle the previous judge settled goes on anyway
    calibration: float = key(0.0, kind=float, check="finite", bounds=(0.0, 1.0, True, True),
                             bounds_text="between 0 and 1", doc="share of settled battles sent on anyway")
    # JSONL of {query_id, model_a, model_b, winner} (judge_quality)
    human_labels: Path | None = key(None, kind=str, custom=True, dump="not_none", doc="a JSONL of human labels")


BattleKey = tuple[str, str, str, str, str]  # dataset, subset, query id, candidate, opponent


def battle_key(g: Game) -> BattleKey:
    return (g.dataset, g.subset, g.query_id, g.candidate, g.opponent)


def calibration_draw(seed: int, judge: str, key: BattleKey) -> float:
    """A uniform in [0, 1) fixed by the seed, the judge and the battle: a rerun draws the same."""
    text = "\0".join((str(seed), judge, *key)).encode("utf-8")
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def settled(first: int | None, second: int | None) -> bool:
    """Whether a judge's two games of a battle settle it: both usable, consistent, and not a tie."""
    if first is None or second is None or not consistent(first, second):
        return False
    return sample_score(first, second) != 0.5


def escalate(first: int | None, second: int | None, *, draw: float, calibration: float) -> bool:
    """Whether a cascade sends the battle to the next judge, after this judge's two games."""
    return not settled(first, second) or draw < calibration


def _majority(outcomes: Sequence[int]) -> int:
    counts: dict[int, int] = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    best = max(counts.values())
    top = [o for o, n in counts.items() if n == best]
    if len(top) == 1 and best * 2 > len(outcomes):
        return top[0]
    ordered = sorted(outcomes)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    lo, hi = ordered[mid - 1], ordered[mid]
    return lo if abs(lo) <= abs(hi) else hi


def majority_games(games: Iterable[Game], judges: Sequence[str]) -> list[Game]:
    """One game per battle and order: the judges' majority label (judge None: a panel's verdict)."""
    slots: dict[tuple[BattleKey, bool], list[Game]] = {}
    for g in games:
        slots.setdefault((battle_key(g), g.candidate_is_a), []).append(g)
    out = []
    for group in slots.values():
        usable = [g.outcome for g in group if g.outcome is not None]
        first = group[0]
        if not usable:
            out.append(replace(first, judge=None))
            continue
        out.append(replace(first, outcome=_majority(usable), reason=None, judgment_key=None, judge=None))
    return out


def cascade_games(games: Iterable[Game], cascade: Sequence[str]) -> list[Game]:
    """Each battle's games from the last judge of the cascade that judged it."""
    rank = {name: i for i, name in enumerate(cascade)}
    best: dict[BattleKey, int] = {}
    kept = list(games)
    for g in kept:
        r = rank.get(g.judge or "", -1)
        k = battle_key(g)
        if r > best.get(k, -1):
            best[k] = r
    return [g for g in kept if rank.get(g.judge or "", -1) == best.get(battle_key(g), -1)]


def rated_games(games: Sequence[Game], panel: PanelConfig, judges: Sequence[str]) -> list[Game]:
    """The games the combined leaderboards rate (``each`` has none combined: the caller rates per judge)."""
    if len(judges) <= 1:
        from .game_columns import GameColumns

        return games if isinstance(games, GameColumns) else list(games)  # type: ignore[return-value]
    if panel.cascade:
        return cascade_games(games, panel.cascade)
    if panel.combine == "majority":
        return majority_games(games, judges)
    return list(games)


def judge_games(games: Iterable[Game], judge: str) -> list[Game]:
    """One judge's games (its leaderboards under ``combine = "each"``, and its quality figures)."""
    return [g for g in games if g.judge == judge]


def battles_seen(games: Iterable[Game], judges: Sequence[str]) -> dict[str, int]:
    """How many battles each judge saw (a battle counts once per judge, whatever its games say)."""
    seen: dict[str, set[BattleKey]] = {j: set() for j in judges}
    for g in games:
        if g.judge in seen:
            seen[g.judge].add(battle_key(g))
    return {j: len(s) for j, s in seen.items()}
