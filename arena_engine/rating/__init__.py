"""Ratings from pairwise battles: cluster bootstrap, Bradley-Terry, Elo (docs/spec.md, section 3).

    from arena_engine.rating import rate_battles
    ratings = rate_battles(model_a, model_b, outcome, query, models=names, baseline="base")
"""

from arena_engine.rating.api import evalscope_overall, rate_battles
from arena_engine.rating.results import ModelRating, Ratings, rating_from_winrate, winrate_from_rating

__all__ = [
    "ModelRating",
    "Ratings",
    "evalscope_overall",
    "rate_battles",
    "rating_from_winrate",
    "winrate_from_rating",
]
