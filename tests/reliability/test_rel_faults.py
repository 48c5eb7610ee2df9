"""Every fault mode of the simulator at once, then SIGKILLs on top: the arena still ends every game once.

The faulty simulators inject 429s (with Retry-After in seconds, in milliseconds, and without it), 500,
502, 503, connection resets, hangs (the config's read timeout of 1 s ends them), malformed bodies,
answers without choices, garbage verdicts, and a server-side rate limit. The results are compared,
record by record through their content keys, with a fault-free run of the same config.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from reliability_support import (
    ALL_FAULTS,
    BASE,
    CAND,
    ENDPOINTS,
    JUDGE,
    RETRY_AFTER_S,
    RPM_WINDOW_S,
    Checkpoints,
    answers,
    checkpoint_count,
    clean_sim,
    dataset,
    fault_sims,
    read_checkpoints,
    run_config,
    usable_200,
    verdicts,
    write_config,
)

from arena_engine.battles import Game
from arena_engine.pipeline import Arena, ArenaResults
from arena_engine.sim import SimServer
from arena_engine.sim.process import SimProcess
from tests.waiting import wait_until

PER_SUBSET = 30
QUERIES = 2 * PER_SUBSET
GAMES = 2 * QUERIES  # one candidate against the baseline, both orders

GameKey = tuple[str, str, str, str, bool]


def _key(g: Game) -> GameKey:
    return (g.dataset, g.subset, g.query_id, g.candidate, g.candidate_is_a)


async def _run_clean(run_dir: Path, data: Path) -> tuple[ArenaResults, dict[str, Any]]:
    async with SimServer(clean_sim()) as sim:
        cfg = run_config(dict.fromkeys(ENDPOINTS, sim.url), run_dir, data)
        async with Arena(cfg) as arena:
            results = await arena.run()
        return results, sim.stats()


async def _run(cfg_urls: dict[str, str], run_dir: Path, data: Path) -> ArenaResults:
    async with Arena(run_config(cfg_urls, run_dir, data)) as arena:
        return await arena.run()


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, SimProcess]]:
    """The faulty simulators (one process per endpoint), shared by this module's tests."""
    with fault_sims() as procs:
        yield procs


def _fresh(sims: dict[str, SimProcess]) -> dict[str, str]:
    for s in sims.values():
        s.reset_stats()
    return {n: s.url for n, s in sims.items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Checkpoints, dict[GameKey, Any]]:
    """The dataset and an uninterrupted, fault-free run of it."""
    root = tmp_path_factory.mktemp("reference")
    data = dataset(root, PER_SUBSET)
    results, stats = anyio.run(_run_clean, root / "run", data)
    assert results.failures == 0 and all(g.outcome is not None for g in results.games)
    assert stats["duplicate_requests"] == 0
    return data, read_checkpoints(root / "run"), {_key(g): g.outcome for g in results.games}


def _check_every_game_ends_once_with_its_reason(results: ArenaResults, ck: Checkpoints) -> None:
    keys = [_key(g) for g in results.games]
    assert len(keys) == GAMES and len(set(keys)) == GAMES, "every game once, none twice"
    failures = ck.records("failures")
    assert results.failures == len(failures)
    failed_gen = {(f["endpoint"], f["dataset"], f["subset"], f["query_id"]) for f in failures
                  if f["stage"] == "generation"}
    failed_judge = {(f["dataset"], f["subset"], f["query_id"], f["candidate"], f["candidate_is_a"]) for f in failures
                    if f["stage"] == "judgment"}
    assert all(f["error"] for f in failures), "a failure record without its reason"
    garbage = {(j["dataset"], j["subset"], j["query_id"], j["a"] == CAND) for j in ck.records("judgments")
               if j["verdict"] is None}
    for g in results.games:
        if g.outcome is not None:
            continue
        assert g.reason, f"game {_key(g)} excluded without a reason"
        kind, _, why = g.reason.partition(": ")
        if kind == "no answer":
            assert (why, g.dataset, g.subset, g.query_id) in failed_gen, g.reason
        elif kind == "judge request failed":
            assert (g.dataset, g.subset, g.query_id, g.candidate, g.candidate_is_a) in failed_judge, g.reason
            assert why, "the excluded game names the judge's error"
        elif kind == "unparseable verdict":
            assert (g.dataset, g.subset, g.query_id, g.candidate_is_a) in garbage, g.reason
        else:
            raise AssertionError(f"unexpected reason {g.reason!r}")


