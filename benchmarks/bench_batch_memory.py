"""200,000 requests in batch mode: the arena process's peak memory (bar: <= 300 MB).

A baseline and one candidate answer N queries, one judge judges both orders: 4N requests, all in
``mode = "batch"`` on the simulator's OpenAI Batch API (in its own process, so its memory is not
counted). The run goes through the same passes as ``arena-engine run``: the answers' batches, then the
judge's. Printed: requests, batches, wall time, this process's peak RSS (ru_maxrss), the bar and
PASS/FAIL, and the load average.

    .venv/bin/python benchmarks/bench_batch_memory.py [--requests 200000]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import anyio

from arena_engine.commands import run_batched
from arena_engine.config import config_from_dict
from arena_engine.demo import write_demo_dataset
from arena_engine.pipeline import Arena
from arena_engine.sim import Latency, SimConfig, SimModel
from arena_engine.sim.process import SimProcess

BAR_MB = 300.0


async def _live(cfg: object) -> object:
    async with Arena(cfg) as arena:  # type: ignore[arg-type]
        return await arena.run()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--live", action="store_true", help="the same run in live mode, for comparison")
    args = ap.parse_args()
    per_subset = max(1, args.requests // 8)  # two subsets, 4 requests per query
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        data = write_demo_dataset(tmp / "data" / "qa", per_subset)
        sim = SimConfig(models=(SimModel("base", 0.0), SimModel("cand", 0.5), SimModel("judge", judge=True)),
                        seed=1, latency=Latency("fixed", 0.0), batch_seconds=0.5, track_bodies=False)
        batch = {} if args.live else {"mode": "batch", "batch": {"poll_interval": 0.2}}
        with SimProcess(sim) as server:
            cfg = config_from_dict({
                "run": {"output_dir": str(tmp / "run"), "seed": 1},
                "datasets": [{"name": "qa", "path": str(data)}],
                "models": [{"name": m, "api_url": server.url, "identity": m, **batch,
                            "generation": {"temperature": 0.0, "max_tokens": 128}} for m in ("base", "cand")],
                "arena": {"baseline": "base"},
                "judge": {"name": "judge", "api_url": server.url, "identity": "judge", **batch},
                "rating": {"rounds": 10},
            }, source="<bench>")
            t0 = time.monotonic()
            res = anyio.run(_live, cfg) if args.live else anyio.run(run_batched, cfg, lambda s: Arena(cfg, batch=s))
            wall = time.monotonic() - t0
            stats = server.stats()["batches"]
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rated = sum(1 for g in res.games if g.outcome is not None)
        requests = stats["answered"] if not args.live else len(res.games) * 2
        print(f"requests answered by batches: {requests} (asked for {args.requests}); batches created: "
              f"{stats['created']}; keys in two batches: {stats['keys_in_two_batches']}; answered twice: "
              f"{stats['answered_twice']}")
        print(f"games rated: {rated} of {len(res.games)}; wall time {wall:.1f} s")
        print(f"peak RSS of the arena process: {peak_mb:.1f} MB (bar <= {BAR_MB:.0f} MB): "
              f"{'PASS' if peak_mb <= BAR_MB else 'FAIL'}")
        print(f"load average: {os.getloadavg()}")
        return 0 if peak_mb <= BAR_MB and requests >= args.requests else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
