"""Progress on the console: live lines on a terminal, a log block every few seconds otherwise.

Every line fits the terminal's width (80 columns under ``script`` and in many CI logs): the columns
are dropped in order of importance (token rate, retries, reused, request rate, the bar), then the
stage names are abbreviated; done/total and the ETA are always shown. The ETA comes from the rate of
the last :data:`RATE_WINDOW` seconds, so a run that slows down (a rate limit, a slow judge) says so.

``mode`` (``--progress``): ``"rich"`` live lines, ``"plain"`` log blocks, ``"none"`` nothing;
``"auto"`` is rich on a terminal and plain otherwise. A plain block is printed only when a count
changed, so the last one appears once however long the rating takes after the last request.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, TextIO

from .progress import ProgressEvent, StageProgress

MODES = ("auto", "rich", "plain", "none")
RATE_WINDOW = 30.0  # seconds of history behind the shown rate and ETA
ELLIPSIS = "…"


class Watchable(Protocol):
    """What the progress display reads: an Arena, or a distributed run's RayProgress."""

    def events(self) -> AsyncIterator[ProgressEvent]: ...


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60:02d}:{seconds % 60:02d}"


class RecentRate:
    """Requests finished per second over the last ``window`` seconds, per stage (reused ones excluded)."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def update(self, s: StageProgress, now: float) -> float:
        samples = self._samples.setdefault(s.name, deque())
        samples.append((now, s.done - s.reused))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        t0, n0 = samples[0]
        if now - t0 <= 0:
            return s.rate(now)  # one sample: the rate since the stage started
        return (s.done - s.reused - n0) / (now - t0)

    def eta(self, s: StageProgress, now: float) -> float | None:
        left = s.total - s.done
        if left <= 0:
            return 0.0
        rate = self.update(s, now)
        return left / rate if rate > 0 else None


def abbreviate(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters: "generate " becomes "gen ", then the middle is cut."""
    if len(name) <= width:
        return name
    if name.startswith("generate "):
        name = "gen " + name[len("generate "):]
        if len(name) <= width:
            return name
    if width <= 1:
        return name[:width]
    head = (width - 1 + 1) // 2
    tail = width - 1 - head
    return name[:head] + ELLIPSIS + (name[-tail:] if tail else "")


# optional columns, least important first (dropped in this order when a line does not fit); the bar
# is drawn only in the room that is left
_DROP_ORDER = ("toks", "reused", "rate")
MIN_NAME = 10
MAX_NAME = 28
MAX_BAR = 30
MIN_BAR = 6


def _cells(s: StageProgress, now: float, rates: RecentRate) -> dict[str, str]:
    elapsed = max(now - s.started, 1e-9)
    rate = rates.update(s, now)
    left = s.total - s.done
    if left <= 0:  # finished: the stage's mean rate (the recent one fell to 0 when it ended)
        rate = s.rate(now)
    eta = 0.0 if left <= 0 else (left / rate if rate > 0 else None)
    pct = f"{100 * s.done // s.total:3d}%" if s.total else "  -%"  # floor: 100% only when done
    return {
        "count": f"{s.done}/{s.total} {pct}",
        "rate": f"{rate:.1f} req/s",
        "toks": f"{(s.prompt_tokens + s.completion_tokens) / elapsed:.0f} tok/s",
        "reused": f"{s.reused} reused" if s.reused else "",
        "failed": f"{s.failed} failed" if s.failed else "",
        "eta": f"ETA {_eta(eta)}",
    }


_ORDER = ("count", "rate", "toks", "reused", "failed", "eta")


def _line(name: str, cells: dict[str, str], shown: set[str], bar: int, s: StageProgress, glyphs: str) -> str:
    parts = [name]
    if bar:
        filled = round(bar * s.done / s.total) if s.total else 0
        parts.append(glyphs[0] * filled + glyphs[1] * (bar - filled))
    parts += [cells[k] for k in _ORDER if k in shown and cells[k]]
    return "  ".join(parts)


