"""arena-engine: fast, crash-safe LLM arena evaluations.

The library in one place (each name is imported on first use, so ``import arena_engine`` stays cheap)::

    import arena_engine as ae

    results = ae.run_arena(ae.load_config("arena.toml"))     # scripts: the sync entry
    ae.write_reports(results)                               # report/leaderboard.txt, report.json, report.html

    async def evaluate(path):                               # async services
        async with ae.Arena(ae.load_config(path)) as arena:
            results = await arena.run()
        ae.write_reports(results)                           # after the block: the run folder is unlocked
        return results
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

#: public name -> the module that defines it
_EXPORTS = {
    "Arena": "arena_engine.run",
    "ArenaResults": "arena_engine.results",
    "PanelResults": "arena_engine.results",
    "Board": "arena_engine.leaderboard",
    "Entry": "arena_engine.leaderboard",
    "Scope": "arena_engine.leaderboard",
    "EndpointUsage": "arena_engine.usage",
    "Game": "arena_engine.battles",
    "Battle": "arena_engine.battles",
    "ExclusionReason": "arena_engine.battles",
    "StopSummary": "arena_engine.stopping.schedule",
    "run_arena": "arena_engine.scripts",
    "load_config": "arena_engine.config",
    "config_from_dict": "arena_engine.config",
    "RunConfig": "arena_engine.config",
    "rate_battles": "arena_engine.rating",
    "Ratings": "arena_engine.rating",
    "ModelRating": "arena_engine.rating",
    "write_reports": "arena_engine.report",
    "ArenaError": "arena_engine.errors",
    "ConfigError": "arena_engine.errors",
    "DatasetError": "arena_engine.errors",
    "ImportMismatchError": "arena_engine.errors",
    "CheckpointError": "arena_engine.errors",
    "RequestError": "arena_engine.errors",
    "FatalHTTPError": "arena_engine.errors",
    "VerdictError": "arena_engine.errors",
    "UsageError": "arena_engine.errors",
    "ArgumentError": "arena_engine.errors",
    "FailureReason": "arena_engine.errors",
    "failure_reason": "arena_engine.errors",
    "BatchError": "arena_engine.batch.errors",
}

__all__ = [
    "Arena",
    "ArenaError",
    "ArenaResults",
    "ArgumentError",
    "BatchError",
    "Battle",
    "Board",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "EndpointUsage",
    "Entry",
    "ExclusionReason",
    "FailureReason",
    "FatalHTTPError",
    "Game",
    "ImportMismatchError",
    "ModelRating",
    "PanelResults",
    "Ratings",
    "RequestError",
    "RunConfig",
    "Scope",
    "StopSummary",
    "UsageError",
    "VerdictError",
    "__version__",
    "config_from_dict",
    "failure_reason",
    "load_config",
    "rate_battles",
    "run_arena",
    "write_reports",
]

if TYPE_CHECKING:
    from .batch.errors import BatchError
    from .battles import Battle, ExclusionReason, Game
    from .config import RunConfig, config_from_dict, load_config
    from .errors import (
        ArenaError,
        ArgumentError,
        CheckpointError,
        ConfigError,
        DatasetError,
        FailureReason,
        FatalHTTPError,
        ImportMismatchError,
        RequestError,
        UsageError,
        VerdictError,
        failure_reason,
    )
    from .leaderboard import Board, Entry, Scope
    from .rating import ModelRating, Ratings, rate_battles
    from .report import write_reports
    from .results import ArenaResults, PanelResults
    from .run import Arena
    from .scripts import run_arena
    from .stopping.schedule import StopSummary
    from .usage import EndpointUsage


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'arena_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
