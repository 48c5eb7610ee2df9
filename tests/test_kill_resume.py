"""SIGKILL at random moments, then completion: the results equal those of an uninterrupted run.

The simulator runs in its own long-lived process (lognormal latency, no faults); the CLI runs
``arena-engine run CONFIG --quiet`` in a subprocess that is killed with SIGKILL at ten seeded random
points of its progress, spread over generation and judging (the run streams, so both are in flight at
most moments), then rerun until it finishes. A second, fresh simulator with the same seed serves an
uninterrupted run of the same config into another folder for comparison.

A kill is taken in two steps: SIGSTOP freezes the run at the chosen moment (it sends and writes nothing
more), the simulator's ``in_flight`` counter is read, the simulator finishes the requests it holds, and
SIGKILL ends the frozen process. For the killed process this is the same as SIGKILL at the SIGSTOP
moment; it lets the test count exactly which answered requests never reached the checkpoints.

Figures (printed with ``pytest -s``): kills, per-kill records and in-flight counts, duplicates, times.
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from arena_helpers import dataset
from interrupt_helpers import (
    MAX_IN_FLIGHT,
    answered_200,
    cli,
    expected_records,
    output,
    read_run,
    results_of,
    sim_config,
    stop,
    stored,
    wait_until,
    write_run_config,
)

from arena_engine.sim.process import SimProcess

KILLS = 10
QUERIES_PER_SUBSET = 40  # the demo dataset has two subsets
KILL_SEED = 20240611
RUN_TIMEOUT = 120.0


@dataclass
class Kill:
    at: int  # records stored when the kill was due
    generations: int  # records on disk after the kill
    judgments: int
    torn: int  # files whose last line was cut short (repaired by the next run)
    server_in_flight: int  # requests the simulator was serving when the run froze
    lost: int  # answered 200 by the simulator, not in the checkpoints: these must be sent again
    seconds: float  # from start of this process to the kill


@pytest.mark.slow
def test_sigkill_at_random_moments_then_finish_equals_uninterrupted(tmp_path: Path) -> None:
    t0 = time.monotonic()
    data = dataset(tmp_path, QUERIES_PER_SUBSET)
    queries = 2 * QUERIES_PER_SUBSET
    n_gen, n_judge = expected_records(queries)
    total = n_gen + n_judge
    rng = random.Random(KILL_SEED)
    # Kill points in records stored: one drawn in each tenth of the first 95% of the run, so they cover
    # its start, the middle where generations and judgments interleave, and the judging-only tail.
    points = [int((i + rng.random()) * 0.95 * total / KILLS) for i in range(KILLS)]

    killed_dir, ref_dir = tmp_path / "killed", tmp_path / "uninterrupted"
    kills: list[Kill] = []
    lost_total = 0
    # The uninterrupted run, on a fresh simulator of the same seed, runs meanwhile (it is independent).
    with SimProcess(sim_config()) as ref_sim, SimProcess(sim_config()) as sim:
        ref_config = write_run_config(tmp_path / "uninterrupted.toml", ref_sim.url, ref_dir, data)
        ref_log = tmp_path / "uninterrupted"
        ref = cli("run", str(ref_config), "--quiet", log=ref_log)
        proc = finish = None
        try:
            config = write_run_config(tmp_path / "killed.toml", sim.url, killed_dir, data)
            for i, point in enumerate(points):
                log = tmp_path / f"killed-{i}"
                started = time.monotonic()
                proc = cli("run", str(config), "--quiet", log=log)
                # progress = 200 answers minus those lost at earlier kills = records stored
                wait_until(lambda: answered_200(sim.stats()) - lost_total >= point or proc.poll() is not None,  # noqa: B023
                           RUN_TIMEOUT, f"kill point {point}", interval=0.02)
                assert proc.poll() is None, f"run {i} ended before its kill point {point}: {output(log)}"
                proc.send_signal(signal.SIGSTOP)
                seconds = time.monotonic() - started
                frozen = sim.stats()
                wait_until(lambda: sim.stats()["in_flight"] == 0, 30, "the simulator to finish what it holds")
                proc.kill()
                assert proc.wait(timeout=30) == -signal.SIGKILL
                after = read_run(killed_dir)
                for kind, ck in after.items():
                    assert not ck.duplicates, f"kill {i}: duplicated {kind} records {ck.duplicates}"
                    assert not ck.bad_lines, f"kill {i}: corrupt {kind} lines {ck.bad_lines}"
                lost = answered_200(sim.stats()) - stored(after) - lost_total
                assert 0 <= lost <= MAX_IN_FLIGHT, f"kill {i}: {lost} answered requests lost"
                lost_total += lost
                kills.append(Kill(point, len(after["generations"].records), len(after["judgments"].records),
                                  sum(len(ck.torn_tail) > 0 for ck in after.values()), frozen["in_flight"], lost,
                                  seconds))

            log = tmp_path / "killed-final"
            finish = cli("run", str(config), "--quiet", log=log)
            assert finish.wait(timeout=RUN_TIMEOUT) == 0, output(log)
            assert "Traceback" not in output(log)[1]
            killed_stats = sim.stats()
            assert ref.wait(timeout=RUN_TIMEOUT) == 0, output(ref_log)
            ref_stats = ref_sim.stats()
        finally:
            stop(ref, proc, finish)
    t_total = time.monotonic() - t0

    print(f"\n{KILLS} SIGKILLs over {total} requests ({n_gen} generations, {n_judge} judgments):")
    for i, k in enumerate(kills):
        print(f"  kill {i}: due at {k.at:4d} records, {k.seconds:5.2f} s after start; on disk {k.generations:3d} gen "
              f"+ {k.judgments:3d} judg, {k.torn} torn; simulator in flight {k.server_in_flight:2d}; lost {k.lost:2d}")
    dup = killed_stats["duplicate_200"]
    print(f"duplicate_200 = {dup}; lost at kills = {lost_total}; simulator in flight at the kills = "
          f"{sum(k.server_in_flight for k in kills)}; concurrency bound = {KILLS} x {MAX_IN_FLIGHT} = "
          f"{KILLS * MAX_IN_FLIGHT}; requests {killed_stats['requests']} (uninterrupted {ref_stats['requests']})")
    print(f"time: {sum(k.seconds for k in kills):.1f} s from starts to kills; whole test {t_total:.1f} s")

    killed, uninterrupted = read_run(killed_dir), read_run(ref_dir)
    # the kills landed across the run: some before generation was over, some once judging was well under way
    assert sum(k.generations < n_gen for k in kills) >= KILLS // 2
    assert any(k.judgments >= n_judge // 2 for k in kills)
    # every record exactly once, and the same records as the uninterrupted run
    for kind in ("generations", "judgments", "failures"):
        assert killed[kind].clean(), f"{kind}: {killed[kind].duplicates} {killed[kind].bad_lines}"
        assert uninterrupted[kind].clean()
    assert len(killed["generations"].records) == n_gen and len(killed["judgments"].records) == n_judge
    assert not killed["failures"].records and not uninterrupted["failures"].records
    assert results_of(killed) == results_of(uninterrupted)
    board = (killed_dir / "report" / "leaderboard.txt").read_text()
    assert board == (ref_dir / "report" / "leaderboard.txt").read_text()
    assert "=== OVERALL LEADERBOARD ===" in board
    # nothing was paid for twice except what was in flight at a kill
    assert ref_stats["duplicate_200"] == 0 and answered_200(ref_stats) == total
    assert dup == lost_total, "a request whose result was already stored was sent again"
    assert dup <= KILLS * MAX_IN_FLIGHT
    assert answered_200(killed_stats) == total + dup