def progress_lines(stages: Sequence[StageProgress], width: int, *, now: float | None = None,
                   rates: RecentRate | None = None, retries: int = 0, errors: int = 0,
                   plain: bool = False) -> list[str]:
    """One line per stage, each at most ``width`` characters.

    Live (``plain=False``): aligned columns and a bar in the room left. ``plain`` (log files): each line
    reads ``<stage>: <done>/<total> ...`` on its own, without a bar or padding."""
    now = now or time.monotonic()
    rates = rates or RecentRate()
    cells = [_cells(s, now, rates) for s in stages]
    for key in _ORDER:  # a column as wide as its widest cell, so the lines align
        w = max((len(c[key]) for c in cells), default=0)
        for c in cells:
            c[key] = "" if not any(c2[key] for c2 in cells) else c[key] if plain else c[key].rjust(w)
    shown = set(_ORDER)
    name_w = min(max(MAX_NAME, width // 3), max((len(s.name) for s in stages), default=1))
    glyphs = "━─"

    def name(s: StageProgress, nw: int) -> str:
        return abbreviate(s.name, nw) + ":" if plain else abbreviate(s.name, nw).ljust(nw)

    def longest(nw: int, bar: int = 0) -> int:
        return max((len(_line(name(s, nw), c, shown, bar, s, glyphs)) for s, c in zip(stages, cells, strict=True)),
                   default=0)

    drops = list(_DROP_ORDER)
    while (over := longest(name_w) - width) > 0:
        if drops:
            shown.discard(drops.pop(0))
        elif name_w > MIN_NAME:
            name_w = max(MIN_NAME, name_w - over)
        else:  # only the name, done/total, failures and the ETA are left: the name gives way
            name_w = max(1, name_w - over)
            break
    room = width - longest(name_w) - 2
    bar = 0 if plain else min(MAX_BAR, room) if room >= MIN_BAR else 0
    lines = [_line(name(s, name_w), c, shown, bar, s, glyphs)[:width].rstrip().replace(":  ", ": ", 1)
             if plain else _line(name(s, name_w), c, shown, bar, s, glyphs)[:width].rstrip()
             for s, c in zip(stages, cells, strict=True)]
    if retries or errors:
        lines.append(f"{retries} retries, {errors} failed for good so far"[:width])
    return lines


def _width() -> int:
    """The terminal's columns (``COLUMNS`` or 80 without a terminal)."""
    return shutil.get_terminal_size((80, 24)).columns


async def log_progress(arena: Watchable, out: TextIO, every: float = 5.0, width: int | None = None) -> None:
    """Without a terminal: a block of lines every ``every`` seconds while a count changes, and the last
    block once."""
    last = 0.0
    printed: tuple[tuple[int, int, int], ...] | None = None
    rates = RecentRate()
    width = width or _width()
    async for ev in arena.events():
        now = time.monotonic()
        state = tuple((s.done, s.total, s.failed) for s in ev.stages)
        for s in ev.stages:
            rates.update(s, now)
        if state == printed or not (ev.finished or now - last >= every):
            continue
        last, printed = now, state
        for line in progress_lines(ev.stages, width, now=now, rates=rates, retries=ev.retries, errors=ev.errors,
                                   plain=True):
            print(line, file=out, flush=True)


async def live_progress(arena: Watchable, out: TextIO, width: int | None = None) -> None:
    """On a terminal: one live line per stage (generation per model, judging), fitted to its width."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console(file=out, width=width, highlight=False)
    rates = RecentRate()

    def render(ev: ProgressEvent | None) -> Text:
        if ev is None:
            return Text("")
        lines = progress_lines(ev.stages, console.width, rates=rates, retries=ev.retries, errors=ev.errors)
        return Text("\n".join(lines), no_wrap=True, overflow="crop")

    with Live(render(None), console=console, refresh_per_second=4, transient=False) as live:
        async for ev in arena.events():
            live.update(render(ev), refresh=ev.finished)


async def show_progress(arena: Watchable, *, quiet: bool = False, out: TextIO | None = None,
                        mode: str = "auto") -> None:
    out = out or sys.stderr
    if quiet or mode == "none":
        return
    if mode == "rich" or (mode == "auto" and out.isatty()):
        await live_progress(arena, out)
    else:
        await log_progress(arena, out)
