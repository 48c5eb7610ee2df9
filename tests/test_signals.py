"""Interruptions that are not crashes: SIGINT/SIGTERM to the CLI, and cancelling a library run.

Either way the work finished so far stays in the run folder, consistent (no torn line, no duplicate,
lock released by a clean close), and the next run sends only what is missing. The CLI tests run
``arena-engine run`` in a subprocess against the simulator in another process; the library test
cancels ``Arena.run()`` from an anyio task group in this process.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from arena_helpers import dataset
from interrupt_helpers import (
    INTERRUPTED_MESSAGE,
    JUDGE,
    MAX_IN_FLIGHT,
    MODELS,
    answered_200,
    cli,
    expected_records,
    output,
    read_run,
    results_of,
    sim_config,
    stop,
    stored,
    write_run_config,
)

from arena_engine.config import load_config
from arena_engine.pipeline import Arena, ArenaResults
from arena_engine.report import leaderboard_text
from arena_engine.sim import SimServer
from arena_engine.sim.process import SimProcess
from tests.waiting import wait_until, wait_until_async

QUERIES_PER_SUBSET = 30  # two subsets: 60 queries, 180 generations, 240 judgments
RUN_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with SimProcess(sim_config()) as s:
        yield s


def _idle_and_reset(sim: SimProcess) -> None:
    """Zero the shared simulator's counters once it has answered everything an earlier test left."""
    wait_until(lambda: sim.stats()["in_flight"] == 0, 30, "the simulator to finish what it holds")
    sim.reset_stats()


def _folder_closed_cleanly(run_dir: Path) -> None:
    for kind, ck in read_run(run_dir).items():
        assert not ck.torn_tail, f"{kind}: torn last line {ck.torn_tail[:80]!r}"
        assert not ck.bad_lines, f"{kind}: corrupt lines {ck.bad_lines}"
        assert not ck.duplicates, f"{kind}: duplicated records {ck.duplicates}"
    # the store truncates the lock file when it closes; a process that merely died leaves its pid there
    assert (run_dir / ".lock").read_text() == "", "the run folder was not closed (lock file still names a pid)"


def _missing_per_endpoint(run_dir: Path, queries: int) -> Counter[str]:
    """Requests each endpoint still owes: answers per model, verdicts for the judge."""
    run = read_run(run_dir)
    have = Counter(r["model"] for r in run["generations"].records.values())
    missing = Counter({name: queries - have[name] for name, _ in MODELS})
    missing[JUDGE] = expected_records(queries)[1] - len(run["judgments"].records)
    return +missing


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_finishes_writes_exits_130_and_the_rerun_resumes(
    sim: SimProcess, tmp_path: Path, sig: signal.Signals
) -> None:
    data = dataset(tmp_path, QUERIES_PER_SUBSET)
    queries = 2 * QUERIES_PER_SUBSET
    total = sum(expected_records(queries))
    run_dir = tmp_path / "run"
    config = write_run_config(tmp_path / "arena.toml", sim.url, run_dir, data)
    _idle_and_reset(sim)

    log = tmp_path / "interrupted"
    proc = cli("run", str(config), "--quiet", log=log)
    try:
        wait_until(lambda: answered_200(sim.stats()) >= total * 2 // 5 or proc.poll() is not None,
                   RUN_TIMEOUT, "the run to get going", interval=0.02)
        assert proc.poll() is None, output(log)
        sent = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(timeout=30)
        shutdown = time.monotonic() - sent
    finally:
        stop(proc)
    out, err = output(log)
    assert rc == 130, err
    assert err == INTERRUPTED_MESSAGE + "\n"  # one line, no traceback
    assert out == ""
    _folder_closed_cleanly(run_dir)

    wait_until(lambda: sim.stats()["in_flight"] == 0, 30, "the simulator to finish what it holds")
    before = sim.stats()
    done = stored(read_run(run_dir))
    assert 0 < done < total
    lost = answered_200(before) - done  # answered, but the cancelled requests never got to read it
    assert 0 <= lost <= MAX_IN_FLIGHT
    missing = _missing_per_endpoint(run_dir, queries)

    log = tmp_path / "resumed"
    rerun = cli("run", str(config), "--quiet", log=log)
    try:
        assert rerun.wait(timeout=RUN_TIMEOUT) == 0, output(log)
    finally:
        stop(rerun)
    after = sim.stats()
    sent_again = Counter(after["per_model"]) - Counter(before["per_model"])
    assert sent_again == missing, "the rerun must send exactly the requests that were missing"
    assert after["duplicate_200"] == lost
    run = read_run(run_dir)
    assert all(ck.clean() for ck in run.values())
    assert (len(run["generations"].records), len(run["judgments"].records)) == expected_records(queries)
    print(f"\n{sig.name}: exit 130 {shutdown:.2f} s after the signal; {done}/{total} records kept, "
          f"{lost} answers lost in flight; rerun sent {sum(sent_again.values())} requests")


