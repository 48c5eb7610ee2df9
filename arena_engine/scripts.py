"""The sync entry for scripts, with the reports: ``arena_engine.run_arena`` (the package's face).

It sits above both the pipeline and the reports, so the pipeline never imports the reports (which read
its results)."""

from __future__ import annotations

from .config import RunConfig
from .results import ArenaResults
from .run import run_arena as _run


def run_arena(config: RunConfig, *, offline: bool = False, reports: bool = False) -> ArenaResults:
    """Run an arena from synchronous code; with ``reports=True`` also write its reports (``write_reports``).

    Inside a running event loop (a notebook, an async service) this is an :class:`ArenaError`: use
    ``await Arena(...).run()`` there."""
    results = _run(config, offline=offline)
    if reports:
        from .report import write_reports

        write_reports(results)
    return results
