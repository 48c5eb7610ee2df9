"""results_from_store gives exactly the results the run itself computed from its own games: on the
simulator with failed requests and unparseable verdicts, a judge panel (mean, and a cascade), adaptive
stopping and answers imported from EvalScope; and a finished rerun returns them without sending."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from arena_helpers import dataset

from arena_engine.config import RunConfig, config_from_dict
from arena_engine.evalscope_import import load_evalscope_answers
from arena_engine.from_store import results_from_store, results_of_folder
from arena_engine.pipeline import Arena, ArenaResults
from arena_engine.sim import Faults, Latency, SimConfig, SimModel, SimServer
from arena_engine.store import RunStore

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = {"base": 0.0, "strong": 1.0, "weak": -1.0}


def _sim(judges: tuple[str, ...], faults: Faults | None = None) -> SimConfig:
    models = tuple(SimModel(m, quality=q) for m, q in MODELS.items())
    return SimConfig(models=models + tuple(SimModel(j, judge=True) for j in judges), seed=4,
                     latency=Latency("fixed", 0.0), faults=faults or Faults())


def _config(url: str, run_dir: Path, data: Path, *, judges: tuple[str, ...] = ("judge",), attempts: int = 8,
            **arena: Any) -> dict[str, Any]:
    tables = [{"name": j, "api_url": url, "identity": j, "concurrency": 16, "max_attempts": attempts,
               "parse_retries": 0} for j in judges]
    out: dict[str, Any] = {
        "run": {"output_dir": str(run_dir), "seed": 3},
        "datasets": [{"name": "general_qa", "path": str(data)}],
        "models": [{"name": m, "api_url": url, "identity": m, "concurrency": 8, "max_attempts": attempts,
                    "generation": {"temperature": 0.0, "max_tokens": 128}} for m in MODELS],
        "arena": {"baseline": "base", **arena},
        "rating": {"rounds": 50},
    }
    if len(judges) == 1:
        out["judge"] = tables[0]
    else:
        out["judges"] = tables
        out["panel"] = arena.pop("panel", {})
        out["arena"].pop("panel", None)
    return out


def _facts(r: ArenaResults) -> dict[str, Any]:
    """Everything a report is made of, except what says which process sent what, and when."""
    usage = {k: (u.name, u.records, u.shared, u.truncated, u.prompt_tokens, u.completion_tokens,
                 sorted(u.latencies)) for k, u in r.usage.items()}
    return {
        "games": r.games, "all_games": r.all_games, "battles": r.battles,
        "boards": [dataclasses.asdict(b) for b in r.boards], "usage": usage,
        "queries": r.queries, "metric_counts": r.reference_counts,
        "metrics": r.reference_metrics,  # summed exactly: the order answers arrived in does not show
        "panel": None if r.panel is None else (r.panel.judges, r.panel.combine, r.panel.battles_seen,
                                               r.panel.battles, {j: [dataclasses.asdict(b) for b in bs]
                                                                 for j, bs in r.panel.boards.items()}),
        "stopping": None if r.stopping is None else dataclasses.asdict(r.stopping),
    }


def _kinds(r: ArenaResults) -> dict[tuple[str, str, str], int]:
    """(stage, endpoint, kind) -> count of the requests a run's failure lines say failed for good."""
    out: dict[tuple[str, str, str], int] = {}
    for line in r.failure_lines:
        who, rest = line.split(" (", 1)
        n = int(rest.split("): ", 1)[1].split(" ", 1)[0])
        stage = "judgment" if who.startswith("j") else "generation"
        out[(stage, who, line)] = n
    return out


def _run(sim_cfg: SimConfig, make: Any) -> tuple[ArenaResults, RunConfig, int]:
    """The run's own results, its config, and the requests a second run (a rerun) sent."""
    async def main() -> tuple[ArenaResults, RunConfig, int]:
        async with SimServer(sim_cfg) as sim:
            cfg = config_from_dict(make(sim.url), source="<test>")
            async with Arena(cfg) as arena:
                own = await arena.run()
            return own, cfg, sum(sim.stats()["per_model"].values())
    return anyio.run(main)


