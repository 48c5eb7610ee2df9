"""The scenario EvalScope was measured on (docs/spec.md, section 5), end to end on the simulator.

200 `arena` + 50 `example` queries, 3 models (one baseline, two candidates), 50 ms latency on every
request, concurrency 32 per endpoint: 750 generations + 1,000 judge calls = 1,750 requests. Little's
law bounds the run at 1,750 x 50 ms / 32 = 2.73 s; the bar is <= 1.5x that. EvalScope took 66 s.

    python benchmarks/bench_arena.py [--latency 0.05] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import anyio
import orjson

from arena_engine.config import config_from_dict
from arena_engine.pipeline import Arena, loop_options
from arena_engine.sim import Latency, SimConfig, SimModel
from arena_engine.sim.process import SimProcess

EVALSCOPE_SECONDS = 66.0  # 24.2 s generation + 42.4 s arena at concurrency 32 (docs/spec.md, section 5)


def write_dataset(folder: Path, n_arena: int, n_example: int) -> None:
    folder.mkdir(parents=True)
    (folder / "arena.jsonl").write_bytes(b"".join(
        orjson.dumps({"query": f"Open question number {i}: how would you approach topic {i % 37}?"}) + b"\n"
        for i in range(n_arena)))
    (folder / "example.jsonl").write_bytes(b"".join(
        orjson.dumps({"query": f"Fact question {i}?", "response": f"The answer to fact {i} is {i * 7}."}) + b"\n"
        for i in range(n_example)))


async def plain_reference(url: str, per_model: dict[str, int], concurrency: int) -> float:
    """The same number of requests per endpoint through a plain aiohttp worker pool per endpoint, with
    no dependencies between them (an upper bound for any pipeline on this machine, measured now)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker(model: str, todo: list[int]) -> None:
            while todo:
                i = todo.pop()
                body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": f"plain {i} " * 30}]})
                async with session.post(url + "/chat/completions", data=body,
                                        headers={"content-type": "application/json"}) as resp:
                    orjson.loads(await resp.read())

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for model, n in per_model.items():
                todo = list(range(n))
                for _ in range(concurrency):
                    tg.start_soon(worker, model, todo)
        return time.perf_counter() - t0


async def main(latency: float, concurrency: int, n_arena: int, n_example: int, rounds: int) -> int:
    load0 = os.getloadavg()
    models = ("bench-base", "bench-a", "bench-b")
    sim_cfg = SimConfig(
        models=tuple(SimModel(m, quality=q) for m, q in zip(models, (0.0, 0.8, -0.8), strict=True))
        + (SimModel("bench-judge", judge=True),),
        latency=Latency("fixed", latency),
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "general_qa"
        write_dataset(data, n_arena, n_example)
        with SimProcess(sim_cfg) as sim:  # its own process: the server does not eat the client's CPU
            cfg = config_from_dict({
                "run": {"output_dir": str(Path(tmp) / "run"), "fsync_interval": 1.0},
                "datasets": [{"name": "general_qa", "path": str(data)}],
                "models": [{"name": m, "api_url": sim.url, "concurrency": concurrency} for m in models],
                "judge": {"name": "bench-judge", "api_url": sim.url, "concurrency": concurrency},
                "rating": {"rounds": rounds},
            }, source="<bench>")
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            wall0 = time.time()
            async with Arena(cfg) as arena:
                results = await arena.run()
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            stats = sim.stats()
            plain = await plain_reference(sim.url, stats["per_model"], concurrency)
    first = min(stats["first_request"].values()) - wall0
    last = max(stats["last_request"].values()) - wall0
    requests = stats["requests"]
    bound = requests * latency / concurrency
    ratio = elapsed / bound
    print(f"requests sent:           {requests} ({stats['per_model']})")
    print(f"max in flight at server: {stats['max_in_flight']}")
    print(f"elapsed (incl. ratings): {elapsed:.2f} s  (first request at {first:.2f} s, last sent at {last:.2f} s)")
    print(f"client CPU:              {cpu:.2f} s ({1e6 * cpu / requests:.0f} us per request, all stages)")
    print(f"Little's-law bound:      {bound:.2f} s  ({requests} x {latency * 1000:.0f} ms / {concurrency})")
    print(f"ratio elapsed/bound:     {ratio:.2f}  (bar: <= 1.5)")
    print(f"plain aiohttp, same requests per endpoint, no stages: {plain:.2f} s  (bound x {plain / bound:.2f}); "
          f"arena / plain = {elapsed / plain:.2f}")
    print(f"EvalScope's {EVALSCOPE_SECONDS:.0f} s (docs/spec.md section 5: measured once on this machine, not in this "
          f"run, so only a rough guide; the plain pool above is this run's reference): {EVALSCOPE_SECONDS / elapsed:.1f}x")
    print(f"load average: {load0[0]:.2f} before, {os.getloadavg()[0]:.2f} after (2 cores, shared)")
    print("overall:", ", ".join(f"{e.model} {100 * e.winrate:.1f}%" for e in results.overall.entries))
    return 0 if ratio <= 1.5 else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--arena", type=int, default=200)
    ap.add_argument("--example", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=1000)
    a = ap.parse_args()
    sys.exit(anyio.run(main, a.latency, a.concurrency, a.arena, a.example, a.rounds, backend_options=loop_options()))
