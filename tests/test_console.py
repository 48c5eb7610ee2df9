"""Progress at 80 columns: done/total and the ETA always visible, the last block once without a TTY."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from arena_engine import console as con
from arena_engine.console import RecentRate, log_progress, progress_lines
from arena_engine.progress import ProgressEvent, StageProgress
from tests.fake_time import step

LONG = "generate qwen2.5-72b-instruct-awq-int4-with-a-long-suffix"


def _stages(now: float, done: int = 450) -> list[StageProgress]:
    return [
        StageProgress(LONG, total=1000, done=done, reused=120, failed=3, prompt_tokens=50_000,
                      completion_tokens=90_000, started=now - 60),
        StageProgress("generate deepseek-v3-0324", total=1000, done=1000, started=now - 60),
        StageProgress("judge gpt-4o-2024-11-20 @ azure", total=4000, done=1200, started=now - 60),
    ]


@pytest.mark.parametrize("width", [80, 60, 40])
def test_every_line_fits_and_keeps_done_total_and_eta(width: int) -> None:
    now = time.monotonic()
    lines = progress_lines(_stages(now), width, now=now, retries=7)
    assert len(lines) == 4
    for line, count in zip(lines, ("450/1000", "1000/1000", "1200/4000"), strict=False):
        assert len(line) <= width, (width, line)
        assert count in line and re.search(r"ETA (\d\d:\d\d|--:--)", line), line
    assert "3 failed" in lines[0]  # failures are never dropped
    assert lines[3].startswith("7 retries")
    wide = progress_lines(_stages(now), 200, now=now)
    assert LONG in wide[0] and "tok/s" in wide[0] and "━" in wide[0]  # room: nothing dropped
    narrow = progress_lines(_stages(now), 80, now=now)
    assert "tok/s" not in narrow[0] and "…" in narrow[0]  # dropped first, then the name abbreviated
    assert "req/s" in narrow[0]


def test_eta_follows_the_recent_rate() -> None:
    rates = RecentRate(window=30)
    s = StageProgress("judge j", total=2000, started=0.0)
    for t in range(0, 101, 5):  # 10 per second for 100 s, then 1 per second
        s.done = 10 * t
        rates.update(s, float(t))
    for t in range(105, 200, 5):
        s.done += 5
        rates.update(s, float(t))
    eta = rates.eta(s, 200.0)
    left = s.total - s.done
    assert eta is not None and eta == pytest.approx(left / 1.0, rel=0.2)  # not left / (mean rate 5.6/s)


class _Fake:
    def __init__(self, events: list[ProgressEvent]) -> None:
        self._events = events

    async def events(self) -> AsyncIterator[ProgressEvent]:
        for ev in self._events:
            yield ev
            await step()


def _event(now: float, done: int, finished: bool = False) -> ProgressEvent:
    return ProgressEvent(stages=tuple(_stages(now, done)), retries=0, errors=0, finished=finished, elapsed=1.0)


def test_without_a_tty_the_last_block_is_printed_once() -> None:
    now = time.monotonic()
    # the counts stop changing while the ratings are computed: several snapshots, then the final one
    events = [_event(now, 400), _event(now, 1000), _event(now, 1000), _event(now, 1000), _event(now, 1000, True)]
    out = io.StringIO()
    anyio.run(lambda: log_progress(_Fake(events), out, every=0.0, width=80))
    lines = out.getvalue().splitlines()
    assert sum(line.startswith("judge") for line in lines) == 2  # the 400 block and the final one
    assert all(len(line) <= 80 for line in lines)
    assert lines[2].startswith("judge gpt-4o") and ": 1200/4000  30%" in lines[2] and "━" not in out.getvalue()


def test_rich_display_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.monotonic()
    out = io.StringIO()
    real = Console

    def console80(**kw: object) -> Console:
        return real(file=out, width=80, force_terminal=True, color_system=None)

    monkeypatch.setattr("rich.console.Console", console80)
    events = [_event(now, 400), _event(now, 1000, True)]
    anyio.run(lambda: con.live_progress(_Fake(events), out))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    final = [ln for ln in text.splitlines() if ln.strip()][-3:]
    assert all(len(ln) <= 80 for ln in text.splitlines())
    assert "1000/1000" in final[0] and "ETA" in final[0] and "1200/4000" in final[2]


def _cli(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "arena_engine.cli", *args], capture_output=True, text=True,
                          timeout=300, check=False, cwd=tmp, env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})


def test_progress_switch(tmp_path: Path) -> None:
    plain = _cli("demo", "--output", "a", "--queries", "5", "--progress", "plain", tmp=tmp_path)
    assert plain.returncode in (0, 1), plain.stderr
    judge_lines = [ln for ln in plain.stderr.splitlines() if ln.startswith("judge sim-judge")]
    assert judge_lines and judge_lines[-1].count("40/40") == 1 and len(judge_lines[-1]) <= 80
    assert sum("40/40" in ln for ln in judge_lines) == 1  # the final block once
    none = _cli("demo", "--output", "a", "--queries", "5", "--progress", "none", tmp=tmp_path)
    assert none.returncode in (0, 1) and "judge sim-judge" not in none.stderr
    assert "reports:" in none.stderr  # only the progress is silenced (--quiet also drops this list)
    quiet = _cli("demo", "--output", "a", "--queries", "5", "--quiet", tmp=tmp_path)
    assert "judge sim-judge" not in quiet.stderr and "reports:" not in quiet.stderr
