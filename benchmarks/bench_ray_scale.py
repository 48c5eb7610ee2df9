"""Ray at scale: 8 workers, each bound by its concurrency at 200 ms latency, against one worker; then
the same 8 workers under a cluster-wide requests-per-minute limit, counted at the server.

The simulator runs in its own process with a fixed latency and no limits of its own. Every endpoint
allows `--concurrency` slots per worker (the judge twice that): the config's concurrency is split
between the workers up front, so the 8-worker run is configured with 8x the slots of the 1-worker run
and 8x its queries; both should take about the same time, so 8 workers should send about 8x the
requests per second. Rates are the server's, which leaves out Ray's start-up, the shard merge and the
ratings: first to last request received, and steady (the middle half of the arrivals, leaving out
workers that start one after another and the last stragglers); the bar reads the steady rates.

The limited run gives every endpoint an RPM over one-second windows at `--limit-share` of what the
8 workers sent per endpoint unlimited, so the limit binds; the server's busiest one-second window
per endpoint must hold no more than the limit, and the rate reached is shown against the limit.

    python benchmarks/bench_ray_scale.py [--workers 8] [--queries 150] [--concurrency 8] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ray import JUDGE, MODELS, config, write_dataset

from arena_engine.config import RunConfig
from arena_engine.distributed import run_on_ray
from arena_engine.limits import Limits
from arena_engine.sim import Latency, SimConfig, SimModel
from arena_engine.sim.process import SimProcess

WINDOW = 1.0


def max_in_window(times: list[float], period: float) -> int:
    """The most requests the server received within any half-open window of ``period`` seconds."""
    times = sorted(times)
    best = j = 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + period:
            j += 1
        best = max(best, j - i)
    return best


def limited(cfg: RunConfig, per_second: dict[str, float]) -> RunConfig:
    def limit(ep, name):  # type: ignore[no-untyped-def]
        return replace(ep, limits=Limits(concurrency=ep.limits.concurrency, rpm=per_second[name] * 60.0,
                                         window=WINDOW))

    models = tuple(replace(m, endpoint=limit(m.endpoint, m.name)) for m in cfg.models)
    return replace(cfg, models=models, judge=replace(cfg.judge, endpoint=limit(cfg.judge.endpoint, JUDGE)))


def run(sim: SimProcess, cfg: RunConfig, workers: int) -> dict:  # type: ignore[type-arg]
    sim.reset_stats()
    anyio.run(lambda: run_on_ray(cfg, workers=workers))
    stats = sim.stats(times=True)
    first = min(min(t) for t in stats["times"].values())
    last = max(max(t) for t in stats["times"].values())
    stats["rate"] = stats["requests"] / (last - first)
    # steady: the middle half of the arrivals, leaving out workers starting one after another and the tail
    every = sorted(t for times in stats["times"].values() for t in times)
    q1, q3 = every[len(every) // 4], every[3 * len(every) // 4]
    stats["steady"] = (len(every) // 2) / (q3 - q1)
    stats["per_endpoint"] = {m: len(t) / (max(t) - min(t)) for m, t in stats["times"].items()}
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--queries", type=int, default=150, help="queries per worker")
    ap.add_argument("--concurrency", type=int, default=8, help="slots per worker per model (the judge: twice)")
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--limit-share", type=float, default=0.6)
    a = ap.parse_args()
    import ray

    load0 = os.getloadavg()
    sim_cfg = SimConfig(models=(*(SimModel(m, quality=q) for m, q in MODELS), SimModel(JUDGE, judge=True)),
                        latency=Latency("fixed", a.latency))
    n = a.workers
    with tempfile.TemporaryDirectory(prefix="bench-ray-scale-") as tmp, SimProcess(sim_cfg) as sim:
        root = Path(tmp)
        ray.init(include_dashboard=False, log_to_driver=False)
        try:
            one_cfg = config(sim.url, root / "one", write_dataset(root / "d1", "one", a.queries), a.concurrency)
            one = run(sim, one_cfg, 1)
            many_cfg = config(sim.url, root / "many", write_dataset(root / "dn", "many", n * a.queries),
                              n * a.concurrency)
            many = run(sim, many_cfg, n)
            caps = {m: a.limit_share * r for m, r in many["per_endpoint"].items()}
            lim_cfg = limited(config(sim.url, root / "lim", write_dataset(root / "dl", "lim", n * a.queries),
                                     n * a.concurrency), caps)
            lim = run(sim, lim_cfg, n)
        finally:
            ray.shutdown()
    ratio = many["steady"] / (n * one["steady"])
    print(f"1 worker:  {one['requests']} requests, {one['rate']:.0f} req/s first to last request, "
          f"{one['steady']:.0f} req/s steady (the middle half of the arrivals)")
    print(f"{n} workers: {many['requests']} requests, {many['rate']:.0f} req/s first to last request "
          f"({many['rate'] / (n * one['rate']):.2f} x {n} x one worker's), {many['steady']:.0f} req/s steady "
          f"= {ratio:.2f} x {n} x one worker's")
    worst = {m: max_in_window(t, WINDOW) for m, t in lim["times"].items()}
    over = {m: (worst[m], caps[m]) for m in worst if worst[m] > caps[m]}
    for m in sorted(worst):
        print(f"limited {m:<13} limit {caps[m]:6.1f}/s  busiest 1 s window at the server {worst[m]:4d}  "
              f"rate while sending {lim['per_endpoint'][m]:6.1f}/s ({lim['per_endpoint'][m] / caps[m]:.2f} of the limit)")
    print(f"429s in the limited run: {lim['status'].get('429', 0)}")
    bars = [(f"{n} workers >= 0.8 x {n} x one worker", ratio >= 0.8, f"{ratio:.2f}"),
            ("cluster-wide RPM held in every 1 s window", not over, str(over or "no window over"))]
    for name, ok, fig in bars:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {fig}")
    load1 = os.getloadavg()
    print(f"load average: {load0[0]:.2f} before, {load1[0]:.2f} after")
    return 0 if all(ok for _, ok, _ in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
