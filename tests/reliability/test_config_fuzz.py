"""Config fuzz through the real command: values no endpoint should get, and datasets with nothing in them.

`arena-engine run CONFIG` with NaN or out-of-range generation parameters, `concurrency = 10000000000`
(which once grew the process to 14 GB within a minute), an empty subset, a missing subset or an empty
dataset folder must exit with status 2 and one line naming the config file and key (or the dataset,
subset and path), send nothing, and stay small: the child's peak RSS is measured with wait4() and must
stay under 300 MB. The child also runs under a 2 GB data limit, so a regression fails fast instead of
taking the machine's memory.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from reliability_support import (
    ENDPOINTS,
    assert_one_line_error,
    clean_sim,
    config_dict,
    dataset,
    threaded_sim,
    to_toml,
)

MAX_RSS_MB = 300
DATA_LIMIT = 2 << 30


@dataclass(frozen=True)
class Env:
    root: Path
    data: Path
    url: str
    stats: Callable[[], dict[str, Any]]

    def requests(self) -> int:
        return int(sum(self.stats()["status"].values()))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("fuzz")
    with threaded_sim(clean_sim()) as (url, stats):
        yield Env(root, dataset(root, 3), url, stats)


@dataclass(frozen=True)
class Run:
    code: int
    stderr: str
    max_rss_mb: float


def _limit_data() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_LIMIT, DATA_LIMIT))
    os.setsid()  # a timeout kills the launcher and the command together


# A child's ru_maxrss counts the pages it had when it was forked: Linux keeps the peak across exec(), so
# a command forked from a pytest process of 340 MB reports 340 MB whatever it used. The command is
# forked instead from this small launcher, and wait4() there gives the command's own peak.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def run_cli(config: Path, timeout: float = 60.0) -> Run:
    """`python -m arena_engine.cli run CONFIG --quiet` in a child; its own peak RSS from wait4()."""
    err_path = config.with_suffix(".stderr")
    rss_path = config.with_suffix(".maxrss")
    with err_path.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(rss_path),
                                 "-m", "arena_engine.cli", "run", str(config), "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_limit_data)
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, 9))
    timer.start()
    try:
        code = proc.wait()
    finally:
        timer.cancel()
    peak_kib = int(rss_path.read_text()) if rss_path.exists() else float("nan")  # killed: no figure
    return Run(code, err_path.read_text(errors="replace"), peak_kib / 1024)


def _write(env: Env, name: str, edit: Callable[[dict[str, Any]], None], data: Path | None = None) -> Path:
    raw = config_dict(dict.fromkeys(ENDPOINTS, env.url), env.root / f"run-{name}", data or env.data)
    edit(raw)
    path = env.root / f"{name}.toml"
    path.write_text(to_toml(raw))
    return path


def _set(*path: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        parent: Any = raw
        for p in path[:-1]:
            parent = parent.setdefault(p, {}) if isinstance(p, str) else parent[p]
        parent[path[-1]] = value

    return edit


BAD_CONFIGS = {
    "temperature-nan": (_set("models", 0, "generation", "temperature", value=float("nan")),
                        "'models[0].generation.temperature' = nan"),
    "max_tokens-negative": (_set("models", 1, "generation", "max_tokens", value=-5),
                            "'models[1].generation.max_tokens' = -5"),
    "judge-penalty-inf": (_set("judge", "generation", "presence_penalty", value=float("-inf")),
                          "'judge.generation.presence_penalty' = -inf"),
    "provider-key-nan": (_set("models", 0, "generation", "top_k", value=float("nan")),
                         "'models[0].generation.top_k' = nan"),
    "concurrency-1e10": (_set("models", 0, "concurrency", value=10_000_000_000),
                         "'models[0].concurrency' = 10000000000 is above the ceiling of 4096"),
    "judge-concurrency-float-1e10": (_set("judge", "concurrency", value=1e10),
                                     "'judge.concurrency' must be an integer"),
    "queries_in_flight-1e10": (_set("run", "queries_in_flight", value=10_000_000_000),
                               "'run.queries_in_flight' = 10000000000 is above the ceiling"),
    "rpm-nan": (_set("models", 1, "rpm", value=float("nan")), "'models[1].rpm' must be a finite number"),
    "timeout-inf": (_set("judge", "read_timeout", value=float("inf")), "'judge.read_timeout' must be a finite"),
    "price-negative": (_set("models", 0, "price_in", value=-1.0), "'models[0].price_in' must be >= 0"),
    "subsets-empty-list": (_set("datasets", 0, "subsets", value=[]), "'datasets[0].subsets' is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_config_value_exits_2_naming_file_and_key_and_stays_small(env: Env, case: str) -> None:
    edit, needle = BAD_CONFIGS[case]
    config = _write(env, case, edit)
    before = env.requests()
    run = run_cli(config)
    assert_one_line_error(run.code, run.stderr, str(config), needle)
    assert run.max_rss_mb < MAX_RSS_MB, run.max_rss_mb
    assert env.requests() == before, "nothing is sent"
    assert not (env.root / f"run-{case}").exists(), "nothing is written"


def _dataset_copy(env: Env, name: str) -> Path:
    folder = env.root / "datasets" / name / "general_qa"
    shutil.copytree(env.data, folder)
    return folder


def test_an_empty_subset_exits_2_naming_dataset_subset_and_path(env: Env) -> None:
    data = _dataset_copy(env, "empty-subset")
    (data / "example.jsonl").write_bytes(b"\n")
    before = env.requests()
    for name, edit in (("empty-subset", _set("run", "seed", value=3)),
                       ("empty-subset-named", _set("datasets", 0, "subsets", value=["arena", "example"]))):
        config = _write(env, name, edit, data)
        run = run_cli(config)
        assert_one_line_error(run.code, run.stderr, "dataset 'general_qa', subset 'example'",
                              str(data / "example.jsonl"), "allow_empty = true")
        assert run.max_rss_mb < MAX_RSS_MB, run.max_rss_mb
    assert env.requests() == before, "nothing is sent"


def test_a_missing_subset_or_an_empty_dataset_folder_exits_2(env: Env) -> None:
    data = _dataset_copy(env, "missing")
    config = _write(env, "missing-subset", _set("datasets", 0, "subsets", value=["arena", "nope"]), data)
    run = run_cli(config)
    assert_one_line_error(run.code, run.stderr, "dataset 'general_qa'", "'nope' not found", str(data))
    bare = env.root / "datasets" / "bare" / "general_qa"
    bare.mkdir(parents=True)
    config = _write(env, "bare", _set("run", "seed", value=3), bare)
    run = run_cli(config)
    assert_one_line_error(run.code, run.stderr, "dataset 'general_qa'", str(bare), "no .jsonl files")
    assert run.max_rss_mb < MAX_RSS_MB, run.max_rss_mb


def test_allow_empty_turns_an_empty_subset_into_a_warning_and_runs_the_rest(env: Env) -> None:
    data = _dataset_copy(env, "allowed")
    (data / "example.jsonl").write_bytes(b"")
    config = _write(env, "allowed", _set("datasets", 0, "allow_empty", value=True), data)
    before = env.requests()
    run = run_cli(config)
    assert run.code == 0, run.stderr
    warnings = [ln for ln in run.stderr.splitlines() if "subset 'example'" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING"), run.stderr
    assert "allow_empty" in warnings[0] and str(data / "example.jsonl") in warnings[0]
    # the 3 queries of `arena`: 2 answers and 2 judge games each, nothing for the empty subset
    assert env.requests() - before == 3 * (2 + 2)
