"""Answers imported from an EvalScope run battle without being generated again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import orjson
import pytest

from arena_engine.config import RunConfig, config_from_dict
from arena_engine.errors import ConfigError, ImportMismatchError
from arena_engine.evalscope_import import load_evalscope_answers
from arena_engine.pipeline import Arena, ArenaResults
from arena_engine.runfolder import config_to_dict
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
                    {"name": "cand", "api_url": sim.url, "identity": "cand"},
                ],
                "arena": {"baseline": "qwen2.5-7b"},
                "judge": {"name": "judge", "api_url": sim.url, "identity": "judge"},
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


def _shuffled_dataset(folder: Path) -> Path:
    """The fixture's questions in another order than the EvalScope indices, one of them replaced:
    a row index would pair "How does photosynthesis work?" with the Mockingbird row's answer."""
    answers = load_evalscope_answers(REPORT)
    by_index = {(a.subset, a.index): a.question for a in answers}
    folder.mkdir()
    orders = {"arena": [2, 0, 1], "example": [1, 0, None]}
    for subset, order in orders.items():
        questions = [by_index[(subset, i)] if i is not None else "How does photosynthesis work?" for i in order]
        (folder / f"{subset}.jsonl").write_bytes(b"".join(orjson.dumps({"query": q}) + b"\n" for q in questions))
    return folder


def _import_config(tmp_path: Path, url: str, data: Path, **model: str) -> RunConfig:
    return config_from_dict({
        "run": {"output_dir": str(tmp_path / "run")},
        "datasets": [{"name": "general_qa", "path": str(data)}],
        "models": [{"name": "qwen2.5-7b", "evalscope_report": str(REPORT), **model}, {"name": "cand", "api_url": url, "identity": "cand"}],
        "arena": {"baseline": "qwen2.5-7b"},
        "judge": {"name": "judge", "api_url": url, "identity": "judge"},
        "rating": {"rounds": 50},
    }, source="<test>")


def _run_import(tmp_path: Path, data: Path, *, shard: tuple[int, int] | None = None,
                **model: str) -> tuple[ArenaResults, dict, int]:
    async def main() -> tuple[ArenaResults, dict, int]:
        sim_cfg = SimConfig(models=(SimModel("cand", quality=0.5), SimModel("judge", judge=True)), seed=2)
        async with SimServer(sim_cfg) as sim:
            async with Arena(_import_config(tmp_path, sim.url, data, **model), part=shard) as arena:
                results = await arena.run()
                reused = arena.stages["qwen2.5-7b"].reused
            return results, sim.stats(), reused

    return anyio.run(main)


def test_shuffled_run_with_a_changed_question_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    data = _shuffled_dataset(tmp_path / "general_qa")
    sent: list[dict] = []

    async def main() -> None:
        sim_cfg = SimConfig(models=(SimModel("cand", quality=0.5), SimModel("judge", judge=True)), seed=2)
        async with SimServer(sim_cfg) as sim:
            try:
                async with Arena(_import_config(tmp_path, sim.url, data)) as arena:
                    await arena.run()
            finally:
                sent.append(sim.stats())

    with pytest.raises(ImportMismatchError) as info:
        anyio.run(main)
    message = str(info.value)
    review = RUN / "reviews" / "qwen2.5-7b-instruct" / "general_qa_example.jsonl"
    assert f"{review}:3: question: \"Who wrote 'To Kill a Mockingbird'?\"" in message
    assert "the dataset's question at index 2 (id '2', line 3) is 'How does photosynthesis work?'" in message
    assert "evalscope_mismatch = \"warn\"" in message
    assert sent[0]["per_model"].get("cand", 0) == 0 and sent[0]["per_model"].get("judge", 0) == 0


def test_shuffled_run_with_warn_pairs_answers_by_question_and_skips_the_changed_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _shuffled_dataset(tmp_path / "general_qa")
    with caplog.at_level("WARNING", logger="arena_engine.evalscope_import"):
        results, stats, reused = _run_import(tmp_path, data, evalscope_mismatch="warn")
    warnings = [r.getMessage() for r in caplog.records if r.name == "arena_engine.evalscope_import"]
    assert len(warnings) == 1
    assert "model 'qwen2.5-7b': 1 of 6 imported EvalScope row(s) match no query and are skipped " \
           "(general_qa/example: 1)" in warnings[0]
    imported = {(r["subset"], r["query_id"]): r for r in _records(tmp_path / "run" / "checkpoints" / "generations.jsonl")
                if r.get("imported_from")}
    assert {k: r["answer"] for k, r in imported.items()} == {
        ("arena", "0"): "多读多写，坚持练习，并请别人给你反馈。",
        ("arena", "1"): "Plan your day, set priorities, and limit distractions.",
        ("arena", "2"): "Exercise, sleep well, and talk to people you trust.",
        ("example", "0"): "The blue whale is the largest mammal.",
        ("example", "1"): "Paris is the capital of France.",
    }
    assert all(r["question"] in {q for q in _questions(data)} for r in imported.values())
    assert imported[("example", "0")]["imported_row"].endswith("general_qa_example.jsonl:1")
    # the photosynthesis query has no imported answer: it is missing, its two games have no outcome
    assert results.missing == 1 and stats["per_model"]["cand"] == 6
    no_answer = [g for g in results.games if g.outcome is None]
    assert [(g.subset, g.query_id) for g in no_answer] == [("example", "2")] * 2
    assert reused == 0
    # a rerun reuses the same imports: no new record, every import a cache hit
    again, stats, reused = _run_import(tmp_path, data, evalscope_mismatch="warn")
    assert reused == 5 and stats["per_model"] == {}
    assert [g.outcome for g in again.games] == [g.outcome for g in results.games]
    assert len(_records(tmp_path / "run" / "checkpoints" / "generations.jsonl")) == 5 + 6


