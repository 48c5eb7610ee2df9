"""The README's tour runs as written (commands against the built-in simulator, configs parsed and planned)."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson

from arena_engine.demo import demo_sim_config, write_demo_dataset
from arena_engine.sim import SimServer

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK_RE = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def _blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCK_RE.findall(README.read_text()) if kind == lang]


def _cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "arena_engine.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False, env=env)


def test_setup_commands_are_the_ci_commands() -> None:
    bash = _blocks("bash")
    setup = [b.strip() for b in bash[:2]]
    assert setup[0].endswith("arena-engine demo")
    assert "pytest" in setup[1]
    ci = (README.parent / ".ci" / "run").read_text()
    test_cmd = setup[1].split("&&")[-1].strip()
    assert test_cmd in ci, "the README's test command is what CI runs"


def test_tour_commands_run(tmp_path: Path) -> None:
    commands = [ln.split("#")[0].strip() for b in _blocks("bash")[2:] for ln in b.splitlines()]
    commands = [c for c in commands if c]
    # the config in the README, with a dataset where it says and a placeholder key in the environment
    (tmp_path / "my-arena.toml").write_text(_blocks("toml")[0])
    (tmp_path / "data" / "qa").mkdir(parents=True)
    (tmp_path / "data" / "qa" / "arena.jsonl").write_text('{"query": "How can I improve my time management skills?"}\n')
    env = {**os.environ, "DASHSCOPE_API_KEY": "placeholder-not-a-key"}
    ran = 0
    for command in commands:
        argv = shlex.split(command)
        program = Path(argv[0]).name
        if program == "cat":
            assert (tmp_path / argv[1]).is_file(), command
            ran += 1
            continue
        assert program == "arena-engine", command
        args = argv[1:]
        if args[:1] == ["run"] and "--dry-run" not in args:
            continue  # a real run needs the real endpoints named in the config
        if args[:1] == ["sim"]:
            continue  # serves until interrupted; covered by the simulator's tests
        if args[:1] == ["report"]:
            args = ["report", "outputs/demo/run"]  # the tour's run folder exists only after a real run
        out = _cli(args, tmp_path, env)
        assert out.returncode == 0, f"{command}: {out.stderr}"
        if "--dry-run" in args:
            assert "qwen-plus" in out.stdout and "requests" in out.stdout
        ran += 1
    assert ran >= 4


def test_python_snippets_run() -> None:
    snippets = _blocks("python")
    embedding = {}
    exec(snippets[0], embedding)
    assert callable(embedding["evaluate"])
    names = ["qwen2.5-7b", "qwen2.5-72b"]
    rng = np.random.default_rng(0)
    scope = {"model_a": np.zeros(200, dtype=np.int64), "model_b": np.ones(200, dtype=np.int64),
             "outcome": rng.integers(-2, 3, 200).astype(np.int8), "query": np.arange(200) // 2, "names": names}
    exec(snippets[1], scope)
    ratings = scope["ratings"]
    assert ratings["qwen2.5-7b"].winrate == 0.5


def test_embedding_snippet_runs_against_the_simulator(tmp_path: Path) -> None:
    """The README's `evaluate(path)` as written: a config file, an arena run, the reports after the block."""
    scope: dict[str, object] = {}
    exec(_blocks("python")[0], scope)
    evaluate = scope["evaluate"]
    data = write_demo_dataset(tmp_path / "data" / "general_qa", 3)

    async def main() -> object:
        async with SimServer(demo_sim_config(latency=0.001)) as sim:
            def ep(name: str) -> dict[str, object]:
                return {"name": name, "api_url": sim.url, "concurrency": 4}

            config = {"run": {"output_dir": str(tmp_path / "run"), "seed": 1},
                      "datasets": [{"name": "general_qa", "path": str(data)}],
                      "models": [ep("sim-base"), ep("sim-strong")], "arena": {"baseline": "sim-base"},
                      "judge": ep("sim-judge"), "rating": {"rounds": 20}}
            path = tmp_path / "arena.json"
            path.write_bytes(orjson.dumps(config))
            return await asyncio.wait_for(evaluate(path), 60)  # type: ignore[operator]

    results = asyncio.run(main())
    assert results.queries == {("general_qa", "arena"): 3, ("general_qa", "example"): 3}  # type: ignore[attr-defined]
    assert results.failures == 0  # type: ignore[attr-defined]
    report = tmp_path / "run" / "report"
    assert {p.name for p in report.iterdir()} >= {"leaderboard.txt", "report.json", "report.html"}
