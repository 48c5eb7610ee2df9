"""Answers imported from an EvalScope run battle without being generated again."""

from __future__ import annotations

from pathlib import Path

import anyio
import orjson

from arena_engine.config import config_from_dict
from arena_engine.evalscope_import import load_evalscope_answers
from arena_engine.pipeline import Arena, ArenaResults
from arena_engine.sim import SimConfig, SimModel, SimServer

RUN = Path(__file__).parent / "fixtures" / "evalscope_run" / "20250702_204346"
REPORT = RUN / "reports" / "qwen2.5-7b-instruct"


def test_imported_baseline_battles_a_generated_candidate(tmp_path: Path) -> None:
    answers = load_evalscope_answers(REPORT)
    data = tmp_path / "general_qa"
    data.mkdir()
    for subset in ("arena", "example"):
        rows = sorted((a for a in answers if a.subset == subset), key=lambda a: a.index)
        assert [a.index for a in rows] == list(range(len(rows)))
        (data / f"{subset}.jsonl").write_bytes(b"".join(
            orjson.dumps({"query": a.question, **({"response": a.reference} if a.reference else {})}) + b"\n"
            for a in rows))

    async def main() -> tuple[ArenaResults, dict]:
        sim_cfg = SimConfig(models=(SimModel("cand", quality=0.5), SimModel("judge", judge=True)), seed=2)
        async with SimServer(sim_cfg) as sim:
            cfg = config_from_dict({
                "run": {"output_dir": str(tmp_path / "run")},
                "datasets": [{"name": "general_qa", "path": str(data)}],
                "models": [
                    {"name": "qwen2.5-7b", "evalscope_report": str(REPORT)},
                    {"name": "cand", "api_url": sim.url},
                ],
                "arena": {"baseline": "qwen2.5-7b"},
                "judge": {"name": "judge", "api_url": sim.url},
                "rating": {"rounds": 100},
            }, source="<test>")
            async with Arena(cfg) as arena:
                results = await arena.run()
            return results, sim.stats()

    results, stats = anyio.run(main)
    n = len(answers)
    assert stats["per_model"] == {"cand": n, "judge": 2 * n}, "the imported model is never asked"
    assert len(results.games) == 2 * n and all(g.outcome is not None for g in results.games)
    # the judge saw the imported answers word for word
    prompts = [rec for rec in _records(tmp_path / "run" / "checkpoints" / "generations.jsonl")
               if rec.get("imported_from")]
    assert sorted(r["answer"] for r in prompts) == sorted(a.answer for a in answers)


def _records(path: Path) -> list[dict]:
    from arena_engine.store import RunStore

    with RunStore(path.parent.parent) as store:
        return list(store.records("generations"))