def test_repeated_signals_while_shutting_down_still_close_the_folder(sim: SimProcess, tmp_path: Path) -> None:
    data = dataset(tmp_path, QUERIES_PER_SUBSET)
    total = sum(expected_records(2 * QUERIES_PER_SUBSET))
    run_dir = tmp_path / "run"
    config = write_run_config(tmp_path / "arena.toml", sim.url, run_dir, data)
    _idle_and_reset(sim)
    log = tmp_path / "interrupted"
    proc = cli("run", str(config), "--quiet", log=log)
    sent = 0
    try:
        wait_until(lambda: answered_200(sim.stats()) >= total // 3 or proc.poll() is not None,
                   RUN_TIMEOUT, "the run to get going", interval=0.02)
        # an impatient user and a supervisor: signals every 10 ms until the process is gone
        while proc.poll() is None and sent < 200:
            proc.send_signal(signal.SIGTERM if sent % 2 else signal.SIGINT)
            sent += 1
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.01)  # the next signal 10 ms on, unless it has ended by then
        rc = proc.wait(timeout=30)
    finally:
        stop(proc)
    _, err = output(log)
    assert rc == 130, f"exit status {rc} after {sent} signals; stderr: {err!r}"
    assert err == INTERRUPTED_MESSAGE + "\n"
    _folder_closed_cleanly(run_dir)
    assert sent >= 3, "the later signals should have come while the process was shutting down"
    print(f"\n{sent} signals, 10 ms apart, until the process exited with 130")


def test_a_second_process_on_a_busy_folder_is_refused_in_one_line(sim: SimProcess, tmp_path: Path) -> None:
    data = dataset(tmp_path, 15)
    queries = 30
    total = sum(expected_records(queries))
    run_dir = tmp_path / "run"
    config = write_run_config(tmp_path / "arena.toml", sim.url, run_dir, data)
    _idle_and_reset(sim)
    first = cli("run", str(config), "--quiet", log=tmp_path / "first")
    second = None
    try:
        wait_until(lambda: answered_200(sim.stats()) >= 20 or first.poll() is not None, RUN_TIMEOUT,
                   "the first run to get going", interval=0.02)
        assert first.poll() is None, output(tmp_path / "first")
        first.send_signal(signal.SIGSTOP)  # frozen mid-run, holding the folder, however fast the machine
        try:
            second = cli("run", str(config), "--quiet", log=tmp_path / "second")
            assert second.wait(timeout=RUN_TIMEOUT) == 2, output(tmp_path / "second")
        finally:
            first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=RUN_TIMEOUT) == 0, output(tmp_path / "first")
    finally:
        stop(first, second)
    _, err = output(tmp_path / "second")
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert f"is in use by process {first.pid}" in err and str(run_dir) in err
    run = read_run(run_dir)
    assert all(ck.clean() for ck in run.values())
    assert stored(run) == total
    stats = sim.stats()
    assert stats["duplicate_200"] == 0 and stats["requests"] == total, "the refused run sent requests"


