"""When a candidate has been judged enough: the stopping rules and their config (pure, no numpy).

- ``"never"``: judge every query (today's behaviour, the default).
- ``"decided"``: stop once the confidence sequence for the candidate's win rate against the baseline
  excludes 50% (it is better or worse), or lies within ``margin`` of 50% (it is as good, to the margin).
- ``"halfwidth"``: stop once the confidence sequence's half-width is at most ``halfwidth``.

A rule is looked at only once ``min_queries`` queries of the candidate have been judged, and only at the
end of a block of ``block`` queries (see :mod:`arena_engine.stopping.schedule`).

Beside config_values.py, which imports it, and not in stopping/, which stands above the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .config_fields import DERIVED, key

Rule = Literal["never", "decided", "halfwidth"]
RULES: tuple[str, ...] = ("never", "decided", "halfwidth")

DEFAULT_MARGIN = 0.02
DEFAULT_HALFWIDTH = 0.03
DEFAULT_MIN_QUERIES = 50
DEFAULT_CONFIDENCE = 0.95
DEFAULT_BLOCK = 50


@dataclass(frozen=True)
class StopConfig:
    """``[arena.stop]``: when a candidate stops being judged (``rule = "never"``: it never does)."""

    # the table form's rule: "halfwidth" if the table sets a halfwidth, else "decided"
    rule: Rule = key("never", kind=str, check="choice", choices=RULES, config_default=DERIVED,
                     doc="which question ends a candidate's judging")
    margin: float = key(DEFAULT_MARGIN, kind=float, check="finite", bounds=(0.0, 0.5, True, False),
                        bounds_text="in [0, 0.5)", only_with=("rule", "decided"),
                        doc="within 50% +- margin is as good as the baseline")
    halfwidth: float = key(DEFAULT_HALFWIDTH, kind=float, check="finite", bounds=(0.0, 0.5, False, False),
                           bounds_text="between 0 and 0.5", only_with=("rule", "halfwidth"),
                           doc="the precision target")
    min_queries: int = key(DEFAULT_MIN_QUERIES, kind=int, check="positive", doc="judged queries before a stop")
    confidence: float = key(DEFAULT_CONFIDENCE, kind=float, check="finite", bounds=(0.0, 1.0, False, False),
                            bounds_text="between 0 and 1", doc="the confidence sequence's level")
    block: int = key(DEFAULT_BLOCK, kind=int, check="positive", doc="queries per block of the seeded order")

    @property
    def active(self) -> bool:
        return self.rule != "never"


# why a candidate stopped (the reports show these words)
ABOVE = "better than the baseline"
BELOW = "worse than the baseline"
WITHIN = "within the margin of the baseline"
PRECISE = "half-width reached"
EXHAUSTED = "no queries left"


def verdict(cfg: StopConfig, lower: float, upper: float, judged: int) -> str | None:
    """Why the rule says stop for an interval [lower, upper] after ``judged`` queries (None: go on)."""
    if cfg.rule == "never" or judged < cfg.min_queries:
        return None
    if cfg.rule == "halfwidth":
        return PRECISE if (upper - lower) / 2.0 <= cfg.halfwidth else None
    if lower > 0.5:
        return ABOVE
    if upper < 0.5:
        return BELOW
    if lower >= 0.5 - cfg.margin and upper <= 0.5 + cfg.margin:
        return WITHIN
    return None
