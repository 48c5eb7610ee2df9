"""Whose answer is whose: identities in the checkpoint keys, single-flight, legacy folders, re-asking
excluded verdicts, and the run's accounting read from its records."""

from __future__ import annotations

import shutil
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from arena_helpers import dataset
from interrupt_helpers import cli, read_checkpoint, stop, wait_until

from arena_engine.config import config_from_dict
from arena_engine.errors import ConfigError
from arena_engine.pipeline import Arena, ArenaResults
from arena_engine.report import write_reports
from arena_engine.sim import Faults, Latency, SimConfig, SimModel, SimServer
from arena_engine.sim.process import SimProcess

FIXTURES = Path(__file__).parent / "fixtures"


def _config(models: list[dict[str, Any]], judge_url: str, run_dir: Path, data: Path, *, baseline: str,
            judge: dict[str, Any] | None = None, **run: Any) -> dict[str, Any]:
    gen = {"temperature": 0.0, "max_tokens": 256}
    return {
        "run": {"output_dir": str(run_dir), "seed": 1, **run},
        "datasets": [{"name": "general_qa", "path": str(data)}],
        "models": [{"concurrency": 8, "max_attempts": 8, "generation": gen, **m} for m in models],
        "arena": {"baseline": baseline},
        "judge": {"name": "sim-judge", "api_url": judge_url, "identity": "sim-judge", "concurrency": 16,
                  "max_attempts": 8, **(judge or {})},
        "rating": {"rounds": 200},
    }


async def _run(cfg: dict[str, Any], **arena: Any) -> ArenaResults:
    async with Arena(config_from_dict(cfg, source="<test>"), **arena) as a:
        return await a.run()


def test_same_model_id_on_two_providers_are_two_models(tmp_path: Path) -> None:
    """Provider A serves 'm' well, provider B serves 'm' badly: each entry gets its own answers."""
    n = 30
    data = dataset(tmp_path, n)

    async def main() -> tuple[ArenaResults, dict[str, Any], dict[str, Any], dict[str, Any]]:
        # the judge's simulator reads each answer's quality from its tag: the providers tag their 'm'
        judge_sim = SimConfig(models=(SimModel("base"), SimModel("m-good", quality=1.5),
                                      SimModel("m-bad", quality=-1.5), SimModel("sim-judge", judge=True)), seed=5)
        good = SimConfig(models=(SimModel("m", quality=1.5, tag="m-good"),), seed=5)
        bad = SimConfig(models=(SimModel("m", quality=-1.5, tag="m-bad"),), seed=5)
        async with SimServer(judge_sim) as js, SimServer(good) as a, SimServer(bad) as b:
            cfg = _config([{"name": "base", "api_url": js.url},
                           {"name": "provider-a", "model": "m", "api_url": a.url},
                           {"name": "provider-b", "model": "m", "api_url": b.url}],
                          js.url, tmp_path / "run", data, baseline="base")
            res = await _run(cfg)
            return res, js.stats(), a.stats(), b.stats()

    results, _, stats_a, stats_b = anyio.run(main)
    queries = 2 * n
    # each server was sent exactly its own queries, once each
    assert stats_a["per_model"] == {"m": queries} and stats_a["duplicate_requests"] == 0
    assert stats_b["per_model"] == {"m": queries} and stats_b["duplicate_requests"] == 0
    gens = read_checkpoint(tmp_path / "run" / "checkpoints" / "generations.jsonl")
    per_model = Counter(r["model"] for r in gens.records.values())
    assert per_model == {"base": queries, "provider-a": queries, "provider-b": queries}
    per_query = Counter((r["model"], r["subset"], r["query_id"]) for r in gens.records.values())
    assert set(per_query.values()) == {1}, "one record per model per query"
    answers_a = {(r["subset"], r["query_id"]): r["answer"] for r in gens.records.values() if r["model"] == "provider-a"}
    answers_b = {(r["subset"], r["query_id"]): r["answer"] for r in gens.records.values() if r["model"] == "provider-b"}
    assert all(answers_a[k] != answers_b[k] for k in answers_a), "provider B's answers must be its own"
    board = results.overall
    assert board.entry("provider-a").winrate > 0.6 > 0.4 > board.entry("provider-b").winrate


