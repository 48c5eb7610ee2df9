"""The rows of what a judge decided: a game (one judge call, one order) and a battle (its two orders).

These are value types with no behaviour beyond naming their reasons; ``battles`` combines and counts
them, ``game_columns`` holds many of them as arrays. Both import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .errors import FailureReason, failure_reason


class ExclusionReason(StrEnum):
    """Why a game is excluded from the rating: the kind its ``Game.reason`` starts with (the values are
    those strings, as the reports and ``report.json``'s ``excluded_reasons`` have always shown them)."""

    UNPARSEABLE_VERDICT = "unparseable verdict"  # "unparseable verdict: <the VerdictError's message>"
    JUDGE_REQUEST_FAILED = "judge request failed"  # "judge request failed: <the request's error>"
    NO_ANSWER = "no answer"  # "no answer: <the model whose answer is missing>"
    NOT_JUDGED_YET = "not judged yet"  # an offline report of an unfinished run
    NO_IMPORTED_VERDICT = "no verdict in the imported judgment"  # Arena-Hard judgments: a null score
    NO_IMPORTED_PREFERENCE = "no preference in the imported annotation"  # AlpacaEval: a null preference
    UNKNOWN = "unknown"  # no reason given, or one of none of these kinds


@dataclass(frozen=True, slots=True)
class Game:
    dataset: str
    subset: str
    query_id: str
    candidate: str
    opponent: str
    candidate_is_a: bool
    outcome: int | None  # from the candidate's side: 2 strong win .. -2 strong loss; None = excluded
    reason: str | None = None  # why the game is excluded (unparseable verdict, request failed, ...)
    judgment_key: str | None = None  # hex content key of the judgment record
    judge: str | None = None  # the judge's name when a run has several judges (None: the one judge)

    @property
    def excluded_because(self) -> ExclusionReason | None:
        """Why the game is excluded, typed (None for a rated game); ``reason`` has the details."""
        if self.outcome is not None:
            return None
        return _EXCLUSIONS.get(reason_kind(self.reason), ExclusionReason.UNKNOWN)

    @property
    def request_failure(self) -> FailureReason | None:
        """For a game excluded because its judge request failed, that failure's typed reason."""
        if self.excluded_because is not ExclusionReason.JUDGE_REQUEST_FAILED or self.reason is None:
            return None
        return failure_reason(self.reason.split(":", 1)[1].strip() if ":" in self.reason else "")


@dataclass(frozen=True, slots=True)
class Battle:
    dataset: str
    subset: str
    query_id: str
    candidate: str
    opponent: str
    first: int | None  # candidate as A
    second: int | None  # candidate as B
    score: float | None
    consistent: bool | None
    keys: tuple[str | None, str | None]
    judge: str | None = None  # as Game.judge


def natural_key(qid: str) -> tuple[int, int | str]:
    return (0, int(qid)) if qid.isdigit() else (1, qid)


_EXCLUSIONS = {r.value: r for r in ExclusionReason}


def reason_kind(reason: str | None) -> str:
    """Group reasons by their kind ("unparseable verdict: no label" -> "unparseable verdict")."""
    if not reason:
        return "unknown"
    return reason.split(":", 1)[0].strip()
