"""Endpoint roles: the keys under which a run's endpoints (each model by its name, each judge by its role)
keep their clients, limits, progress and usage."""

from __future__ import annotations

JUDGE = "\0judge"  # the judge's key among the endpoint roles (model names cannot hold NUL)


def judge_role(index: int, name: str) -> str:
    """A judge's key among the endpoint roles: ``JUDGE`` for the first judge (the one judge of a run
    without a panel), ``JUDGE + ":<name>"`` for the others."""
    return JUDGE if index == 0 else f"{JUDGE}:{name}"


def is_judge_role(key: str) -> bool:
    return key.startswith(JUDGE)
