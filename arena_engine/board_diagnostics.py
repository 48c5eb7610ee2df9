"""What a scope's judge diagnostics say, and when they leave its ranking unsupported.

:class:`BoardDiagnostics` holds one scope's figures (counted by :func:`arena_engine.reliability.diagnose_scopes`);
a scope's ranking is *unsupported* by the verdicts (:attr:`BoardDiagnostics.unsupported_reasons`) when
- no game of the scope was rated, or more than :data:`MAX_EXCLUDED_SHARE` of its games were excluded;
- fewer than :data:`MIN_POSITION_CONSISTENCY` of its battles agree across the two orders **and** the
  disagreements are one-sided: at least :data:`MIN_POSITION_LEAN` of them favour the same position,
  beyond chance (two-sided binomial test against an even split, p < :data:`POSITION_LEAN_P`). The
  verdicts then follow where an answer stands, not what it says. An honest judge comparing close
  answers also disagrees with itself often (the simulator's judge agrees in 45-59% of battles between
  models 0.8-1.2 logits apart) but splits its disagreements between the positions: a note, not a flag;
- or a model's pooled win rate is significantly off 50% one way while its battles won and lost in both
  orders say the other or nothing (``contradictions``, filled in by the leaderboard once it is rated).
docs/rating.md explains both views of the verdicts and the thresholds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

ScopeKey = tuple[str | None, str | None]  # (dataset, subset): (None, None) = OVERALL, (d, None) = dataset d

#: Below this share of battles whose two orders agree on win/tie/loss, and with the disagreements
#: leaning to one position (below), a board's ranking is unsupported.
MIN_POSITION_CONSISTENCY = 0.5
#: The share of disagreeing battles that must favour the same position for a position-driven judge.
MIN_POSITION_LEAN = 0.75
#: ... and the lean must be beyond chance: two-sided binomial p-value against an even split below this.
POSITION_LEAN_P = 0.01
#: Above this share of excluded games (no usable verdict), a board's ranking is unsupported.
MAX_EXCLUDED_SHARE = 0.20
#: Above this share of excluded games, the terminal warns about the scope (the ranking still stands).
WARN_EXCLUDED_SHARE = 0.05


@dataclass(frozen=True)
class ModelDiagnostics:
    """One model's battles in a scope, both orders rated, from the model's side."""

    model: str
    battles: int  # battles of the model whose two games were both rated
    won_both: int  # the model won in both orders
    lost_both: int  # the model lost in both orders

    @property
    def won_both_share(self) -> float | None:
        return self.won_both / self.battles if self.battles else None

    @property
    def lost_both_share(self) -> float | None:
        return self.lost_both / self.battles if self.battles else None


@dataclass(frozen=True)
class BoardDiagnostics:
    """How far a scope's verdicts support its ranking (the module docstring gives the thresholds)."""

    games: int  # games of the scope: rated and excluded
    rated: int  # games with a verdict, the ones the ranking is made of
    excluded_by_reason: tuple[tuple[str, int], ...]  # (reason kind, excluded games), most frequent first
    battles: int  # battles whose two games were both rated
    agree: int  # of those, battles whose two orders agree on win/tie/loss
    position_bias: float | None  # A's wins minus B's wins over decisive rated games (0 = unbiased)
    models: tuple[ModelDiagnostics, ...] = ()
    lean_a: int = 0  # disagreeing battles whose candidate did better as A than as B
    lean_b: int = 0  # ... and better as B than as A (lean_a + lean_b = battles - agree)
    contradictions: tuple[str, ...] = ()  # models whose pooled rating contradicts their battle scores

    @property
    def excluded(self) -> int:
        return self.games - self.rated

    @property
    def excluded_share(self) -> float:
        return self.excluded / self.games if self.games else 0.0

    @property
    def position_consistency(self) -> float | None:
        return self.agree / self.battles if self.battles else None

    @property
    def disagree_share(self) -> float | None:
        return (self.battles - self.agree) / self.battles if self.battles else None

    def model(self, name: str) -> ModelDiagnostics | None:
        for m in self.models:
            if m.model == name:
                return m
        return None

    @property
    def lean_share(self) -> float | None:
        """The share of disagreeing battles that favour the more favoured position (0.5 .. 1)."""
        n = self.lean_a + self.lean_b
        return max(self.lean_a, self.lean_b) / n if n else None

    @property
    def lean_position(self) -> str:
        return "A" if self.lean_a >= self.lean_b else "B"

    @cached_property
    def lean_p(self) -> float | None:
        """Two-sided binomial p-value of the lean against an even split of the disagreements."""
        n = self.lean_a + self.lean_b
        return binomial_two_sided(max(self.lean_a, self.lean_b), n) if n else None

    @property
    def low_consistency(self) -> bool:
        pc = self.position_consistency
        return pc is not None and pc < MIN_POSITION_CONSISTENCY

    @property
    def position_driven(self) -> bool:
        """Low consistency whose disagreements lean to one position beyond chance."""
        share, p = self.lean_share, self.lean_p
        return (self.low_consistency and share is not None and p is not None and share >= MIN_POSITION_LEAN
                and p < POSITION_LEAN_P)

    @property
    def no_rated_game(self) -> bool:
        return self.rated == 0

    @property
    def warn_excluded(self) -> bool:
        return self.excluded_share > WARN_EXCLUDED_SHARE

    @property
    def unsupported_reasons(self) -> tuple[str, ...]:
        """Why the ranking is not supported by the judge's verdicts (empty when it is)."""
        out = []
        if self.no_rated_game:
            out.append(f"no game was rated ({self.excluded} of {self.games} excluded)" if self.games
                       else "no game was played")
        else:
            if self.excluded_share > MAX_EXCLUDED_SHARE:
                out.append(f"{percent(self.excluded_share)} of games excluded (more than {percent(MAX_EXCLUDED_SHARE)})")
            if self.position_driven:
                out.append(f"position consistency {percent(self.position_consistency or 0.0)} (below "
                           f"{percent(MIN_POSITION_CONSISTENCY)}): {self.battles - self.agree} of {self.battles} battles "
                           f"disagree across the two orders and {percent(self.lean_share or 0.0)} of those favour "
                           f"position {self.lean_position}")
            out += [f"{m}: the pooled win rate contradicts the battle scores" for m in self.contradictions]
        return tuple(out)

    @property
    def notes(self) -> tuple[str, ...]:
        """What a reader should know that does not make the ranking unsupported."""
        if self.low_consistency and not self.position_driven and not self.no_rated_game:
            return (f"position consistency {percent(self.position_consistency or 0.0)} is below "
                    f"{percent(MIN_POSITION_CONSISTENCY)}, but the disagreements are not one-sided ({self.lean_a} "
                    f"favour A, {self.lean_b} favour B; a position-driven judge puts at least "
                    f"{percent(MIN_POSITION_LEAN)} on one side, beyond chance): close answers or a noisy judge; "
                    "read the confidence intervals",)
        return ()

    @property
    def supported(self) -> bool:
        return not self.unsupported_reasons


def percent(x: float) -> str:
    """0.123 -> "12.3%"."""
    return f"{100 * x:.1f}%"


def binomial_two_sided(k: int, n: int) -> float:
    """P(|X - n/2| >= |k - n/2|) for X ~ Binomial(n, 1/2): exact up to 20,000 trials, normal beyond."""
    k = max(k, n - k)
    if n > 20_000:
        z = (k - 0.5 - n / 2) / math.sqrt(n / 4)
        return min(1.0, math.erfc(z / math.sqrt(2)))
    log_half_n = -n * math.log(2)
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n)
               for i in range(k, n + 1))
    return min(1.0, 2 * tail if 2 * k != n else 1.0)


EMPTY_DIAGNOSTICS = BoardDiagnostics(0, 0, (), 0, 0, None)
