"""The import path of releases up to 0.4 for the run and its results' types.

The run lives in :mod:`arena_engine.run` and the results' types in :mod:`arena_engine.results`;
``from arena_engine import Arena, ArenaResults, run_arena`` is the public way in. This module only
re-exports them, so that code written against ``arena_engine.pipeline`` keeps working.
"""

from .from_store import JudgeSlot
from .identity import GENERATIONS, JUDGMENTS
from .results import ArenaResults, MetricSums, PanelResults
from .roles import JUDGE, is_judge_role, judge_role
from .run import Arena, loop_options, run_arena
from .usage import EndpointUsage

__all__ = ["GENERATIONS", "JUDGE", "JUDGMENTS", "Arena", "ArenaResults", "EndpointUsage", "JudgeSlot",
           "MetricSums", "PanelResults", "is_judge_role", "judge_role", "loop_options", "run_arena"]
