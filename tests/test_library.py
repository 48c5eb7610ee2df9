"""The library as a user embeds it: `import arena_engine`, run, write the reports, read the usage."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from arena_helpers import arena_config, dataset

import arena_engine as ae
from arena_engine.sim import SimConfig, SimModel, SimServer
from arena_engine.sim.process import SimProcess


def test_import_is_cheap_and_every_public_name_resolves() -> None:
    code = ("import sys, arena_engine; heavy = [m for m in ('numpy', 'arena_engine.pipeline', 'aiohttp') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", f"import arena_engine pulled in {out.stdout}"
    for name in ae.__all__:
        assert getattr(ae, name) is not None, name
    assert issubclass(ae.ConfigError, ae.ArenaError)
    with pytest.raises(AttributeError):
        _ = ae.not_a_name  # type: ignore[attr-defined]


def test_run_arena_inside_a_running_loop_names_the_async_entry(tmp_path: Path) -> None:
    cfg = arena_config("http://127.0.0.1:9/v1", tmp_path / "run", dataset(tmp_path, 2), ["a", "b"])

    async def main() -> None:
        ae.run_arena(cfg)

    with pytest.raises(ae.ArenaError, match=r"await Arena\(\.\.\.\)\.run\(\)"):
        asyncio.run(main())
    assert not (tmp_path / "run").exists()  # refused before anything was opened


def _sim(judge: str) -> SimConfig:
    return SimConfig(models=(SimModel("m-base"), SimModel("m-good", 1.0), SimModel(judge, judge=True)), seed=3)


def test_async_run_then_write_reports_with_clean_usage_keys(tmp_path: Path) -> None:
    data = dataset(tmp_path, 6)

    async def main() -> ae.ArenaResults:
        async with SimServer(_sim("sim-judge")) as sim:
            cfg = arena_config(sim.url, tmp_path / "run", data, ["m-base", "m-good"], judge="m-good")
            # the judge is named like a candidate (and served as sim-judge): their usage must stay apart
            judge = replace(cfg.judge, endpoint=replace(cfg.judge.endpoint, model="sim-judge"))
            async with ae.Arena(replace(cfg, judge=judge)) as arena:
                results = await arena.run()
        return results

    results = asyncio.run(main())
    paths = ae.write_reports(results)
    assert {p.name for p in paths.values()} >= {"leaderboard.txt", "report.json", "report.html"}
    by_name = results.usage_by_name()
    assert set(by_name) == {"m-base", "m-good", "judge:m-good"}
    assert by_name["judge:m-good"] is results.judge_usage
    n = sum(results.queries.values())
    assert n >= 6
    assert results.judge_usage.records == 2 * n  # one candidate, two orders per query
    assert by_name["m-good"].records == n
    endpoints = orjson.loads(Path(paths["json"]).read_bytes())["endpoints"]
    assert endpoints["judge:m-good"]["role"] == "judge" and endpoints["m-good"]["role"] == "candidate"
    assert endpoints["m-good"]["records"] == n and endpoints["judge:m-good"]["records"] == 2 * n


@pytest.mark.slow
def test_run_arena_writes_the_reports_when_asked(tmp_path: Path) -> None:
    data = dataset(tmp_path, 4)
    with SimProcess(_sim("sim-judge")) as sim:
        cfg = arena_config(sim.url, tmp_path / "run", data, ["m-base", "m-good"])
        results = ae.run_arena(cfg, reports=True)
    report = tmp_path / "run" / "report"
    assert (report / "leaderboard.txt").is_file() and (report / "report.html").is_file()
    assert results.usage_by_name()["judge:sim-judge"].records == 2 * sum(results.queries.values())


def test_all_lists_exactly_the_lazy_exports() -> None:
    assert set(ae.__all__) == set(ae._EXPORTS) | {"__version__"}


def test_import_loads_none_of_the_run_or_rating_modules() -> None:
    """`import arena_engine` (and `dir()`, `__all__`) stays cheap: the heavy modules load on first use."""
    heavy = ("numba", "numpy", "aiohttp", "anyio", "arena_engine.rating", "arena_engine.leaderboard",
             "arena_engine.client", "arena_engine.pipeline", "arena_engine.report", "arena_engine.config")
    code = ("import sys, arena_engine; dir(arena_engine); arena_engine.__all__; arena_engine.__version__; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", f"import arena_engine pulled in {out.stdout}"


def test_reading_a_config_loads_no_network_or_event_loop_module(tmp_path: Path) -> None:
    """Checking a config file (an editor hook, `run --dry-run`'s first step) needs only the config values:
    not aiohttp, the client or the limiter."""
    (tmp_path / "a.toml").write_text('[[datasets]]\nname = "d"\npath = "d"\n\n[[models]]\nname = "b"\n'
                                     'api_url = "http://127.0.0.1:9/v1"\n\n[[models]]\nname = "c"\n'
                                     'api_url = "http://127.0.0.1:9/v1"\n\n[judge]\nname = "j"\n'
                                     'api_url = "http://127.0.0.1:9/v1"\n\n[arena]\nbaseline = "b"\n')
    heavy = ("aiohttp", "anyio", "arena_engine.client", "arena_engine.limits", "arena_engine.pipeline")
    code = (f"import sys, arena_engine as ae; cfg = ae.load_config({str(tmp_path / 'a.toml')!r}); "
            f"print(cfg.judge.endpoint.limits.concurrency, [m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(" ", 1)[1].strip() == "[]", f"load_config pulled in {out.stdout}"


def test_every_public_name_resolves_to_what_its_module_defines() -> None:
    import importlib

    for name in ae.__all__:
        if name == "__version__":
            continue
        value = getattr(ae, name)
        assert value is getattr(importlib.import_module(ae._EXPORTS[name]), name), name
    assert set(dir(ae)) >= set(ae.__all__)
    assert issubclass(ae.FatalHTTPError, ae.RequestError) and issubclass(ae.RequestError, ae.ArenaError)