def _check_no_duplicates(ck: Checkpoints) -> None:
    assert ck.bad_lines == {}, ck.bad_lines
    assert all(n == 0 for n in ck.duplicated_keys().values()), ck.duplicated_keys()
    gens = Counter((r["model"], r["dataset"], r["subset"], r["query_id"]) for r in ck.records("generations"))
    assert max(gens.values()) == 1
    judged = Counter((r["dataset"], r["subset"], r["query_id"], r["a"], r["b"]) for r in ck.records("judgments"))
    assert max(judged.values()) == 1


def _retried(ck: Checkpoints) -> set[str]:
    """Hex keys of the judgments whose verdict came from a parse retry (a different request)."""
    return {k.hex() for k, r in ck.lines.get("judgments", []) if r.get("tries", 1) > 1}


def _check_same_as_reference(ck: Checkpoints, ref: Checkpoints) -> None:
    got, want = answers(ck), answers(ref)
    assert got and all(want[k] == a for k, a in got.items()), "an answer differs from the fault-free run's"
    got_v, want_v = verdicts(ck), verdicts(ref)
    # A verdict asked again after an unreadable reply comes from a different request (the retry quotes the
    # reply and asks for the schema), which the simulated judge draws anew; every other verdict is the
    # fault-free run's.
    retried = _retried(ck)
    same = {k: v for k, v in got_v.items() if k.hex() not in retried}
    assert len(same) >= len(got_v) // 2, (len(same), len(got_v))
    assert same and all(want_v[k] == v for k, v in same.items()), "a verdict differs from the fault-free run's"


@pytest.mark.exclusive
def test_all_faults_at_once_end_every_game_once_with_the_fault_free_verdicts(
    tmp_path: Path, sims: dict[str, SimProcess], reference: tuple[Path, Checkpoints, dict[GameKey, Any]]
) -> None:
    data, ref, ref_games = reference
    run_dir = tmp_path / "run"
    results = anyio.run(_run, _fresh(sims), run_dir, data)
    stats = {n: s.stats() for n, s in sims.items()}

    # every fault mode really happened, each 429 form included
    seen = Counter[str]()
    for s in stats.values():
        seen.update(s["faults"])
    assert set(seen) >= ALL_FAULTS, f"faults never injected: {ALL_FAULTS - set(seen)}"
    assert stats[JUDGE]["faults"].get("429", 0) > 0, "no 429 without Retry-After"
    assert sum(s["status"].get("hang_abandoned", 0) for s in stats.values()) > 0, "no hang ended by the timeout"
    for name, s in stats.items():
        assert s["duplicate_200"] == 0, f"{name}: a request sent again after a usable answer"
        assert s["retry_after_violations"] == 0, name
        assert s["endpoint_retry_after_violations"] == 0, name

    ck = read_checkpoints(run_dir)
    _check_every_game_ends_once_with_its_reason(results, ck)
    _check_no_duplicates(ck)
    _check_same_as_reference(ck, ref)
    decided = [g for g in results.games if g.outcome is not None]
    assert len(decided) >= 0.75 * GAMES, f"only {len(decided)} of {GAMES} games decided"
    retried = _retried(ck)
    assert all(ref_games[_key(g)] == g.outcome for g in decided if g.judgment_key not in retried)
    # each stored answer came from exactly one usable 200
    assert len(ck.records("generations")) == usable_200(stats[BASE]) + usable_200(stats[CAND])
    assert len(verdicts(ck)) == usable_200(stats[JUDGE])

    # a rerun on a healthy endpoint sends only what failed, and then equals the fault-free run
    garbage = [g for g in results.games if g.reason and g.reason.startswith("unparseable verdict")]
    missing_gens = {(f["endpoint"], f["dataset"], f["subset"], f["query_id"]) for f in ck.records("failures")
                    if f["stage"] == "generation"}
    retried_games = [g for g in results.games if g.outcome is None and g not in garbage]
    again, clean_stats = anyio.run(_run_clean, run_dir, data)
    assert clean_stats["requests"] == len(missing_gens) + len(retried_games)
    assert again.failures == 0
    assert {_key(g) for g in again.games if g.outcome is None} == {_key(g) for g in garbage}, (
        "a garbage verdict stored after its retries stays the judge's answer; nothing else is excluded"
    )
    retried = _retried(read_checkpoints(run_dir))
    assert all(ref_games[_key(g)] == g.outcome for g in again.games
               if g.outcome is not None and g.judgment_key not in retried)
    _check_no_duplicates(read_checkpoints(run_dir))