def test_identical_judge_prompts_are_sent_once(tmp_path: Path) -> None:
    """Two configured models that give the same answers: each distinct judge prompt is sent once."""
    n = 12
    data = dataset(tmp_path, n)

    async def main() -> tuple[ArenaResults, dict[str, Any]]:
        sim_cfg = SimConfig(models=(SimModel("base"), SimModel("twin", quality=0.5), SimModel("sim-judge", judge=True)),
                            seed=2, latency=Latency("fixed", 0.02))
        async with SimServer(sim_cfg) as sim:
            cfg = _config([{"name": "base", "api_url": sim.url},
                           {"name": "twin-1", "model": "twin", "api_url": sim.url},
                           {"name": "twin-2", "model": "twin", "api_url": sim.url}],
                          sim.url, tmp_path / "run", data, baseline="base")
            res = await _run(cfg)
            return res, sim.stats()

    results, stats = anyio.run(main)
    queries = 2 * n
    assert stats["per_model"]["twin"] == 2 * queries  # two configured models, two identities: both asked
    # same answers, so the two twins' battles have byte-identical judge prompts: 2 orders x queries
    assert stats["per_model"]["sim-judge"] == 2 * queries
    assert stats["duplicate_requests"] == queries  # only the twins' generations (two models, same body)
    assert len(results.games) == 2 * 2 * queries
    assert all(g.outcome is not None for g in results.games)
    usage = results.usage["\0judge"]
    assert usage.requests == 2 * queries and usage.records == 2 * queries and usage.shared == 2 * queries
    for g1 in results.games:
        if g1.candidate == "twin-1":
            g2 = next(g for g in results.games if g.candidate == "twin-2" and g.query_id == g1.query_id
                      and g.subset == g1.subset and g.candidate_is_a == g1.candidate_is_a)
            assert g2.outcome == g1.outcome and g2.judgment_key == g1.judgment_key


def test_reuse_answers_of_shares_answers_and_is_checked(tmp_path: Path) -> None:
    n = 6
    data = dataset(tmp_path, n)

    async def main() -> dict[str, Any]:
        sim_cfg = SimConfig(models=(SimModel("base"), SimModel("m"), SimModel("sim-judge", judge=True)), seed=2)
        async with SimServer(sim_cfg) as sim:
            cfg = _config([{"name": "base", "api_url": sim.url},
                           {"name": "m-direct", "model": "m", "api_url": sim.url},
                           {"name": "m-mirror", "model": "m", "api_url": sim.url + "/", "reuse_answers_of": "m-direct"}],
                          sim.url, tmp_path / "run", data, baseline="base")
            await _run(cfg)
            return sim.stats()

    stats = anyio.run(main)
    assert stats["per_model"]["m"] == 2 * n  # asked once for both entries
    base = {"name": "x", "api_url": "http://127.0.0.1:9/v1"}
    bad = _config([base, {**base, "name": "y", "reuse_answers_of": "nobody"}], base["api_url"], tmp_path, data,
                  baseline="x")
    with pytest.raises(ConfigError, match=r"models\[1\]\.reuse_answers_of.*must name another model"):
        config_from_dict(bad, source="cfg.toml")
    bad = _config([base, {**base, "name": "y", "model": "other", "reuse_answers_of": "x"}], base["api_url"],
                  tmp_path, data, baseline="x")
    with pytest.raises(ConfigError, match="same model id and generation params"):
        config_from_dict(bad, source="cfg.toml")


def test_moving_to_a_mirror_url_pays_again_unless_the_identity_says_so(tmp_path: Path) -> None:
    n = 4
    data = dataset(tmp_path, n)

    async def main() -> list[int]:
        sim_cfg = SimConfig(models=(SimModel("base"), SimModel("cand"), SimModel("sim-judge", judge=True)), seed=2)
        sent = []
        async with SimServer(sim_cfg) as one, SimServer(sim_cfg) as two:
            for url, identity in ((one.url, None), (two.url, None), (one.url, None), (two.url, f"cand @ {one.url}")):
                cand = {"name": "cand", "api_url": url, **({"identity": identity} if identity else {})}
                before = one.stats()["per_model"].get("cand", 0) + two.stats()["per_model"].get("cand", 0)
                await _run(_config([{"name": "base", "api_url": one.url, "identity": "base"}, cand], one.url,
                                   tmp_path / "run", data, baseline="base"))
                sent.append(one.stats()["per_model"].get("cand", 0) + two.stats()["per_model"].get("cand", 0) - before)
        return sent

    # first run; a new URL is a new provider; back on the first URL: reused; the mirror says who it is: reused
    assert anyio.run(main) == [2 * n, 2 * n, 0, 0]


