"""`arena-engine run CONFIG --backend ray`: a worker process SIGKILLed mid-run is restarted by Ray and
resumes from its shard's checkpoints; the run finishes with the same leaderboard as the local backend,
and no answer that reached a checkpoint is paid for twice."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from arena_helpers import dataset
from interrupt_helpers import (
    MAX_IN_FLIGHT,
    cli,
    expected_records,
    output,
    read_run,
    sim_config,
    stop,
    wait_until,
    write_run_config,
)

from arena_engine.config import load_config
from arena_engine.pipeline import run_arena
from arena_engine.report import leaderboard_text
from arena_engine.sim.process import SimProcess
from arena_engine.store.layered import WORKERS_DIR, worker_dir

pytest.importorskip("ray")

QUERIES_PER_SUBSET = 60
RUN_TIMEOUT = 240.0


def _shard_records(folder: Path) -> int:
    ck = folder / "checkpoints"
    return sum(p.read_bytes().count(b"\n") for p in ck.glob("*.jsonl")) if ck.is_dir() else 0


@pytest.mark.slow
def test_killed_ray_worker_is_restarted_and_the_run_loses_nothing(tmp_path: Path) -> None:
    data = dataset(tmp_path, QUERIES_PER_SUBSET)
    n_gen, n_judge = expected_records(2 * QUERIES_PER_SUBSET)
    run_dir = tmp_path / "ray-run"
    with SimProcess(sim_config(latency=0.1)) as sim:
        config = write_run_config(tmp_path / "run.toml", sim.url, run_dir, data)
        log = tmp_path / "ray"
        proc = cli("run", str(config), "--backend", "ray", "--workers", "2", "--quiet", log=log)
        try:
            victim = worker_dir(run_dir, 0, 2)
            wait_until(lambda: _shard_records(victim) >= 40 or proc.poll() is not None, RUN_TIMEOUT,
                       "worker 0 to store 40 records", interval=0.02)
            assert proc.poll() is None, output(log)
            pid = int((victim / ".lock").read_text().strip())
            assert pid != proc.pid
            os.kill(pid, signal.SIGKILL)
            killed_at = _shard_records(victim)
            assert proc.wait(timeout=RUN_TIMEOUT) == 0, output(log)
        finally:
            stop(proc)
        stats = sim.stats()
        out, err = output(log)
        assert "Traceback" not in err
        # what reached a checkpoint before the kill was not sent again: repeats are bounded by what was
        # in flight in the killed worker (its answers never reached its checkpoint)
        assert stats["duplicate_200"] <= MAX_IN_FLIGHT, stats
        run = read_run(run_dir)
        assert len(run["generations"].records) == n_gen and len(run["judgments"].records) == n_judge
        assert not any(ck.duplicates for ck in run.values())
        assert not (run_dir / WORKERS_DIR).exists()
        local = run_arena(load_config(config).with_output_dir(tmp_path / "local"))
    assert leaderboard_text(local.boards) in out
    print(f"\nkilled worker pid {pid} at {killed_at} shard records; duplicate 200s {stats['duplicate_200']}")
