"""Progress as a user sees it: live bars on a terminal, plain log lines without one."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path


def test_progress_bars_on_a_terminal(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "arena_engine.cli", "demo", "--output", str(tmp_path / "d"), "--queries", "20",
         "--latency", "0.05"],
        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, screen[-2000:]
    assert "\x1b[" in screen, "a terminal gets ANSI redraws"
    assert "━" in screen, "a terminal gets progress bars"
    assert "generate sim-strong" in screen and "judge sim-judge" in screen
    assert "req/s" in screen
    assert "=== OVERALL LEADERBOARD ===" in screen


def test_log_lines_without_a_terminal(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "arena_engine.cli", "demo", "--output", str(tmp_path / "d"), "--queries", "10"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stderr and "━" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith(("generate ", "judge "))]
    assert any(ln.startswith("judge sim-judge: 80/80") for ln in lines), out.stderr
    assert all("req/s" in ln and "ETA" in ln for ln in lines)
    # --quiet: nothing on stderr but nothing lost on stdout
    quiet = subprocess.run(
        [sys.executable, "-m", "arena_engine.cli", "demo", "--output", str(tmp_path / "d"), "--queries", "10",
         "--quiet"], capture_output=True, text=True, timeout=240, check=False,
    )
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "=== OVERALL LEADERBOARD ===" in quiet.stdout
