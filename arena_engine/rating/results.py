"""The values a rating run returns: one `ModelRating` per model, gathered in a `Ratings`."""

from __future__ import annotations

import math
from dataclasses import dataclass

ELO_SCALE = 400.0
ELO_BASE = 1000.0


@dataclass(frozen=True)
class ModelRating:
    """One model's rating on the Elo scale (baseline = 1000) and its win rate against the baseline."""

    name: str
    rating: float
    rating_lower: float
    rating_upper: float
    winrate: float
    winrate_lower: float
    winrate_upper: float
    n_battles: int
    flags: tuple[str, ...] = ()  # about the point estimate: only_wins, only_losses, no_battles, ...
    warnings: tuple[str, ...] = ()  # about the interval: few_queries, zero_width


@dataclass(frozen=True)
class Ratings:
    """Ratings of every model of one scope, in the order of `models`."""

    models: tuple[str, ...]
    baseline: str
    method: str
    rounds: int
    ci: float
    seed: int
    per_model: tuple[ModelRating, ...]
    # "score" (Wilson on the cluster-robust effective games), "bootstrap" (percentiles of `rounds`
    # resamples), "sandwich" (cluster-robust Wald), or "spread" (legacy online Elo: not an interval)
    interval: str = "score"
    length_controlled: bool = False  # ratings at equal answer lengths (rate_battles(lengths=...))

    def __getitem__(self, name: str) -> ModelRating:
        for rating in self.per_model:
            if rating.name == name:
                return rating
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self.per_model)

    def sorted(self) -> list[ModelRating]:
        """Models by win rate against the baseline, best first (ties broken by name); unrated (NaN) last."""
        return sorted(self.per_model, key=lambda r: (math.isnan(r.winrate), -r.winrate, r.name))


def winrate_from_rating(rating: float, baseline_rating: float = ELO_BASE) -> float:
    """Probability that a model rated `rating` beats one rated `baseline_rating` (Elo scale)."""
    return 1.0 / (1.0 + 10.0 ** ((baseline_rating - rating) / ELO_SCALE))


def rating_from_winrate(winrate: float) -> float:
    """Elo-scale rating whose expected win rate against the baseline (1000) is `winrate`."""
    if winrate <= 0.0:
        return -math.inf
    if winrate >= 1.0:
        return math.inf
    return ELO_BASE + ELO_SCALE * math.log10(winrate / (1.0 - winrate))
