"""The whole arena on the simulator: streaming, both orders, exclusions, win rates, resume."""

from __future__ import annotations

from pathlib import Path

import anyio
import orjson
from arena_helpers import arena_config, dataset

from arena_engine.pipeline import Arena, ArenaResults
from arena_engine.report import write_reports
from arena_engine.sim import Faults, Latency, SimConfig, SimModel, SimServer

MODELS = [("base", 0.0), ("strong", 1.0), ("weak", -1.0)]


def _sim(bad_verdicts: float = 0.0) -> SimConfig:
    return SimConfig(
        models=tuple(SimModel(n, quality=q) for n, q in MODELS) + (SimModel("sim-judge", judge=True),),
        seed=3,
        latency=Latency("lognormal", 0.02, 0.5),
        faults=Faults(rate_bad_verdict=bad_verdicts),
    )


async def _run(sim_cfg: SimConfig, run_dir: Path, data: Path) -> tuple[ArenaResults, dict]:
    async with SimServer(sim_cfg) as sim:
        cfg = arena_config(sim.url, run_dir, data, [n for n, _ in MODELS])
        async with Arena(cfg) as arena:
            results = await arena.run()
        return results, sim.stats()


def test_streamed_arena_with_garbage_verdicts(tmp_path: Path) -> None:
    n = 40
    data = dataset(tmp_path, n)
    results, stats = anyio.run(_run, _sim(bad_verdicts=0.45), tmp_path / "run", data)
    queries = 2 * n  # two subsets
    pairs = 2  # two candidates against the baseline

    # every model answered every query once; the judge saw 2 distinct prompts per pair and query
    for name, _ in MODELS:
        assert stats["per_model"][name] == queries
    judged = {(g.dataset, g.subset, g.query_id, g.candidate, g.candidate_is_a) for g in results.games}
    assert len(judged) == queries * pairs * 2
    assert len(results.games) == queries * pairs * 2
    # unparseable verdicts were retried, so the judge got more requests than games
    assert stats["per_model"]["sim-judge"] > queries * pairs * 2

    # streamed: judging started while generations were still arriving
    last_generation = max(stats["last_request"][name] for name, _ in MODELS)
    assert stats["first_request"]["sim-judge"] < last_generation

    # garbage that survived the retries is excluded, counted per subset, and never silently dropped
    excluded = [g for g in results.games if g.outcome is None]
    assert excluded, "with 45% garbage and 3 tries, some games must stay unparseable"
    assert all(g.reason and g.reason.startswith("unparseable verdict") for g in excluded)
    report = orjson.loads(write_reports(results)["json"].read_bytes())
    assert sum(s["excluded"] for s in report["subsets"]) == len(excluded)

    # the win rates follow the simulator's latent qualities
    overall = results.overall
    assert [e.model for e in overall.entries] == ["strong", "base", "weak"]
    assert overall.entry("base").winrate == 0.5
    assert overall.entry("strong").lower > 0.5 > overall.entry("weak").upper


def test_rerun_resumes_without_requests(tmp_path: Path) -> None:
    data = dataset(tmp_path, 15)
    first, stats1 = anyio.run(_run, _sim(), tmp_path / "run", data)
    second, stats2 = anyio.run(_run, _sim(), tmp_path / "run", data)
    assert stats1["requests"] > 0
    assert stats2["requests"] == 0, "a finished run must not send anything again"
    assert [(e.model, e.winrate, e.lower, e.upper) for e in first.overall.entries] == [
        (e.model, e.winrate, e.lower, e.upper) for e in second.overall.entries
    ]


def test_all_pairs_mode_with_a_cap_and_structured_output(tmp_path: Path) -> None:
    data = dataset(tmp_path, 30)

    async def main() -> tuple[ArenaResults, ArenaResults, dict]:
        async with SimServer(_sim()) as sim:
            names = [n for n, _ in MODELS]
            full = arena_config(sim.url, tmp_path / "all", data, names, mode="all_pairs")
            async with Arena(full) as arena:
                all_pairs = await arena.run()
            capped = arena_config(sim.url, tmp_path / "capped", data, names, mode="all_pairs", max_pairs_per_query=2)
            from dataclasses import replace

            capped = replace(capped, judge=replace(capped.judge, structured_output=True))
            async with Arena(capped) as arena:
                capped_results = await arena.run()
            return all_pairs, capped_results, sim.stats()

    all_pairs, capped, _ = anyio.run(main)
    queries = 60
    # every pair of the three models, both orders, on every query
    pairs = {(g.candidate, g.opponent) for g in all_pairs.games}
    assert pairs == {("base", "strong"), ("base", "weak"), ("strong", "weak")}
    assert len(all_pairs.games) == queries * 3 * 2
    assert [e.model for e in all_pairs.overall.entries] == ["strong", "base", "weak"]
    # the cap keeps two of the three pairs per query (both orders each), chosen per query
    per_query: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
    for g in capped.games:
        per_query.setdefault((g.dataset, g.subset, g.query_id), set()).add((g.candidate, g.opponent))
    assert len(per_query) == queries and all(len(p) == 2 for p in per_query.values())
    assert len({frozenset(p) for p in per_query.values()}) > 1
    assert len(capped.games) == queries * 2 * 2
    assert all(g.outcome is not None for g in capped.games)


def test_report_from_the_checkpoints_shows_the_runs_failed_judgments(tmp_path: Path) -> None:
    """`arena-engine report` (an offline run) gives every game the reason the run gave it, also for
    judge requests that failed for good (not 'not judged yet')."""
    from dataclasses import replace

    from arena_engine.client import RetryPolicy

    data = dataset(tmp_path, 15)
    sim_cfg = replace(_sim(), faults=Faults(rate_503=0.3))

    async def main() -> tuple[ArenaResults, ArenaResults]:
        async with SimServer(sim_cfg) as sim:
            cfg = arena_config(sim.url, tmp_path / "run", data, [n for n, _ in MODELS])
            judge = replace(cfg.judge, endpoint=replace(cfg.judge.endpoint, retry=RetryPolicy(max_attempts=1)))
            cfg = replace(cfg, judge=judge)
            async with Arena(cfg) as arena:
                run = await arena.run()
        async with Arena(cfg, offline=True) as arena:
            return run, await arena.run()

    run, report = anyio.run(main)
    failed = [g for g in run.games if g.reason and g.reason.startswith("judge request failed")]
    assert len(failed) >= 10
    assert report.games == run.games
    assert report.failures == run.failures == len(failed)