def test_cancelling_a_library_run_keeps_checkpoints_consistent_and_a_rerun_matches(tmp_path: Path) -> None:
    """``async with Arena(cfg) as a: await a.run()`` in a task group that gets cancelled, three times."""
    data = dataset(tmp_path, 20)
    queries = 40
    total = sum(expected_records(queries))
    run_dir, ref_dir = tmp_path / "cancelled", tmp_path / "uninterrupted"

    async def run_once(config_path: Path) -> ArenaResults:
        async with Arena(load_config(config_path)) as arena:
            return await arena.run()

    async def main() -> tuple[ArenaResults, ArenaResults, list[tuple[int, int]], dict, dict]:
        async with SimServer(sim_config()) as ref_sim:
            ref = await run_once(write_run_config(tmp_path / "ref.toml", ref_sim.url, ref_dir, data))
        cancels: list[tuple[int, int]] = []  # (records kept, answers lost) per cancellation
        lost_total = 0
        async with SimServer(sim_config()) as sim_server:
            config = write_run_config(tmp_path / "arena.toml", sim_server.url, run_dir, data)
            for fraction in (0.15, 0.5, 0.85):
                finished: list[ArenaResults] = []
                async with anyio.create_task_group() as tg:

                    async def job() -> None:
                        finished.append(await run_once(config))  # noqa: B023

                    tg.start_soon(job)
                    await wait_until_async(
                        lambda: answered_200(sim_server.stats()) - lost_total >= fraction * total  # noqa: B023
                        or finished,  # noqa: B023
                        RUN_TIMEOUT, f"{fraction:.0%} of the answers", interval=0.002)
                    tg.cancel_scope.cancel()
                assert not finished
                _folder_closed_cleanly(run_dir)
                await wait_until_async(lambda: not sim_server.stats()["in_flight"], 30,
                                       "the simulator to finish what it holds", interval=0.01)
                kept = stored(read_run(run_dir))
                lost = answered_200(sim_server.stats()) - kept - lost_total
                assert 0 <= lost <= MAX_IN_FLIGHT
                lost_total += lost
                cancels.append((kept, lost))
            before = sim_server.stats()
            resumed = await run_once(config)
            after = sim_server.stats()
        return ref, resumed, cancels, before, after

    ref, resumed, cancels, before, after = anyio.run(main)
    kept = [k for k, _ in cancels]
    assert kept == sorted(kept) and kept[0] > 0 and kept[-1] < total
    assert after["requests"] - before["requests"] == total - kept[-1], "the rerun sent more than was missing"
    assert after["duplicate_200"] == sum(lost for _, lost in cancels)
    run, ref_run = read_run(run_dir), read_run(ref_dir)
    assert all(ck.clean() for ck in run.values())
    assert results_of(run) == results_of(ref_run)
    assert len(results_of(run)[1]) == expected_records(queries)[1]
    assert leaderboard_text(resumed.boards) == leaderboard_text(ref.boards)
    assert [(g.query_id, g.candidate, g.candidate_is_a, g.outcome) for g in resumed.games] == [
        (g.query_id, g.candidate, g.candidate_is_a, g.outcome) for g in ref.games
    ]
    print(f"\ncancelled at {kept} of {total} records; lost in flight {[lost for _, lost in cancels]}; "
          f"duplicate_200 {after['duplicate_200']}")


def _catches(pid: int, sig: signal.Signals) -> bool:
    """True if process ``pid`` has a handler for ``sig`` (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # it has ended
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def _has_loaded(pid: int, library: str) -> bool:
    """True if process ``pid`` has mapped a shared library whose path contains ``library``."""
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:  # it has ended
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.exclusive
# moments in the CLI's imports, early to late: the extension modules of orjson, numpy and aiohttp
@pytest.mark.parametrize("library", ["orjson/orjson", "numpy/_core/_multiarray_umath", "aiohttp/_http_parser"],
                         ids=["orjson", "numpy", "aiohttp"])
def test_sigterm_while_the_cli_is_still_starting_exits_130(sim: SimProcess, tmp_path: Path, library: str) -> None:
    """A supervisor's SIGTERM that lands while the CLI imports its modules (before a run has installed its
    handlers) ends it like Ctrl-C: status 130 and the one-line message, not death by signal (-15).

    The signal is sent once the CLI has installed its first SIGTERM handler and loaded ``library``: a
    moment in its imports however fast the machine (a fixed delay landed before the handler, and the
    process died of the signal, when the machine was busy)."""
    data = dataset(tmp_path, QUERIES_PER_SUBSET)
    config = write_run_config(tmp_path / "arena.toml", sim.url, tmp_path / "run", data)
    log = tmp_path / "early"
    proc = cli("run", str(config), "--quiet", log=log)
    try:
        wait_until(lambda: proc.poll() is not None or (_catches(proc.pid, signal.SIGTERM)
                                                       and _has_loaded(proc.pid, library)),
                   30, f"the CLI to catch SIGTERM and load {library}", interval=0.001)
        assert proc.poll() is None, output(log)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    finally:
        stop(proc)
    assert rc == 130, output(log)
    assert output(log)[1] == INTERRUPTED_MESSAGE + "\n"
