"""A judge's reliability gates its leaderboard: excluded games per scope with their reasons, position
consistency, which position the disagreements favour, battles won in both orders, and the verdict on
whether the ranking is supported, the same in every output (terminal, leaderboard.txt,
report_table.txt, report.json, report.html) and in the exit code."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from arena_helpers import dataset
from interrupt_helpers import JUDGE, MODELS, write_run_config

from arena_engine.battles import Game, combine, exclusions, position_bias
from arena_engine.config import RatingConfig
from arena_engine.leaderboard import (
    Board,
    Scope,
    gate_failures,
    leaderboards,
    rate_scope,
    reliability_warnings,
)
from arena_engine.reliability import (
    MAX_EXCLUDED_SHARE,
    MIN_POSITION_CONSISTENCY,
    binomial_two_sided,
    diagnose_scopes,
)
from arena_engine.report.html import reliability_banner
from arena_engine.report.tables import board_text, leaderboard_text, parse_diagnostics, parse_leaderboard
from arena_engine.sim import Faults, SimConfig, SimModel
from arena_engine.sim.process import SimProcess

CFG = RatingConfig(rounds=100)
NAMES = ["base", "cand"]


def _game(qid: int, cand_is_a: bool, outcome: int | None, reason: str | None = None, subset: str = "s1",
          cand: str = "cand") -> Game:
    return Game("ds", subset, str(qid), cand, "base", cand_is_a, outcome, reason)


def _battles(pairs: list[tuple[int | None, int | None]], subset: str = "s1", start: int = 0) -> list[Game]:
    """One battle per (candidate as A, candidate as B) outcome pair; None = an unparseable verdict."""
    out = []
    for i, (first, second) in enumerate(pairs, start):
        for cand_is_a, o in ((True, first), (False, second)):
            out.append(_game(i, cand_is_a, o, None if o is not None else "unparseable verdict: no label",
                             subset))
    return out


def _board(games: list[Game]) -> Board:
    return rate_scope(Scope("overall"), games, NAMES, "base", CFG, seed=1)


def test_diagnostics_count_games_exclusions_agreement_and_both_order_wins() -> None:
    games = _battles([(1, 1)] * 6 + [(-1, -1)] * 2 + [(0, 0)] + [(1, -1)] * 2 + [(-1, 1)] + [(2, None)])
    games.append(_game(99, True, None, "judge request failed: HTTP 500"))
    d = _board(games).diagnostics
    assert (d.games, d.rated, d.excluded) == (27, 25, 2)
    assert dict(d.excluded_by_reason) == {"unparseable verdict": 1, "judge request failed": 1}
    assert (d.battles, d.agree, d.lean_a, d.lean_b) == (12, 9, 2, 1)
    assert d.position_consistency == pytest.approx(9 / 12)
    assert d.disagree_share == pytest.approx(3 / 12)
    cand = d.model("cand")
    assert cand is not None and (cand.battles, cand.won_both, cand.lost_both) == (12, 6, 2)
    base = d.model("base")
    assert base is not None and (base.won_both, base.lost_both) == (2, 6)
    assert d.supported and not d.notes


def test_a_judge_that_always_prefers_position_a_makes_the_ranking_unsupported() -> None:
    board = _board(_battles([(1, -1)] * 20))
    d = board.diagnostics
    assert d.position_consistency == 0.0 and d.lean_a == 20 and d.lean_b == 0
    assert not board.supported
    assert any("favour position A" in r for r in board.unsupported_reasons)
    assert gate_failures([board]) and "NOT SUPPORTED" in reliability_warnings([board])[0]
    text = board_text(board)
    assert "NOT SUPPORTED" in text
    parsed = parse_diagnostics(text)["OVERALL"]
    assert parsed["consistency_pct"] == 0.0 and (parsed["favour_a"], parsed["favour_b"]) == (20, 0)
    assert parsed["unsupported"] == list(board.unsupported_reasons)


def test_disagreements_split_between_positions_are_noise_not_a_position_driven_judge() -> None:
    # 8 of 20 battles agree (40% < 50%), the 12 disagreements split 7 / 5: an honest judge on close answers
    board = _board(_battles([(1, 1)] * 5 + [(-1, -1)] * 3 + [(1, -1)] * 4 + [(0, -1)] * 3 + [(-1, 1)] * 5))
    d = board.diagnostics
    assert d.position_consistency is not None and d.position_consistency < MIN_POSITION_CONSISTENCY
    assert (d.lean_a, d.lean_b) == (7, 5)
    assert board.supported and not gate_failures([board])
    assert d.notes and "not one-sided" in d.notes[0]
    assert reliability_warnings([board]) == []  # a note under the board, not a warning on stderr
    assert parse_diagnostics(board_text(board))["OVERALL"]["notes"] == list(d.notes)


def test_a_small_lean_by_chance_is_not_flagged() -> None:
    # 4 of 4 disagreements favour A: 100% one-sided, but p = 0.125 with so few
    board = _board(_battles([(1, 1)] * 3 + [(1, -1)] * 4))
    assert board.diagnostics.lean_p == pytest.approx(0.125)
    assert board.supported


def test_binomial_test_matches_exact_values_and_the_normal_tail() -> None:
    assert binomial_two_sided(15, 15) == pytest.approx(2 / 2**15)
    assert binomial_two_sided(5, 10) == 1.0
    assert binomial_two_sided(8, 10) == pytest.approx(2 * (45 + 10 + 1) / 1024)
    assert binomial_two_sided(2, 10) == binomial_two_sided(8, 10)
    # the exact sum at 20,000 trials and the normal tail used beyond agree
    assert binomial_two_sided(10_150, 20_000) == pytest.approx(math.erfc(149.5 / math.sqrt(5000) / math.sqrt(2)),
                                                              rel=0.02)
    assert binomial_two_sided(20_300, 40_000) == pytest.approx(math.erfc(299.5 / 100 / math.sqrt(2)))


def test_a_pooled_rating_that_contradicts_the_battle_scores_is_unsupported() -> None:
    # strong win as A, tie as B: those battles disagree (score 0.5) but their pooled games count 3 wins and
    # a tie; with as many battles won as lost in both orders, the pool still says 74 / 88 = 84%
    games = _battles([(2, 0)] * 20 + [(1, 1), (-1, -1)] * 2)
    board = _board(games)
    entry = board.entry("cand")
    cand = board.diagnostics.model("cand")
    assert entry.lower > 0.5 and cand is not None and cand.won_both == cand.lost_both == 2
    assert board.diagnostics.contradictions == ("cand",)
    assert not board.supported
    assert any("contradicts the battle scores" in r for r in board.unsupported_reasons)


def test_excluded_share_above_the_threshold_is_unsupported_and_per_scope() -> None:
    clean = _battles([(1, 1)] * 10, subset="s1")
    dirty = _battles([(1, 1)] * 4 + [(None, None)] * 6, subset="s2", start=100)
    boards = leaderboards(clean + dirty, NAMES, "base", CFG, seed=1)
    by_title = {b.scope.title: b for b in boards}
    assert by_title["ds - s1"].supported
    s2 = by_title["ds - s2"].diagnostics
    assert s2.excluded == 12 and s2.excluded_share == pytest.approx(0.6) and s2.excluded_share > MAX_EXCLUDED_SHARE
    assert not by_title["ds - s2"].supported
    overall = by_title["OVERALL"].diagnostics
    assert overall.excluded == 12 and overall.games == 40
    assert not by_title["OVERALL"].supported  # 30% excluded overall
    warnings = reliability_warnings(boards)
    assert "WARNING: subset ds - s2: 12 of 20 games excluded (60.0%): unparseable verdict 12" in warnings
    assert not any("ds - s1" in w for w in warnings)
    parsed = parse_diagnostics(leaderboard_text(boards))
    assert parsed["ds - s2"]["excluded"] == 12 and parsed["ds - s2"]["reasons"] == {"unparseable verdict": 12}
    assert parsed["ds - s1"]["excluded"] == 0 and parsed["ds - s1"]["unsupported"] == []


def test_one_pass_over_all_scopes_gives_each_scope_its_own_figures() -> None:
    games = (_battles([(1, 1), (2, -1), (0, None), (-1, 0)] * 3, subset="s1")
             + _battles([(1, -1), (-2, -2), (None, None)] * 2, subset="s2", start=50)
             + [_game(7, True, 1, subset="s3", cand="other")])
    every = diagnose_scopes(games)
    scopes = [Scope("overall"), Scope("dataset", "ds")] + [Scope("subset", "ds", s) for s in ("s1", "s2", "s3")]
    assert set(every) == {s.key for s in scopes}
    for scope in scopes:
        d = every[scope.key]
        scoped = [g for g in games if scope.contains(g)]
        assert diagnose_scopes(scoped)[scope.key] == d
        assert d.position_bias == position_bias(scoped)
        assert d.excluded == sum(e.total for e in exclusions(scoped).values())
        battles = [b for b in combine(scoped) if b.consistent is not None]
        assert (d.battles, d.agree) == (len(battles), sum(bool(b.consistent) for b in battles))


def test_evalscope_means_keep_the_pooled_diagnostics() -> None:
    games = _battles([(1, -1)] * 10, subset="s1") + _battles([(1, -1)] * 10, subset="s2", start=50)
    boards = leaderboards(games, NAMES, "base", RatingConfig(rounds=50, overall="evalscope"), seed=1)
    assert boards[0].method.endswith("+subset-mean")
    assert boards[0].diagnostics.battles == 20 and not boards[0].supported


def test_no_rated_game_fails_the_gate() -> None:
    boards = leaderboards(_battles([(None, None)] * 4), NAMES, "base", CFG, seed=1)
    assert all(b.diagnostics.no_rated_game for b in boards)
    assert gate_failures(boards)[0] == "OVERALL: no game was rated"
    assert "no game was rated (8 of 8 excluded)" in leaderboard_text(boards)


def test_one_subset_without_a_rated_game_fails_the_gate_while_overall_stands() -> None:
    games = _battles([(1, 1)] * 40, subset="s1") + _battles([(None, None)], subset="s2", start=100)
    boards = leaderboards(games, NAMES, "base", CFG, seed=1)
    assert boards[0].supported  # 2 of 82 games excluded overall
    assert gate_failures(boards) == ["subset ds - s2: no game was rated"]


def test_the_leaderboard_parser_still_reads_the_rankings_beside_the_diagnostics() -> None:
    boards = leaderboards(_battles([(1, 1)] * 8 + [(1, -1)] * 2), NAMES, "base", CFG, seed=1)
    parsed = parse_leaderboard(leaderboard_text(boards))
    assert set(parsed["OVERALL"]) == {"cand", "base"}
    assert parsed["OVERALL"]["base"] == (50.0, 0.0, 0.0)
    assert parsed["OVERALL"]["cand"][0] == pytest.approx(100 * boards[0].entry("cand").winrate, abs=0.051)


def test_the_html_banner_escapes_its_text() -> None:
    data = {"report": {"reliability": {"exit_reasons": ["subset <script>alert(1)</script>: no game was rated"],
                                       "warnings": ["WARNING: a & b"]}}}
    banner = reliability_banner(data)
    assert "<script>" not in banner and "&lt;script&gt;" in banner and "a &amp; b" in banner
    assert "NOT SUPPORTED" in banner
    assert reliability_banner({"report": {"reliability": {"exit_reasons": [], "warnings": []}}}) == ""


# ---------------------------------------------------------------------------------------------- the CLI


def _sim(seed: int = 5, **kw: object) -> SimConfig:
    models = tuple(SimModel(n, quality=q) for n, q in MODELS) + (SimModel(JUDGE, judge=True),)
    return SimConfig(models=models, seed=seed, **kw)  # type: ignore[arg-type]


def _run_cli(tmp_path: Path, sim_cfg: SimConfig, queries: int = 15, parse_retries: int | None = None,
             ) -> tuple[subprocess.CompletedProcess[str], Path]:
    data = dataset(tmp_path, queries)
    with SimProcess(sim_cfg) as sim:
        config = write_run_config(tmp_path / "arena.toml", sim.url, tmp_path / "run", data, rounds=100)
        if parse_retries is not None:
            config.write_text(config.read_text().replace("[judge]\n", f"[judge]\nparse_retries = {parse_retries}\n"))
        out = subprocess.run([sys.executable, "-m", "arena_engine.cli", "run", str(config), "--quiet"],
                             capture_output=True, text=True, timeout=300, check=False)
    return out, tmp_path / "run"


def _excluded_per_scope(run_dir: Path) -> dict[str, tuple[int, int]]:
    """(excluded, games) per leaderboard title, counted from report.json's subsets (not the diagnostics)."""
    report = orjson.loads((run_dir / "report" / "report.json").read_bytes())
    out: dict[str, tuple[int, int]] = {}
    for s in report["subsets"]:
        out[f"{s['dataset']} - {s['subset']}"] = (s["excluded"], s["games"])
    total = (sum(e for e, _ in out.values()), sum(g for _, g in out.values()))
    out["OVERALL"] = out["general_qa"] = total
    return out