def test_a_shard_pairs_its_queries_against_the_whole_dataset(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    # a distributed worker handles every 2nd query, but rows pair against the whole dataset: the rows
    # of the other worker's queries are not mismatches
    data = _shuffled_dataset(tmp_path / "general_qa")
    with caplog.at_level("WARNING", logger="arena_engine.evalscope_import"):
        results, _, _ = _run_import(tmp_path, data, shard=(1, 2), evalscope_mismatch="warn")
    assert "1 of 6 imported EvalScope row(s) match no query" in caplog.text
    imported = {(r["subset"], r["query_id"]): r["answer"]
                for r in _records(tmp_path / "run" / "checkpoints" / "generations.jsonl") if r.get("imported_from")}
    assert imported == {("arena", "1"): "Plan your day, set priorities, and limit distractions.",
                        ("example", "0"): "The blue whale is the largest mammal."}
    assert results.missing == 1  # example/2, the changed question


def test_evalscope_mismatch_option_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'models\[0\]\.evalscope_mismatch' must be one of \['error', 'warn'\]"):
        _import_config(tmp_path, "http://127.0.0.1:9/v1", tmp_path, evalscope_mismatch="ignore")
    with pytest.raises(ConfigError, match=r"'models\[1\]\.evalscope_mismatch' needs 'evalscope_report'"):
        config_from_dict({
            "datasets": [{"name": "d", "path": "d"}],
            "models": [{"name": "a", "api_url": "http://127.0.0.1:9/v1"},
                       {"name": "b", "api_url": "http://127.0.0.1:9/v1", "evalscope_mismatch": "warn"}],
            "judge": {"name": "j", "api_url": "http://127.0.0.1:9/v1"},
        }, source="<test>")
    cfg = _import_config(tmp_path, "http://127.0.0.1:9/v1", tmp_path, evalscope_mismatch="warn")
    assert cfg.models[0].evalscope_mismatch == "warn"
    assert config_from_dict(config_to_dict(cfg), source="<back>").models[0].evalscope_mismatch == "warn"
    assert _import_config(tmp_path, "http://127.0.0.1:9/v1", tmp_path).models[0].evalscope_mismatch == "error"


def _questions(data: Path) -> list[str]:
    return [orjson.loads(line)["query"] for f in sorted(data.glob("*.jsonl")) for line in f.read_bytes().splitlines()]


def test_import_evalscope_command_checks_a_dataset(tmp_path: Path) -> None:
    data = _shuffled_dataset(tmp_path / "general_qa")
    cmd = [sys.executable, "-m", "arena_engine.cli", "import-evalscope", str(REPORT), "--dataset"]
    bad = subprocess.run([*cmd, str(data)], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2, bad.stderr
    assert "qwen2.5-7b-instruct\tgeneral_qa\texample\t3 answers\t1 match no query" in bad.stdout
    review = RUN / "reviews" / "qwen2.5-7b-instruct" / "general_qa_example.jsonl"
    assert f"{review}:3: question: \"Who wrote 'To Kill a Mockingbird'?\"" in bad.stderr
    assert "1 of 6 EvalScope row(s) match no query" in bad.stderr and "Traceback" not in bad.stderr
    _test_dataset(tmp_path / "same")
    good = subprocess.run([*cmd, str(tmp_path / "same"), "--dataset-name", "general_qa"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert good.returncode == 0, good.stderr
    assert "qwen2.5-7b-instruct\tgeneral_qa\tarena\t3 answers\t0 match no query" in good.stdout


def _test_dataset(folder: Path) -> None:
    folder.mkdir()
    for subset in ("arena", "example"):
        rows = sorted((a for a in load_evalscope_answers(REPORT) if a.subset == subset), key=lambda a: a.index)
        (folder / f"{subset}.jsonl").write_bytes(b"".join(orjson.dumps({"query": a.question}) + b"\n" for a in rows))