def test_a_folder_written_by_release_0_1_0_is_reused(tmp_path: Path) -> None:
    """tests/fixtures/legacy_run_0_1_0: `arena-engine demo --queries 3` run by release 0.1.0 (0bc0dd6)."""
    legacy = FIXTURES / "legacy_run_0_1_0"
    run_dir = tmp_path / "run"
    shutil.copytree(legacy / "checkpoints", run_dir / "checkpoints")
    data = tmp_path / "data"
    shutil.copytree(legacy / "data", data)
    old_gens = read_checkpoint(run_dir / "checkpoints" / "generations.jsonl").records
    old_judgments = read_checkpoint(run_dir / "checkpoints" / "judgments.jsonl").records

    async def main() -> tuple[ArenaResults, dict[str, Any]]:
        from arena_engine.demo import demo_config, demo_sim_config

        async with SimServer(demo_sim_config(seed=0)) as sim:
            cfg = demo_config(sim.url, tmp_path, data, seed=0)  # output_dir = tmp_path / "run"
            async with Arena(cfg) as arena:
                res = await arena.run()
            return res, sim.stats()

    results, stats = anyio.run(main)
    assert stats["requests"] == 0, "nothing the old release paid for may be asked again"
    assert all(g.outcome is not None for g in results.games) and len(results.games) == 2 * 2 * 6
    # the records were copied under their new keys, the old ones stay
    gens = read_checkpoint(run_dir / "checkpoints" / "generations.jsonl").records
    assert len(gens) == 2 * len(old_gens)
    assert len(read_checkpoint(run_dir / "checkpoints" / "judgments.jsonl").records) == 2 * len(old_judgments)
    from arena_engine.report.tables import parse_leaderboard

    write_reports(results)
    now = parse_leaderboard((run_dir / "report" / "leaderboard.txt").read_text())
    then = parse_leaderboard((legacy / "leaderboard.txt").read_text())
    assert {m: v[0] for m, v in now["OVERALL"].items()} == {m: v[0] for m, v in then["OVERALL"].items()}


def _garbage_sim(rate: float) -> SimConfig:
    return SimConfig(models=(SimModel("base"), SimModel("cand", quality=1.0), SimModel("sim-judge", judge=True)),
                     seed=4, faults=Faults(rate_bad_verdict=rate))


def test_retry_excluded_asks_again_and_keeps_the_old_records(tmp_path: Path) -> None:
    n = 20
    data = dataset(tmp_path, n)

    async def run(rate: float, **arena: Any) -> tuple[ArenaResults, dict[str, Any]]:
        async with SimServer(_garbage_sim(rate)) as sim:
            cfg = _config([{"name": "base", "api_url": sim.url, "identity": "base"},
                           {"name": "cand", "api_url": sim.url, "identity": "cand"}],
                          sim.url, tmp_path / "run", data, baseline="base", judge={"parse_retries": 0})
            res = await _run(cfg, **arena)
            return res, sim.stats()

    first, _ = anyio.run(run, 0.3)
    excluded = [g for g in first.games if g.outcome is None]
    assert 0.15 * len(first.games) < len(excluded) < 0.45 * len(first.games)
    again, stats = anyio.run(run, 0.0)  # a plain rerun reuses the exclusions
    assert stats["per_model"].get("sim-judge", 0) == 0
    assert sum(g.outcome is None for g in again.games) == len(excluded)
    healed, stats = anyio.run(lambda: run(0.0, retry_excluded=True))
    assert stats["per_model"]["sim-judge"] == len(excluded)  # only the excluded games were asked again
    assert sum(g.outcome is None for g in healed.games) == 0
    records = read_checkpoint(tmp_path / "run" / "checkpoints" / "judgments.jsonl").records.values()
    assert sum(r.get("verdict") is None for r in records) == len(excluded), "the old verdicts' records stay"
    later, stats = anyio.run(run, 0.0)  # and a later plain rerun uses the new verdicts
    assert stats["requests"] == 0 and sum(g.outcome is None for g in later.games) == 0


def _accounting(report: dict[str, Any]) -> dict[str, Any]:
    return {name: (e["records"], e["prompt_tokens"], e["completion_tokens"], e["cost"])
            for name, e in report["endpoints"].items()}


