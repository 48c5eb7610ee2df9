"""Progress on the console: live bars on a terminal, a log line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol, TextIO

from .progress import ProgressEvent, StageProgress

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class Watchable(Protocol):
    """What the progress display reads: an Arena, or a distributed run's RayProgress."""

    def events(self) -> AsyncIterator[ProgressEvent]: ...


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60:02d}:{seconds % 60:02d}"


def stage_line(s: StageProgress, now: float | None = None) -> str:
    now = now or time.monotonic()
    elapsed = max(now - s.started, 1e-9)
    toks = (s.prompt_tokens + s.completion_tokens) / elapsed
    return (f"{s.name}: {s.done}/{s.total} ({s.reused} reused, {s.failed} failed) "
            f"{s.rate(now):.1f} req/s {toks:.0f} tok/s ETA {_eta(s.eta(now))}")


async def log_progress(arena: Watchable, out: TextIO, every: float = 5.0) -> None:
    """Without a terminal: one line per stage every ``every`` seconds, and a final one."""
    last = 0.0
    async for ev in arena.events():
        now = time.monotonic()
        if ev.finished or now - last >= every:
            last = now
            for s in ev.stages:
                print(stage_line(s, now), file=out, flush=True)
            if ev.retries or ev.errors:
                print(f"retries: {ev.retries}, errors: {ev.errors}", file=out, flush=True)


async def live_progress(arena: Watchable, out: TextIO) -> None:
    """On a terminal: one live bar per stage (generation per model, judging) with rates and ETA."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(file=out)
    columns = (
        TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.1f} req/s {task.fields[toks]:>8.0f} tok/s"),
        TextColumn("{task.fields[extra]}"), TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False, refresh_per_second=8) as bars:
        tasks: dict[str, TaskID] = {}
        async for ev in arena.events():
            _update(bars, tasks, ev)


def _update(bars: Progress, tasks: dict[str, TaskID], ev: ProgressEvent) -> None:
    now = time.monotonic()
    for s in ev.stages:
        elapsed = max(now - s.started, 1e-9)
        rate = s.rate(now)
        toks = (s.prompt_tokens + s.completion_tokens) / elapsed
        extra = f"{s.reused} reused, {s.failed} failed, {ev.retries} retries"
        if s.name not in tasks:
            tasks[s.name] = bars.add_task(s.name, total=s.total or None, rate=rate, toks=toks, extra=extra)
        bars.update(tasks[s.name], completed=s.done, total=s.total or None, rate=rate, toks=toks, extra=extra)


async def show_progress(arena: Watchable, *, quiet: bool, out: TextIO | None = None) -> None:
    out = out or sys.stderr
    if quiet:
        return
    if out.isatty():
        await live_progress(arena, out)
    else:
        await log_progress(arena, out)