def _grid_row(table: str, first: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == first and len(cells) > 6:
            return cells
    raise AssertionError(f"no row {first!r} in the diagnostics table")


@pytest.mark.slow
def test_a_judge_writing_30_percent_garbage_shows_its_exclusions_everywhere(tmp_path: Path) -> None:
    # no parse retries: the garbage reaches the verdicts as it is
    out, run_dir = _run_cli(tmp_path, _sim(faults=Faults(rate_bad_verdict=0.3)), parse_retries=0)
    truth = _excluded_per_scope(run_dir)
    excluded, games = truth["OVERALL"]
    assert games == 4 * 2 * 15 and 0.2 < excluded / games < 0.45
    leaderboard = (run_dir / "report" / "leaderboard.txt").read_text()
    assert leaderboard in out.stdout + "\n"  # the terminal prints what the file holds
    for text in (out.stdout, leaderboard):
        parsed = parse_diagnostics(text)
        assert set(parsed) == set(truth)
        for title, (ex, n) in truth.items():
            assert (parsed[title]["excluded"], parsed[title]["games"]) == (ex, n), title
            assert parsed[title]["reasons"] == {"unparseable verdict": ex}
    table = (run_dir / "report" / "report_table.txt").read_text()
    assert table.splitlines()[1].startswith("| Model ")  # the seed's table first
    for title, (ex, n) in truth.items():
        name = title if title == "OVERALL" else ("dataset " if title == "general_qa" else "subset ") + title
        cells = _grid_row(table, name)
        assert cells[1:5] == [str(n), str(n - ex), str(ex), f"{100 * ex / n:.1f}"], name
        assert cells[5] == f"unparseable verdict: {ex}" and cells[-1] == "NOT SUPPORTED"
    # more than 5% excluded: a warning per scope on stderr; more than 20%: the ranking is not supported
    for title in truth:
        name = title if title == "OVERALL" else ("dataset " if title == "general_qa" else "subset ") + title
        ex, n = truth[title]
        assert f"WARNING: {name}: {ex} of {n} games excluded" in out.stderr
    assert "arena-engine: the OVERALL ranking is not supported by the judge's verdicts" in out.stderr
    assert out.returncode == 1


@pytest.mark.slow
def test_garbage_the_parse_retries_mostly_absorb_is_counted_but_passes(tmp_path: Path) -> None:
    # the default 2 parse retries: 30% garbage leaves about 0.3^3 = 2.7% of the games excluded
    out, run_dir = _run_cli(tmp_path, _sim(seed=8, faults=Faults(rate_bad_verdict=0.3)))
    excluded, games = _excluded_per_scope(run_dir)["OVERALL"]
    assert 0 < excluded <= 0.05 * games
    parsed = parse_diagnostics((run_dir / "report" / "leaderboard.txt").read_text())
    assert parsed["OVERALL"]["excluded"] == excluded and parsed["OVERALL"]["unsupported"] == []
    assert f"excluded ({100 * excluded / games:.1f}%): unparseable verdict {excluded}" in out.stdout
    assert "WARNING: OVERALL" not in out.stderr
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_a_judge_that_always_prefers_position_a_is_flagged_and_exits_1(tmp_path: Path) -> None:
    out, run_dir = _run_cli(tmp_path, _sim(prefer_a_rate=1.0))
    assert out.returncode == 1, out.stderr
    assert "WARNING: OVERALL: the ranking is NOT SUPPORTED by the judge's verdicts" in out.stderr
    assert "favour position A" in out.stderr
    leaderboard = (run_dir / "report" / "leaderboard.txt").read_text()
    parsed = parse_diagnostics(leaderboard)
    assert parsed["OVERALL"]["consistency_pct"] == 0.0 and parsed["OVERALL"]["favour_b"] == 0
    assert all(section["unsupported"] for section in parsed.values())
    assert "NOT SUPPORTED: OVERALL" in (run_dir / "report" / "report_table.txt").read_text()
    report = orjson.loads((run_dir / "report" / "report.json").read_bytes())
    assert report["reliability"]["supported"] is False and report["reliability"]["exit_reasons"]
    assert report["leaderboards"][0]["diagnostics"]["position_consistency"] == 0.0
    html = (run_dir / "report" / "report.html").read_text()
    assert 'id="reliability-banner"' in html and "NOT SUPPORTED" in html
    # the rebuilt report says the same and exits the same way
    again = subprocess.run([sys.executable, "-m", "arena_engine.cli", "report", str(run_dir)], capture_output=True,
                           text=True, timeout=300, check=False)
    assert again.returncode == 1 and "NOT SUPPORTED" in again.stderr
    assert parse_diagnostics((run_dir / "report" / "leaderboard.txt").read_text()) == parsed


@pytest.mark.slow
def test_a_judge_that_never_gives_a_verdict_exits_1_and_says_why(tmp_path: Path) -> None:
    out, run_dir = _run_cli(tmp_path, _sim(faults=Faults(rate_bad_verdict=1.0)), queries=4, parse_retries=0)
    assert out.returncode == 1
    assert "arena-engine: OVERALL: no game was rated" in out.stderr
    assert "games: 0 rated of 32, 32 excluded (100.0%): unparseable verdict 32" in out.stdout
    assert 'id="reliability-banner"' in (run_dir / "report" / "report.html").read_text()
