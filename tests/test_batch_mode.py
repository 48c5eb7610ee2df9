"""Batch mode (arena_engine.batch) end to end on the simulator's OpenAI Batch API.

The leaderboard equals live mode's for the same seed; the server sees each key in one batch and
answers it once; rows that fail or expire are sent again or kept as failures with the reason; a
cascade's later judge is asked in batch mode after the earlier judge's verdicts; live and batch
endpoints mix in one run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from arena_engine.commands import run_batched
from arena_engine.config import config_from_dict
from arena_engine.errors import ConfigError
from arena_engine.pipeline import Arena, ArenaResults
from arena_engine.report.json_report import report_dict
from arena_engine.report.tables import leaderboard_text
from arena_engine.runfolder import config_to_dict
from arena_engine.sim import Faults, Latency, SimConfig, SimModel, SimServer

from .arena_helpers import dataset

MODELS = ("base", "strong", "weak")
BATCH = {"mode": "batch", "batch": {"poll_interval": 0.02}}


def sim_config(**kw: Any) -> SimConfig:
    models = (SimModel("base", 0.0), SimModel("strong", 1.0), SimModel("weak", -1.0),
              SimModel("sim-judge", judge=True), SimModel("judge-2", judge=True))
    return SimConfig(models=models, seed=3, latency=Latency("fixed", 0.0), batch_seconds=0.1, **kw)


def run_config(url: str, run_dir: Path, data: Path, *, batch_models: tuple[str, ...] = MODELS,
               batch_judge: bool = True, judges: list[dict[str, Any]] | None = None,
               panel: dict[str, Any] | None = None) -> Any:
    def model(m: str) -> dict[str, Any]:
        return {"name": m, "api_url": url, "identity": m, "concurrency": 16, "price_in": 1.0, "price_out": 2.0,
                "generation": {"temperature": 0.0, "max_tokens": 256}, **(BATCH if m in batch_models else {})}

    raw: dict[str, Any] = {
        "run": {"output_dir": str(run_dir), "seed": 1}, "datasets": [{"name": "general_qa", "path": str(data)}],
        "models": [model(m) for m in MODELS], "arena": {"baseline": "base"}, "rating": {"rounds": 100},
    }
    judge = {"name": "sim-judge", "api_url": url, "identity": "sim-judge", "concurrency": 32,
             "price_in": 1.0, "price_out": 2.0, **(BATCH if batch_judge else {})}
    if judges is None:
        raw["judge"] = judge
    else:
        raw["judges"] = judges
        raw["panel"] = panel or {}
    return config_from_dict(raw, source="<test>")


async def batched(cfg: Any) -> ArenaResults:
    return await run_batched(cfg, lambda session: Arena(cfg, batch=session))


async def live(cfg: Any) -> ArenaResults:
    async with Arena(cfg) as arena:
        return await arena.run()


def test_batch_mode_matches_live_and_sends_each_key_once(tmp_path: Path) -> None:
    data = dataset(tmp_path, 12)

    async def main() -> tuple[ArenaResults, ArenaResults, dict[str, Any], dict[str, Any]]:
        async with SimServer(sim_config()) as sim:
            lv = await live(run_config(sim.url, tmp_path / "live", data, batch_models=(), batch_judge=False))
            sim.reset_stats()
            bt = await batched(run_config(sim.url, tmp_path / "batch", data))
            return lv, bt, sim.stats(), sim.stats()["batches"]

    lv, bt, stats, batches = anyio.run(main)
    assert leaderboard_text(bt.boards) == leaderboard_text(lv.boards)
    assert [(g.query_id, g.candidate, g.candidate_is_a, g.outcome) for g in bt.games] == \
        [(g.query_id, g.candidate, g.candidate_is_a, g.outcome) for g in lv.games]
    queries = sum(bt.queries.values())
    keys = 3 * queries + 2 * 2 * queries  # every generation and every judgment, once
    assert stats["requests"] == 0  # nothing went to the live endpoint
    assert batches["keys"] == keys and batches["answered"] == keys
    assert batches["keys_in_two_batches"] == 0 and batches["answered_twice"] == 0
    rep = report_dict(bt)["endpoints"]
    for name in ("base", "strong", "weak", "sim-judge"):
        e = rep[name]
        assert e["mode"] == "batch" and e["cost"] == pytest.approx(0.5 * e["cost_live"])
        assert e["cost_live"] == pytest.approx(report_dict(lv)["endpoints"][name]["cost"])


def test_failed_and_expired_rows_are_resubmitted_or_excluded_with_reason(tmp_path: Path) -> None:
    data = dataset(tmp_path, 12)
    faults = Faults(rate_batch_error=0.05, rate_batch_expire=0.05)

    async def main() -> tuple[ArenaResults, dict[str, Any]]:
        async with SimServer(sim_config(faults=faults)) as sim:
            res = await batched(run_config(sim.url, tmp_path / "run", data))
            return res, sim.stats()["batches"]

    res, batches = anyio.run(main)
    assert batches["row_errors"] + batches["row_expired"] > 0
    assert batches["answered_twice"] == 0
    # every game is rated or excluded with a reason that says what happened
    for g in res.games:
        assert g.outcome is not None or g.reason
    rated = sum(1 for g in res.games if g.outcome is not None)
    assert rated >= 0.95 * len(res.games)
    for g in res.games:
        if g.outcome is None:
            assert "batch" in (g.reason or "") or "no answer" in (g.reason or ""), g.reason


def test_rows_that_keep_failing_end_as_failures_with_the_reason(tmp_path: Path) -> None:
    data = dataset(tmp_path, 3)

    async def main() -> ArenaResults:
        async with SimServer(sim_config(faults=Faults(rate_batch_expire=1.0))) as sim:
            return await batched(run_config(sim.url, tmp_path / "run", data, batch_models=("weak",),
                                            batch_judge=False))

    res = anyio.run(main)
    weak = [g for g in res.games if g.candidate == "weak"]
    assert weak and all(g.outcome is None for g in weak)
    assert all("no answer: weak" in (g.reason or "") for g in weak)
    assert any("batch_failed: batch_expired" in line and "weak" in line for line in res.failure_lines) or \
        res.failures == len(weak) // 2
    strong = [g for g in res.games if g.candidate == "strong"]
    assert strong and all(g.outcome is not None for g in strong)


def test_live_and_batch_endpoints_mix_and_a_cascade_judges_in_batch_mode(tmp_path: Path) -> None:
    data = dataset(tmp_path, 10)

    def judges(url: str, batch: bool) -> list[dict[str, Any]]:
        extra = BATCH if batch else {}
        return [{"name": "sim-judge", "api_url": url, "identity": "sim-judge", **extra},
                {"name": "judge-2", "api_url": url, "identity": "judge-2", **extra}]

    async def main() -> tuple[ArenaResults, ArenaResults, dict[str, Any]]:
        async with SimServer(sim_config()) as sim:
            panel = {"cascade": ["sim-judge", "judge-2"]}
            lv = await live(run_config(sim.url, tmp_path / "live", data, batch_models=(), judges=judges(sim.url, False),
                                       panel=panel))
            sim.reset_stats()
            bt = await batched(run_config(sim.url, tmp_path / "batch", data, batch_models=("strong",),
                                          judges=judges(sim.url, True), panel=panel))
            return lv, bt, sim.stats()

    lv, bt, stats = anyio.run(main)
    assert leaderboard_text(bt.boards) == leaderboard_text(lv.boards)
    second = [g for g in bt.all_games or [] if g.judge == "judge-2"]
    assert second, "the cascade sent no battle on: the test would not cover the later judge"
    assert len(second) < len(bt.all_games or [])
    assert stats["per_model"].get("base") and not stats["per_model"].get("strong")  # live baseline, batch candidate
    assert not stats["per_model"].get("judge-2") and not stats["per_model"].get("sim-judge")
    assert stats["batches"]["answered_twice"] == 0 and stats["batches"]["keys_in_two_batches"] == 0


def test_a_bare_arena_refuses_batch_endpoints(tmp_path: Path) -> None:
    data = dataset(tmp_path, 2)
    cfg = run_config("http://127.0.0.1:9/v1", tmp_path / "run", data)

    async def main() -> None:
        async with Arena(cfg):
            pass

    with pytest.raises(ConfigError, match="run_batched"):
        anyio.run(main)


def test_config_rejects_a_batch_table_in_live_mode(tmp_path: Path) -> None:
    raw = {"run": {"output_dir": str(tmp_path)}, "datasets": [{"name": "d", "path": str(tmp_path)}],
           "models": [{"name": "a", "api_url": "http://x/v1", "batch": {"max_requests": 5}}],
           "judge": {"name": "j", "api_url": "http://x/v1"}}
    with pytest.raises(ConfigError, match=r"models\[0\]\.batch.*live"):
        config_from_dict(raw, source="cfg.toml")
    raw["models"][0]["mode"] = "batch"
    raw["models"][0]["batch"] = {"discount": 1.5}
    with pytest.raises(ConfigError, match="discount"):
        config_from_dict(raw, source="cfg.toml")


def test_input_files_are_cut_by_max_requests(tmp_path: Path) -> None:
    data = dataset(tmp_path, 6)

    async def main() -> dict[str, Any]:
        async with SimServer(sim_config()) as sim:
            cfg = config_from_dict(_with_max(run_config(sim.url, tmp_path / "run", data)), source="<t>")
            await batched(cfg)
            return sim.stats()["batches"]

    batches = anyio.run(main)
    queries = 12
    assert batches["created"] >= 3 * queries // 5  # 5 requests per file at most
    lines = [len(p.read_bytes().splitlines()) for p in (tmp_path / "run" / "batches").glob("pending-*.jsonl")]
    assert lines and max(lines) <= 5


def _with_max(cfg: Any) -> dict[str, Any]:
    raw = config_to_dict(cfg)
    for m in raw["models"]:
        if "batch" in m:
            m["batch"]["max_requests"] = 5
    raw["judge"]["batch"]["max_requests"] = 5
    return raw


def test_dry_run_shows_batches_per_endpoint_and_cost_with_and_without_discount(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from arena_engine.plan import print_plan

    data = dataset(tmp_path, 12)  # 24 queries
    cfg = config_from_dict(_with_max(run_config("http://127.0.0.1:9/v1", tmp_path / "run", data,
                                                batch_models=("strong", "weak"))), source="<t>")
    anyio.run(print_plan, cfg)
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if "batch(es) for" in line}
    assert set(lines) == {"strong", "weak", "sim-judge"}  # the live baseline has no batches
    assert "5 batch(es) for 24 request(s)" in lines["strong"]  # max_requests = 5
    assert "20 batch(es) for 96 request(s)" in lines["sim-judge"]
    cost = float(lines["strong"].split("at most ")[1].split()[0])
    live_cost = float(lines["strong"].split(", ")[-1].split()[0])
    assert cost == pytest.approx(0.5 * live_cost, abs=0.011) and live_cost > 0
    assert "whole run: at most" in out and "without it" in out