CASES = {
    "failures": ({"judge": ("judge",), "faults": Faults(rate_500=0.15, rate_bad_verdict=0.1), "attempts": 1}, {}),
    "panel": ({"judge": ("j1", "j2")}, {"panel": {"combine": "mean"}}),
    "cascade": ({"judge": ("j1", "j2")}, {"panel": {"cascade": ["j1", "j2"], "calibration": 0.1}}),
    "stopping": ({"judge": ("judge",)}, {"stop": {"rule": "decided", "min_queries": 10, "block": 10}}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_store_gives_the_runs_own_results(case: str, tmp_path: Path) -> None:
    sim_opts, arena = CASES[case]
    data = dataset(tmp_path, 30)
    judges = sim_opts["judge"]
    own, cfg, _ = _run(_sim(judges, sim_opts.get("faults")),
                       lambda url: _config(url, tmp_path / "run", data, judges=judges,
                                           attempts=sim_opts.get("attempts", 8), **arena))
    if case == "failures":
        assert own.failures > 0 and any(g.reason and g.reason.startswith("unparseable") for g in own.games)
    if case == "stopping":
        assert own.stopping is not None
    got = results_of_folder(cfg)
    assert _facts(got) == _facts(own)
    # a run counts an answer that failed for good as a failure (its rerun asks again); the store, which
    # keeps only judge failures by battle, counts it as missing: the sum and the games are the same
    generation_failures = sum(n for (stage, _, _), n in _kinds(own).items() if stage == "generation")
    assert got.missing == own.missing + generation_failures
    assert got.failures == own.failures - generation_failures
    assert got.failure_lines == []


def test_a_finished_rerun_sends_nothing_and_gives_the_same_results(tmp_path: Path) -> None:
    data = dataset(tmp_path, 20)

    def make(url: str) -> dict[str, Any]:
        return _config(url, tmp_path / "run", data)

    first, _, _ = _run(_sim(("judge",)), make)
    again, cfg, sent = _run(_sim(("judge",)), make)
    assert sent == 0
    assert _facts(again) == _facts(first) and again.missing == first.missing == 0
    with RunStore(cfg.output_dir) as store:
        assert _facts(results_from_store(store, cfg)) == _facts(first)


def test_imported_answers_read_back_as_the_run_used_them(tmp_path: Path) -> None:
    report = FIXTURES / "evalscope_run" / "20250702_204346" / "reports" / "qwen2.5-7b-instruct"
    answers = load_evalscope_answers(report)
    data = tmp_path / "general_qa"
    data.mkdir()
    for subset in ("arena", "example"):  # the dataset the report answered
        rows = sorted((a for a in answers if a.subset == subset), key=lambda a: a.index)
        (data / f"{subset}.jsonl").write_bytes(b"".join(
            orjson.dumps({"query": a.question, **({"response": a.reference} if a.reference else {})}) + b"\n"
            for a in rows))

    def make(url: str) -> dict[str, Any]:
        return {
            "run": {"output_dir": str(tmp_path / "run")},
            "datasets": [{"name": "general_qa", "path": str(data)}],
            "models": [{"name": "qwen2.5-7b", "evalscope_report": str(report)},
                       {"name": "cand", "api_url": url, "identity": "cand"}],
            "arena": {"baseline": "qwen2.5-7b"},
            "judge": {"name": "judge", "api_url": url, "identity": "judge"},
            "rating": {"rounds": 50},
        }

    sim_cfg = SimConfig(models=(SimModel("cand", quality=0.5), SimModel("judge", judge=True)), seed=2)
    own, cfg, _ = _run(sim_cfg, make)
    assert own.usage["qwen2.5-7b"].records > 0
    assert _facts(results_of_folder(cfg)) == _facts(own)