@pytest.mark.slow
def test_killed_and_resumed_run_reports_the_whole_runs_cost(tmp_path: Path) -> None:
    n = 40
    data = dataset(tmp_path, n)
    sim_cfg = SimConfig(models=(SimModel("base"), SimModel("strong", quality=1.0), SimModel("weak", quality=-1.0),
                                SimModel("sim-judge", judge=True)), seed=7, latency=Latency("lognormal", 0.03, 0.5))

    def write(url: str, run_dir: Path, name: str) -> Path:
        priced = {"price_in": 1.0, "price_out": 2.0}
        cfg = _config([{"name": m, "api_url": url, "identity": m, **priced} for m in ("base", "strong", "weak")],
                      url, run_dir, data, baseline="base", judge={"price_in": 3.0, "price_out": 4.0})
        path = tmp_path / f"{name}.json"
        path.write_bytes(orjson.dumps(cfg))
        return path

    with SimProcess(sim_cfg) as ref_sim, SimProcess(sim_cfg) as sim:
        ref = cli("run", str(write(ref_sim.url, tmp_path / "ref", "ref")), "--quiet", log=tmp_path / "ref")
        proc = None
        try:
            config = write(sim.url, tmp_path / "killed", "killed")
            proc = cli("run", str(config), "--quiet", log=tmp_path / "killed-1")
            wait_until(lambda: sim.stats()["requests"] >= 150 or proc.poll() is not None, 60, "150 requests")  # type: ignore[union-attr]
            assert proc.poll() is None, "the run ended before it could be killed"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            resumed = cli("run", str(config), "--quiet", log=tmp_path / "killed-2")
            assert resumed.wait(timeout=120) == 0
            assert ref.wait(timeout=120) == 0
        finally:
            stop(proc, ref)
    resumed_report = orjson.loads((tmp_path / "killed" / "report" / "report.json").read_bytes())
    ref_report = orjson.loads((tmp_path / "ref" / "report" / "report.json").read_bytes())
    report = cli("report", str(tmp_path / "killed"), log=tmp_path / "report")
    assert report.wait(timeout=120) == 0
    offline = orjson.loads((tmp_path / "killed" / "report" / "report.json").read_bytes())

    assert _accounting(resumed_report) == _accounting(ref_report) == _accounting(offline)
    assert all(e["cost"] > 0 for e in offline["endpoints"].values())
    for name, e in offline["endpoints"].items():
        assert e["requests"] == 0 and e["reused"] == e["records"] > 0  # report sent nothing, reused everything
        # latency percentiles come from the records: the same after the resume and in `report`
        assert e["latency"] == resumed_report["endpoints"][name]["latency"]
        assert set(e["latency"]) == {"p50", "p90", "p99", "max"} and e["latency"]["p50"] > 0.005
        # (against the uninterrupted run, latency is measured, not content: it differs by the client's own
        # overhead, 6-200 ms here on a loaded 2-core box, so only tokens and cost are compared exactly)
    assert offline["processes"]["runs"] == 2 and offline["processes"]["interrupted"] == 1
    assert offline["processes"]["note"]


def test_dry_run_counts_what_the_folder_already_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from arena_engine.plan import plan, print_plan

    n = 5
    data = dataset(tmp_path, n)
    queries = 2 * n

    async def main() -> None:
        async with SimServer(_garbage_sim(0.0)) as sim:
            cfg = config_from_dict(_config([{"name": "base", "api_url": sim.url}, {"name": "cand", "api_url": sim.url}],
                                           sim.url, tmp_path / "run", data, baseline="base"), source="<test>")
            rows, note = plan(cfg)
            assert note is None and [(r.requests, r.reused) for r in rows] == [(queries, 0), (queries, 0),
                                                                               (2 * queries, 0)]
            async with Arena(cfg) as arena:
                await arena.run()
            rows, note = plan(cfg)
            assert note is None
            assert [(r.requests, r.reused, r.to_send) for r in rows] == [(queries, queries, 0), (queries, queries, 0),
                                                                         (2 * queries, 2 * queries, 0)]
            await print_plan(cfg)

    anyio.run(main)
    out = capsys.readouterr().out
    assert "reused" in out and "to send" in out and "cand @ http://127.0.0.1:" in out


def test_answers_cut_off_by_the_budget_are_counted(tmp_path: Path) -> None:
    data = dataset(tmp_path, 5)

    async def main() -> ArenaResults:
        async with SimServer(_garbage_sim(0.0)) as sim:
            cfg = _config([{"name": "base", "api_url": sim.url},
                           {"name": "cand", "api_url": sim.url, "generation": {"max_tokens": 3}}],
                          sim.url, tmp_path / "run", data, baseline="base")
            return await _run(cfg)

    results = anyio.run(main)
    assert results.usage["cand"].truncated == results.usage["cand"].records == 10
    assert results.usage["base"].truncated == 0
    report = orjson.loads(write_reports(results)["json"].read_bytes())
    assert report["endpoints"]["cand"]["truncated"] == 10
