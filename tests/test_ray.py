"""The Ray backend on a local two-CPU cluster: same results as the local backend, and each endpoint's
limit held across the workers (the simulator's own clock and 429s are the judge of that)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from arena_helpers import arena_config, dataset
from distributed_support import MODELS, RATES, limited_config, limited_sim, window_excess

from arena_engine.demo import demo_sim_config
from arena_engine.distributed import run_on_ray
from arena_engine.pipeline import JUDGE, run_arena
from arena_engine.report import leaderboard_text
from arena_engine.sim.process import SimProcess
from arena_engine.store import RunStore
from arena_engine.store.layered import WORKERS_DIR

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _keys(run_dir: Path) -> dict[str, set[bytes]]:
    with RunStore(run_dir) as store:
        return {kind: {k for k, _ in store.items(kind)} for kind in ("generations", "judgments")}


def test_ray_backend_gives_the_local_backends_results(tmp_path: Path) -> None:
    data = dataset(tmp_path, 15)
    with SimProcess(demo_sim_config(seed=0, latency=0.005)) as sim:
        local = run_arena(arena_config(sim.url, tmp_path / "local", data, MODELS))
        cfg = arena_config(sim.url, tmp_path / "ray", data, MODELS)
        distributed = anyio.run(lambda: run_on_ray(cfg, workers=2))
        assert sim.stats()["duplicate_200"] == 30 * (3 + 4)  # each request twice: once per backend
    assert leaderboard_text(distributed.boards) == leaderboard_text(local.boards)
    assert distributed.games == local.games
    assert distributed.failures == local.failures == 0
    for role in [*MODELS, JUDGE]:
        assert distributed.usage[role].requests == local.usage[role].requests
    assert _keys(tmp_path / "ray") == _keys(tmp_path / "local")
    assert not (tmp_path / "ray" / WORKERS_DIR).exists()
    # a rerun on either backend sends nothing: the run folder has it all
    again = run_arena(cfg)
    assert sum(u.requests for u in again.usage.values()) == 0
    assert leaderboard_text(again.boards) == leaderboard_text(local.boards)


def test_ray_workers_share_each_endpoints_rate_limit(tmp_path: Path) -> None:
    with SimProcess(limited_sim()) as sim:
        cfg = limited_config(sim.url, tmp_path, "run", queries=10)
        results = anyio.run(lambda: run_on_ray(cfg, workers=2))
        stats = sim.stats(times=True)
    assert results.failures == 0
    assert stats["status"].get("429", 0) == 0, stats["status"]
    assert window_excess(stats, RATES) == {}
    assert len(results.games) == 2 * 2 * 20
