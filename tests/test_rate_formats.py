"""The rating (Elo scale) and its interval beside the win rate: leaderboard.txt, `rate --format ...`."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from arena_engine.battles import Game
from arena_engine.config import RatingConfig
from arena_engine.leaderboard import Scope, rate_scope
from arena_engine.report.formats import format_leaderboards
from arena_engine.report.tables import leaderboard_text, parse_diagnostics, parse_leaderboard, parse_ratings


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "arena_engine.cli", *args], capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    done = _cli("demo", "--output", str(out), "--queries", "8", "--quiet")
    assert done.returncode in (0, 1), done.stderr
    return out / "run"


def test_leaderboard_txt_shows_the_rating_and_its_interval(demo_run: Path) -> None:
    text = (demo_run / "report" / "leaderboard.txt").read_text()
    report = orjson.loads((demo_run / "report" / "report.json").read_bytes())
    ratings = parse_ratings(text)
    assert "Rating CI" in text.splitlines()[1]
    for e in report["leaderboards"][0]["entries"]:  # OVERALL
        assert ratings["OVERALL"][e["model"]] == (round(e["rating"]), round(e["rating_lower"]), round(e["rating_upper"]))
    assert ratings["OVERALL"]["sim-base"] == (1000, 1000, 1000)
    assert ratings["OVERALL"]["sim-strong"][0] > 1000 > ratings["OVERALL"]["sim-weak"][0]
    # the older readers still read the same file
    assert set(parse_leaderboard(text)["OVERALL"]) == {"sim-base", "sim-strong", "sim-weak"}
    assert parse_diagnostics(text)["OVERALL"]["games"] > 0


def test_rate_formats_agree_with_report_json(demo_run: Path) -> None:
    report = orjson.loads((demo_run / "report" / "report.json").read_bytes())
    overall = {e["model"]: e for e in report["leaderboards"][0]["entries"]}
    as_json = _cli("rate", str(demo_run), "--format", "json")
    assert as_json.returncode in (0, 1), as_json.stderr
    rows = [r for r in orjson.loads(as_json.stdout)["rows"] if r["scope"] == "OVERALL"]
    assert {r["model"]: (r["winrate"], r["rating"], r["rating_lower"]) for r in rows} == {
        m: (e["winrate"], e["rating"], e["rating_lower"]) for m, e in overall.items()}
    as_csv = _cli("rate", str(demo_run), "--format", "csv")
    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    strong = next(r for r in table if r["scope"] == "OVERALL" and r["model"] == "sim-strong")
    assert float(strong["rating_upper"]) == pytest.approx(overall["sim-strong"]["rating_upper"])
    md = _cli("rate", str(demo_run), "--format", "markdown").stdout
    assert "| Model | Win rate (%) | CI (%) | Rating | Rating CI | Games |" in md
    assert f"| sim-strong | {100 * overall['sim-strong']['winrate']:.1f} |" in md
    assert _cli("rate", str(demo_run), "--format", "yaml").returncode == 2


def test_a_model_that_only_won_keeps_its_rating_row_readable() -> None:
    games = [Game("ds", "s", str(q), "cand", "base", a, 1, None) for q in range(5) for a in (True, False)]
    board = rate_scope(Scope("overall"), games, ["base", "cand"], "base", RatingConfig(rounds=50), seed=1)
    cand = next(e for e in board.entries if e.model == "cand")
    assert "only_wins" in cand.flags
    text = leaderboard_text([board])
    assert parse_ratings(text)["OVERALL"]["cand"] == (round(cand.rating), round(cand.rating_lower),
                                                      round(cand.rating_upper))
    assert parse_leaderboard(text)["OVERALL"]["cand"][0] == round(100 * cand.winrate, 1)
    row = next(r for r in orjson.loads(format_leaderboards([board], "json"))["rows"] if r["model"] == "cand")
    assert row["flags"] == list(cand.flags) and row["rating_upper"] == cand.rating_upper
    assert f"| cand | {100 * cand.winrate:.1f} |" in format_leaderboards([board], "markdown")