# ------------------------------------------------------------------------------------------- kills

CHILD = """
import sys
sys.path.insert(0, sys.argv[2])
from reliability_support import fast_backoff
from arena_engine.config import load_config
from arena_engine.pipeline import run_arena
results = run_arena(fast_backoff(load_config(sys.argv[1])))
print(len(results.games), results.failures, flush=True)
"""
KILLS = 4


@pytest.mark.exclusive
def test_sigkill_during_a_faulty_run_then_completion_matches_the_uninterrupted_run(
    tmp_path: Path, sims: dict[str, SimProcess], reference: tuple[Path, Checkpoints, dict[GameKey, Any]]
) -> None:
    """The library's run_arena in a child process, SIGKILLed at seeded random moments while it generates
    and judges through the fault mix, then run to the end: no record duplicated, nothing answered twice
    except what the kills lost, and every verdict equal to the fault-free run's."""
    data, ref, _ = reference
    run_dir = tmp_path / "run"
    rng = random.Random(20261128)
    expected = 2 * QUERIES + GAMES  # generations + judgments when nothing fails
    targets = sorted(rng.sample(range(15, int(0.9 * expected)), KILLS))
    kills: list[dict[str, Any]] = []
    cfg = write_config(tmp_path / "run.json", _fresh(sims), run_dir, data)
    here = str(Path(__file__).parent)
    for target in [*targets, None]:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(cfg), here], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        if target is None:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()[-2000:]
            break
        wait_until(lambda: checkpoint_count(run_dir) >= target or proc.poll() is not None,  # noqa: B023
                   90, f"the run to store {target} records")
        assert proc.poll() is None, "the run ended before its kill: lower the targets"
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        # a new process cannot know the Retry-After its predecessor was told: restart once every wait the
        # simulators gave has ended (as a supervisor's restart delay would), so any violation is real
        wait_until(lambda: all(s.stats()["retry_after_left_s"] == 0 for s in sims.values()),
                   10 * max(RETRY_AFTER_S, RPM_WINDOW_S), "the simulators' Retry-After waits to end", interval=0.01)
        ck = read_checkpoints(run_dir)
        kills.append({"target": target, "generations": len(ck.records("generations")),
                      "judgments": len(ck.records("judgments"))})
    stats = {n: s.stats() for n, s in sims.items()}

    assert len(kills) == KILLS
    # the kills landed while both stages were moving (the run streams generation into judging)
    assert any(k["generations"] < 2 * QUERIES and k["judgments"] > 0 for k in kills), kills
    ck = read_checkpoints(run_dir)
    _check_no_duplicates(ck)
    _check_same_as_reference(ck, ref)
    assert len(answers(ck)) >= 0.9 * 2 * QUERIES and len(verdicts(ck)) >= 0.75 * GAMES
    # answers the kills lost (answered, never stored) are the only ones a rerun may ask for again
    stored = len(ck.records("generations")) + len(verdicts(ck))
    lost = sum(usable_200(s) for s in stats.values()) - stored
    duplicates = sum(s["duplicate_200"] for s in stats.values())
    assert 0 <= duplicates <= lost <= KILLS * 3 * 16, (duplicates, lost)  # 3 endpoints x concurrency 16
    for name, s in stats.items():
        assert s["retry_after_violations"] == 0, name
        assert s["endpoint_retry_after_violations"] == 0, name
    print(f"\nkills={kills} lost={lost} duplicate_200={duplicates}")
