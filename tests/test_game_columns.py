"""Game columns (arena_engine.game_columns) give exactly what the same games as objects give: the
battles and their order, the scopes' diagnostics, the valid columns, the sort, the reports' counts."""

from __future__ import annotations

import random

import numpy as np
import pytest

from arena_engine.battles import (
    Game,
    ValidColumns,
    combine,
    excluded_games,
    exclusions,
    games_per_subset,
    position_bias,
    position_consistency,
)
from arena_engine.config import RatingConfig
from arena_engine.game_columns import GameColumns
from arena_engine.leaderboard import leaderboards
from arena_engine.reliability import diagnose_scopes
from arena_engine.results import game_order

MODELS = ["base", "a", "b", "c"]


def _games(seed: int, n: int = 600) -> list[Game]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        cand = rng.choice(MODELS[1:])
        opp = "base" if rng.random() < 0.8 else rng.choice([m for m in MODELS if m != cand])
        qid = rng.choice([str(rng.randrange(40)), f"q{rng.randrange(9)}", "07", "7"])
        outcome = rng.choice([2, 1, 0, -1, -2, None]) if rng.random() < 0.95 else None
        reason = None if outcome is not None else rng.choice(["no answer: a", "unparseable verdict: x", None])
        key = None if rng.random() < 0.1 else f"{rng.getrandbits(128):032x}"
        judge = rng.choice([None, None, "j2", ""])
        out.append(Game(rng.choice(["ds", "other"]), rng.choice(["s1", "s2", ""]), qid, cand, opp,
                        rng.random() < 0.5, outcome, reason, key, judge))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_columns_give_what_the_objects_give(seed: int) -> None:
    games = _games(seed)
    cols = GameColumns.of(games)
    assert list(cols) == games and cols == games and games == cols
    assert cols[3] == games[3] and cols[-1] == games[-1] and list(cols[2:9]) == games[2:9]
    assert combine(cols) == combine(games) and list(combine(cols)) == combine(games)
    assert diagnose_scopes(cols) == diagnose_scopes(games)
    s = cols.sorted_by_game_order()
    assert list(s) == sorted(games, key=game_order)
    a, b = ValidColumns.of(cols, MODELS), ValidColumns.of(games, MODELS)
    assert a.models == b.models and a.subsets == b.subsets
    for f in ("subset", "cand", "opp", "cand_is_a", "outcome", "cluster"):
        assert np.array_equal(getattr(a, f), getattr(b, f)) and getattr(a, f).dtype == getattr(b, f).dtype, f
    assert excluded_games(cols) == excluded_games(games) and exclusions(cols) == exclusions(games)
    assert games_per_subset(cols) == games_per_subset(games)
    assert position_bias(cols) == position_bias(games)
    pc_cols, pc = position_consistency(combine(cols)), position_consistency(combine(games))
    assert pc_cols == pc and list(pc_cols) == list(pc)


def test_boards_of_columns_are_the_boards_of_objects() -> None:
    games = [g for g in _games(7, 2000) if g.judge is None]
    cols = GameColumns.of(games)
    assert leaderboards(cols, MODELS, "base", RatingConfig(), 0) == leaderboards(games, MODELS, "base", RatingConfig(), 0)


def test_keys_that_are_not_fixed_hex_stay_strings() -> None:
    games = [Game("d", "s", "1", "a", "base", True, 1, None, "short"), Game("d", "s", "1", "a", "base", False, None)]
    cols = GameColumns.of(games)
    assert cols.judgment_key.dtype == object and list(cols) == games


def test_a_builder_holds_the_games_appended() -> None:
    from dataclasses import replace

    from arena_engine.game_columns import GameBuilder, same_games

    games = _games(11)
    b = GameBuilder()
    b.extend(games[:50])
    b.append(replace(games[50], judgment_key="not a fixed key"))  # from here on the keys are kept as strings
    b.extend(games[51:])
    want = [*games[:50], replace(games[50], judgment_key="not a fixed key"), *games[51:]]
    assert list(b.build()) == want and len(b) == len(want)
    fixed = GameBuilder()
    fixed.extend(games)
    assert fixed.build().judgment_key.dtype != object and list(fixed.build()) == games
    assert same_games(fixed, list(reversed(games))) and same_games(games, GameColumns.of(games).sorted_by_game_order())
    assert not same_games(games, want) and not same_games(games, games[1:])
    assert not same_games([replace(games[0], judge=None)], [replace(games[0], judge="")])
    assert len(GameBuilder().build()) == 0 and same_games(GameBuilder(), [])


@pytest.mark.parametrize("seed", range(4))
def test_sorted_columns_of_one_judge_give_what_the_objects_give(seed: int) -> None:
    from dataclasses import replace

    games = sorted((replace(g, judge=None) for g in _games(seed)), key=game_order)
    cols = GameColumns.of(games).sorted_by_game_order()
    assert cols.sorted and list(cols) == games
    assert combine(cols) == combine(games) and diagnose_scopes(cols) == diagnose_scopes(games)
    assert position_consistency(combine(cols)) == position_consistency(combine(games))
