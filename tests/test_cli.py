"""The command line as a user meets it: help texts, the demo, user errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from arena_engine.report.tables import parse_leaderboard

COMMANDS = ["demo", "run", "sim", "report", "rate", "import-evalscope"]


def _cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "arena_engine.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, check=False)


def test_help_explains_every_command() -> None:
    top = _cli("--help")
    assert top.returncode == 0
    for cmd in COMMANDS:
        assert cmd in top.stdout
    assert "exit codes" in top.stdout
    for cmd in COMMANDS:
        out = _cli(cmd, "--help")
        assert out.returncode == 0, out.stderr
        assert "usage: arena-engine " + cmd in out.stdout
        assert len(out.stdout.split()) > 30, f"`{cmd} --help` says too little"


def test_demo_ranks_models_by_latent_quality_and_resumes(tmp_path: Path) -> None:
    out = _cli("demo", "--output", str(tmp_path / "demo"), "--queries", "25", "--quiet")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "| Model" in text and "winrate" in text
    boards = parse_leaderboard(text)
    overall = boards["OVERALL"]
    assert list(overall) == ["sim-strong", "sim-base", "sim-weak"]
    assert overall["sim-base"] == (50.0, 0.0, 0.0)
    # written under the folder, and the leaderboard file parses back to the numbers in report.json
    report_dir = tmp_path / "demo" / "run" / "report"
    assert parse_leaderboard((report_dir / "leaderboard.txt").read_text()) == boards
    data = orjson.loads((report_dir / "report.json").read_bytes())
    for board in data["leaderboards"]:
        section = boards[board["title"]]
        for e in board["entries"]:
            pct, lo, hi = section[e["model"]]
            assert pct == pytest.approx(100 * e["winrate"], abs=0.051)
            if e["model"] != data["baseline"]:
                assert lo == pytest.approx(100 * (e["lower"] - e["winrate"]), abs=0.051)
                assert hi == pytest.approx(100 * (e["upper"] - e["winrate"]), abs=0.051)
    # rerun: everything reused, same leaderboard
    again = _cli("demo", "--output", str(tmp_path / "demo"), "--queries", "25", "--quiet")
    assert again.returncode == 0, again.stderr
    assert parse_leaderboard(again.stdout) == boards
    # report rebuilds from the checkpoints alone
    rebuilt = _cli("report", str(tmp_path / "demo" / "run"))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert parse_leaderboard((report_dir / "leaderboard.txt").read_text()) == boards


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[run]\noutput_dir = "x"\nspeed = 3\n')
    out = _cli("run", str(bad))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "bad.toml" in out.stderr
    missing = _cli("run", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "nope.toml" in missing.stderr and "Traceback" not in missing.stderr
