"""Throughput of the Ray backend with 1, 2 and 4 workers against a latency-bound simulator, beside the
local backend measured in the same run.

The simulator runs in its own process with a fixed latency (default 0.5 s) and no limits; every
endpoint allows a high concurrency (default 1,024 per model, 2,048 for the judge, split between the
workers), so a run is bound by how fast the client processes can push requests, which is what more
workers add. Each run gets fresh queries (new request bodies), so nothing is reused.

Two figures per run: requests/s while sending (the simulator's first to last request: the steady
pipeline) and requests/s over the whole call (with Ray's start-up, the shard merge and the ratings).
On this 2-core machine the simulator needs a core of its own at these rates, so more workers can only
help until the cores are busy; on a cluster each worker brings its own.

    python benchmarks/bench_ray.py [--queries 1500] [--latency 0.5] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import anyio
import orjson

from arena_engine.config import RunConfig, config_from_dict
from arena_engine.distributed import run_on_ray
from arena_engine.pipeline import run_arena
from arena_engine.sim import Latency, SimConfig, SimModel
from arena_engine.sim.process import SimProcess

MODELS = (("bench-base", 0.0), ("bench-strong", 1.0), ("bench-weak", -1.0))
JUDGE = "bench-judge"


def write_dataset(folder: Path, tag: str, n: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "arena.jsonl").write_bytes(b"".join(
        orjson.dumps({"query": f"[{tag}] open question {i}: how would you approach topic {i % 53}?"}) + b"\n"
        for i in range(n)))
    return folder


def config(url: str, run_dir: Path, data: Path, concurrency: int) -> RunConfig:
    cfg = config_from_dict({
        "run": {"output_dir": str(run_dir), "seed": 0, "fsync_interval": 1.0},
        "datasets": [{"name": "bench", "path": str(data)}],
        "models": [{"name": m, "api_url": url, "concurrency": concurrency, "generation": {"max_tokens": 64}}
                   for m, _ in MODELS],
        "arena": {"baseline": MODELS[0][0]},
        "judge": {"name": JUDGE, "api_url": url, "concurrency": 2 * concurrency},
        "rating": {"rounds": 100},
    }, source="<bench>")
    return replace(cfg, queries_in_flight=4 * concurrency) if cfg.queries_in_flight is None else cfg


def measure(label: str, sim: SimProcess, fn, requests: int) -> float:  # type: ignore[no-untyped-def]
    """Run ``fn``; print and return its requests/s while sending (the simulator's clock)."""
    before = sim.stats()
    last_before = max(before["last_request"].values(), default=0.0)
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    after = sim.stats(times=True)
    sent = after["requests"] - before["requests"]
    assert sent == requests, f"{label}: {sent} requests sent, {requests} expected"
    first = min(t for times in after["times"].values() for t in times if t > last_before)
    span = max(after["last_request"].values()) - first
    rate = sent / span
    print(f"{label:<10} {sent:>6} requests  {rate:7.0f} req/s while sending ({span:5.1f} s)  "
          f"{sent / wall:7.0f} req/s overall ({wall:5.1f} s)", flush=True)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=1500)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--concurrency", type=int, default=1024, help="per model endpoint (the judge: twice)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    import ray

    requests = args.queries * (len(MODELS) + 2 * (len(MODELS) - 1))
    sim_cfg = SimConfig(models=(*(SimModel(m, quality=q) for m, q in MODELS), SimModel(JUDGE, judge=True)),
                        latency=Latency("fixed", args.latency))
    print(f"bench_ray: {args.queries} queries = {requests} requests per run, latency {args.latency} s, "
          f"concurrency {args.concurrency}/model {2 * args.concurrency}/judge (split between workers)")
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp, SimProcess(sim_cfg) as sim:
        root = Path(tmp)

        local_cfg = config(sim.url, root / "local", write_dataset(root / "data-local", "local", args.queries),
                           args.concurrency)
        local = measure("local", sim, lambda: run_arena(local_cfg), requests)
        ray.init(include_dashboard=False, log_to_driver=False)
        try:
            cpus = ray.cluster_resources().get("CPU", 0)
            for n in args.workers:
                cfg = config(sim.url, root / f"ray{n}", write_dataset(root / f"data-{n}", f"ray{n}", args.queries),
                             args.concurrency)
                rate = measure(f"ray x{n}", sim, lambda cfg=cfg, n=n: anyio.run(lambda: run_on_ray(cfg, workers=n)),
                                  requests)
                print(f"{'':<10} ratio to local while sending: {rate / local:.2f}", flush=True)
        finally:
            ray.shutdown()
    print(f"(cluster: {cpus:g} CPUs; the simulator shares them)")


if __name__ == "__main__":
    main()
