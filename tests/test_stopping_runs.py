"""Adaptive judging in whole runs against the simulator: a stopped candidate is sent nothing more, the
baseline only what some candidate still needs, ``report`` replays the same decisions, panels and cascades
stop on the games they rate, and a SIGKILL and resume gives the same decisions and request counts."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from arena_helpers import dataset
from interrupt_helpers import answered_200, cli, output, read_run, stop, stored, wait_until
from stop_study import base_config, quality_for

from arena_engine.config import RunConfig, config_from_dict
from arena_engine.pipeline import Arena, ArenaResults
from arena_engine.report import write_reports
from arena_engine.report.stop_report import stop_html, stop_lines
from arena_engine.report.tables import parse_leaderboard
from arena_engine.sim import Latency, SimConfig, SimModel, SimServer
from arena_engine.sim.process import SimProcess
from arena_engine.stop_rules import ABOVE, BELOW, EXHAUSTED

TRUE = {"base": 0.5, "weak": 0.2, "even": 0.49, "strong": 0.85}
STOP = {"rule": "decided", "min_queries": 20, "block": 20}


def _qualities() -> dict[str, float]:
    cfg = base_config()
    return {m: 0.0 if m == "base" else quality_for(t, cfg) for m, t in TRUE.items()}


def _sim(judges: tuple[str, ...] = ("sim-judge",), seed: int = 3, latency: Latency | None = None) -> SimConfig:
    models = tuple(SimModel(m, quality=q) for m, q in _qualities().items())
    return SimConfig(models=models + tuple(SimModel(j, judge=True) for j in judges), seed=seed,
                     latency=latency or Latency("fixed", 0.0))


def _config(url: str, run_dir: Path, data: Path, *, judges: tuple[str, ...] = ("sim-judge",),
            panel: dict[str, Any] | None = None, stop: Any = STOP) -> dict[str, Any]:
    judge_tables = [{"name": j, "api_url": url, "identity": j, "concurrency": 32, "max_attempts": 8} for j in judges]
    out: dict[str, Any] = {
        "run": {"output_dir": str(run_dir), "seed": 1},
        "datasets": [{"name": "general_qa", "path": str(data)}],
        "models": [{"name": m, "api_url": url, "identity": m, "concurrency": 16, "max_attempts": 8,
                    "generation": {"temperature": 0.0, "max_tokens": 256}} for m in TRUE],
        "arena": {"baseline": "base", "stop": stop},
        "rating": {"rounds": 100},
    }
    if len(judges) == 1:
        out["judge"] = judge_tables[0]
    else:
        out["judges"] = judge_tables
        out["panel"] = panel or {}
    return out


PROGRESS: dict[str, tuple[int, int]] = {}  # the last run's (done, total) per stage


async def _run(cfg: RunConfig, *, offline: bool = False) -> ArenaResults:
    async with Arena(cfg, offline=offline) as arena:
        res = await arena.run()
        PROGRESS.clear()
        PROGRESS.update({k: (s.done, s.total) for k, s in arena.stages.items()})
        return res


def _run_on_sim(sim_cfg: SimConfig, make: Any) -> tuple[ArenaResults, dict[str, Any], RunConfig]:
    async def main() -> tuple[ArenaResults, dict[str, Any], RunConfig]:
        async with SimServer(sim_cfg) as sim:
            cfg = config_from_dict(make(sim.url), source="<test>")
            return await _run(cfg), sim.stats(), cfg
    return anyio.run(main)


def test_a_stopped_candidate_is_sent_nothing_more_and_report_replays_the_same(tmp_path: Path) -> None:
    data = dataset(tmp_path, 150)  # two subsets: 300 queries
    res, stats, cfg = _run_on_sim(_sim(), lambda url: _config(url, tmp_path / "run", data))
    s = res.stopping
    assert s is not None and s.queries == 300
    judged = {c.name: c.judged for c in s.candidates}
    assert s.candidate("weak").reason == BELOW and s.candidate("strong").reason == ABOVE
    assert judged["weak"] < 100 and judged["strong"] < 100
    assert s.candidate("even").reason == EXHAUSTED and judged["even"] == 300
    # counted at the simulator: a candidate's answers only for the queries it was judged on, the baseline's
    # for the queries some candidate needed, two judge requests per judged query
    per_model = stats["per_model"]
    for m, n in judged.items():
        assert per_model[m] == n
    assert per_model["base"] == max(judged.values())
    assert per_model["sim-judge"] == 2 * sum(judged.values())
    assert stats["duplicate_requests"] == 0
    # the leaderboard rates exactly those games, and its win rate is the sequence's estimate
    for c in s.candidates:
        e = res.overall.entry(c.name)
        assert e.games == 2 * c.judged
        assert e.winrate == pytest.approx(c.estimate)
        assert c.lower <= TRUE[c.name] <= c.upper
    # every progress bar ends where the run did (its total shrank as candidates stopped)
    assert all(done == total for done, total in PROGRESS.values()), PROGRESS
    assert PROGRESS["weak"] == (judged["weak"], judged["weak"])
    # `report` replays the same blocks from the checkpoints: the same decisions, nothing missing
    again = anyio.run(lambda: _run(cfg, offline=True))
    assert again.stopping == s and again.missing == 0
    paths = write_reports(again)
    report = json.loads(paths["json"].read_text())
    weak = next(c for c in report["stopping"]["candidates"] if c["model"] == "weak")
    assert weak["stopped_early"] and weak["judged_queries"] == judged["weak"]
    assert weak["interval_lower"] == pytest.approx(res.overall.entry("weak").lower)
    board = paths["leaderboard"].read_text()
    assert f"weak: stopped after {judged['weak']} of 300 queries (worse than the baseline" in board
    assert set(parse_leaderboard(board)["OVERALL"]) == set(TRUE)  # the section reads as no leaderboard row
    assert 'id="adaptive-judging"' in paths["html"].read_text()
    assert "even: judged on all 300 queries" in paths["report_table"].read_text()


def test_the_html_section_escapes_model_names() -> None:
    row = {"model": "<img src=x onerror=alert(1)>", "judged_queries": 5, "available_queries": 9,
           "stopped_early": True, "reason": "<b>", "decided_at": 5, "winrate": 0.1, "cs_lower": 0.0,
           "cs_upper": 0.3, "interval_lower": 0.05, "interval_upper": 0.2}
    html = stop_html({"stopping": {"rule": "decided", "confidence": 0.95, "margin": 0.02, "halfwidth": None,
                                   "min_queries": 1, "block": 5, "queries": 9, "candidates": [row]}})
    assert "<img" not in html and "&lt;img src=x" in html and "&lt;b&gt;" in html


@pytest.mark.parametrize("panel", [{"combine": "mean"}, {"cascade": ["j1", "j2"]}], ids=["mean", "cascade"])
def test_panels_and_cascades_stop_on_the_games_they_rate(panel: dict[str, Any], tmp_path: Path) -> None:
    data = dataset(tmp_path, 100)
    judges = ("j1", "j2")
    res, stats, _ = _run_on_sim(_sim(judges), lambda url: _config(url, tmp_path / "run", data, judges=judges,
                                                                  panel=panel))
    s = res.stopping
    assert s is not None
    judged = sum(c.judged for c in s.candidates)
    assert s.candidate("weak").stopped_early and s.candidate("strong").stopped_early
    assert stats["per_model"]["j1"] == 2 * judged  # the first judge judges every judged query in both orders
    if "cascade" in panel:
        assert 0 < stats["per_model"]["j2"] < 2 * judged  # the second only the battles the first left open
    else:
        assert stats["per_model"]["j2"] == 2 * judged
    for c in s.candidates:  # the sequence ran on the very games the leaderboard rates
        assert res.overall.entry(c.name).winrate == pytest.approx(c.estimate)
        assert c.lower <= TRUE[c.name] <= c.upper


# ------------------------------------------------------------------------------------ kill and resume

def _write_toml(path: Path, url: str, run_dir: Path, data: Path) -> Path:
    s = json.dumps
    lines = ["[run]", f"output_dir = {s(str(run_dir))}", "seed = 1", "",
             "[[datasets]]", 'name = "general_qa"', f"path = {s(str(data))}", ""]
    for m in TRUE:
        lines += ["[[models]]", f"name = {s(m)}", f"api_url = {s(url)}", f"identity = {s(m)}", "concurrency = 8",
                  "max_attempts = 8", "[models.generation]", "temperature = 0.0", "max_tokens = 256", ""]
    lines += ["[arena]", 'baseline = "base"', "", "[arena.stop]", 'rule = "decided"', "min_queries = 20",
              "block = 20", "",
              "[judge]", 'name = "sim-judge"', f"api_url = {s(url)}", 'identity = "sim-judge"', "concurrency = 16",
              "max_attempts = 8", "", "[rating]", "rounds = 100", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_kill_and_resume_gives_the_same_decisions_and_request_counts(tmp_path: Path) -> None:
    data = dataset(tmp_path, 150)
    latency = Latency("lognormal", 0.02, 0.5)
    kills = (150, 400)  # answered requests at which the run is killed: before and after the first decisions
    with SimProcess(_sim(latency=latency)) as ref_sim, SimProcess(_sim(latency=latency)) as sim:
        ref_log = tmp_path / "ref"
        ref = cli("run", str(_write_toml(tmp_path / "ref.toml", ref_sim.url, tmp_path / "ref-run", data)),
                  "--quiet", log=ref_log)
        config = _write_toml(tmp_path / "killed.toml", sim.url, tmp_path / "killed-run", data)
        proc = finish = None
        lost = 0
        try:
            for i, point in enumerate(kills):
                log = tmp_path / f"killed-{i}"
                proc = cli("run", str(config), "--quiet", log=log)
                wait_until(lambda: answered_200(sim.stats()) - lost >= point or proc.poll() is not None,  # noqa: B023
                           120, f"kill point {point}", interval=0.01)
                assert proc.poll() is None, f"run {i} ended before its kill point: {output(log)}"
                proc.send_signal(signal.SIGSTOP)
                wait_until(lambda: sim.stats()["in_flight"] == 0, 30, "the simulator to finish what it holds")
                proc.kill()
                assert proc.wait(timeout=30) == -signal.SIGKILL
                lost = answered_200(sim.stats()) - stored(read_run(tmp_path / "killed-run"))
            finish = cli("run", str(config), "--quiet", log=tmp_path / "final")
            assert finish.wait(timeout=120) == 0, output(tmp_path / "final")
            assert ref.wait(timeout=120) == 0, output(ref_log)
            killed_stats, ref_stats = sim.stats(), ref_sim.stats()
        finally:
            stop(ref, proc, finish)
    killed_report = orjson.loads((tmp_path / "killed-run" / "report" / "report.json").read_bytes())
    ref_report = orjson.loads((tmp_path / "ref-run" / "report" / "report.json").read_bytes())
    assert killed_report["stopping"] == ref_report["stopping"]  # the same decisions, after as many queries
    decisions = {c["model"]: (c["judged_queries"], c["reason"]) for c in ref_report["stopping"]["candidates"]}
    assert any(n < 300 for n, _ in decisions.values())
    # the same requests: every distinct request the uninterrupted run sent, and no other
    killed, uninterrupted = read_run(tmp_path / "killed-run"), read_run(tmp_path / "ref-run")
    assert set(killed["generations"].records) == set(uninterrupted["generations"].records)
    assert set(killed["judgments"].records) == set(uninterrupted["judgments"].records)
    assert killed_stats["answered_bodies"] == ref_stats["answered_bodies"] == stored(uninterrupted)
    # at the simulator: per endpoint as many as the uninterrupted run, plus those in flight at the kills
    assert ref_stats["duplicate_requests"] == 0
    assert killed_stats["requests"] == ref_stats["requests"] + killed_stats["duplicate_requests"]
    assert killed_stats["duplicate_requests"] == lost
    print(f"\ndecisions {decisions}; requests: uninterrupted {ref_stats['per_model']}, killed twice "
          f"{killed_stats['per_model']} ({lost} answered in flight at the kills and sent again)")
    assert (tmp_path / "killed-run" / "report" / "leaderboard.txt").read_text() == \
        (tmp_path / "ref-run" / "report" / "leaderboard.txt").read_text()


def test_all_pairs_judges_the_adjacent_pairs_until_the_ranking_is_decided(tmp_path: Path) -> None:
    data = dataset(tmp_path, 100)  # 200 queries

    def make(url: str) -> dict[str, Any]:
        cfg = _config(url, tmp_path / "run", data)
        cfg["run"]["mode"] = "all_pairs"
        return cfg

    res, stats, cfg = _run_on_sim(_sim(), make)
    s = res.stopping
    assert s is not None and len(s.candidates) == 6
    # base and even (49%) cannot be told apart in 200 queries: that adjacent pair is judged to the end,
    # the others stop; the pair of the best and the worst is judged only in the burn-in (min_queries: one
    # block) and the block on its way when the first ranking was made
    assert s.ranking[0] == "strong" and s.ranking[-1] == "weak" and not s.ranking_decided
    assert s.candidate("base vs even").judged == 200 and s.candidate("base vs even").reason == EXHAUSTED
    assert s.candidate("weak vs strong").judged == 2 * 20
    assert s.candidate("base vs strong").reason == BELOW and s.candidate("base vs weak").reason == ABOVE
    judged = sum(c.judged for c in s.candidates)
    assert stats["per_model"]["sim-judge"] == 2 * judged < 0.5 * 2 * 6 * 200
    assert all(done == total for done, total in PROGRESS.values()), PROGRESS
    assert res.overall.entries[0].model == "strong"
    again = anyio.run(lambda: _run(cfg, offline=True))
    assert again.stopping == s
    text = "\n".join(stop_lines(again))
    assert "weak vs strong: stopped after 40 of 200 queries (worse than strong" in text
    assert "ranking NOT decided: strong > " in text and "base vs even: judged on all 200 queries" in text
