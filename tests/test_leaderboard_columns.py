"""The leaderboards cut every scope from columns made once (battles.ValidColumns); each scope's arrays,
and so its ratings, must be exactly those of converting the scope's own games (battles.to_arrays)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from arena_engine.battles import Game, ValidColumns, to_arrays
from arena_engine.leaderboard import Scope

MODELS = ["base", "a", "b", "c"]


def _games(seed: int) -> list[Game]:
    rng = random.Random(seed)
    games = []
    for d, subs in (("d1", ("s1", "s2")), ("d2", ("s1",))):
        for s in subs:
            for q in range(40):
                for cand in ("a", "b", "c"):
                    if rng.random() < 0.2:
                        continue  # a candidate that did not play this query
                    for is_a in (True, False):
                        outcome = None if rng.random() < 0.15 else rng.choice([-2, -1, 0, 1, 2])
                        games.append(Game(d, s, str(q), cand, "base", is_a, outcome, None if outcome is not None
                                          else "unparseable verdict: x"))
    rng.shuffle(games)  # clusters first seen in an order no scope sorts by
    return games


@pytest.mark.parametrize("seed", range(5))
def test_every_scope_gets_the_arrays_its_own_games_give(seed: int) -> None:
    games = _games(seed)
    cols = ValidColumns.of(games, MODELS)
    scopes = [Scope("overall"), Scope("dataset", "d1"), Scope("dataset", "d2"), Scope("subset", "d1", "s1"),
              Scope("subset", "d1", "s2"), Scope("subset", "d2", "s1")]
    for scope in scopes:
        scoped = [g for g in games if scope.contains(g)]
        present = {g.candidate for g in scoped if g.outcome is not None} | {"base"}
        names = [m for m in MODELS if m in present]
        rows = cols.mask(None if scope.kind == "overall" else scope.dataset,
                         scope.subset if scope.kind == "subset" else None)
        assert cols.present(rows) | {"base"} == present
        want, got = to_arrays(scoped, names), cols.scope_arrays(rows, names)
        assert got.models == want.models
        for field in ("model_a", "model_b", "outcome", "query"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=f"{scope}: {field}")
            assert getattr(got, field).dtype == getattr(want, field).dtype
