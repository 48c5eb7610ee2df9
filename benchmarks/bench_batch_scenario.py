"""EvalScope's scenario in batch mode against live mode, through the whole command line (issue 22's first
bar: same leaderboard as live, exactly one generation and one judgment per key, cost shown at 50%).

200 `arena` + 50 `example` queries, 3 models and a judge on the simulator (its own process, the same seed
for both runs, 50 ms per live request, a batch taking --batch-seconds): `arena-engine run` once with every
endpoint live and once with every endpoint `mode = "batch"`, each on a new run folder, then compares the
two leaderboards (leaderboard.txt, byte for byte), counts what the simulator's Batch API saw (keys per
batch, answers per key) and reads each endpoint's cost from the batch run's report.json.

    python benchmarks/bench_batch_scenario.py [--batch-seconds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_arena import write_dataset

from arena_engine.sim import Latency, SimConfig, SimModel
from arena_engine.sim.process import SimProcess

MODELS = ("bench-base", "bench-a", "bench-b")
JUDGE = "bench-judge"
PRICE = 'price_in = 1.0\nprice_out = 2.0\n'


def config_text(url: str, out: Path, data: Path, batch: bool) -> str:
    mode = 'mode = "batch"\n[models.batch]\npoll_interval = 0.2\n' if batch else ""
    models = "".join(f'[[models]]\nname = "{m}"\napi_url = "{url}"\nidentity = "{m}"\nconcurrency = 32\n{PRICE}{mode}\n'
                     for m in MODELS)
    judge_mode = 'mode = "batch"\n[judge.batch]\npoll_interval = 0.2\n' if batch else ""
    return (f'[run]\noutput_dir = "{out}"\n\n[[datasets]]\nname = "general_qa"\npath = "{data}"\n\n{models}'
            f'[arena]\nbaseline = "bench-base"\n\n'
            f'[judge]\nname = "{JUDGE}"\napi_url = "{url}"\nidentity = "{JUDGE}"\nconcurrency = 32\n{PRICE}{judge_mode}')


def run(cfg: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).with_name("arena-engine")), "run", str(cfg), "--quiet"],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"arena-engine run {cfg} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-seconds", type=float, default=2.0, help="how long a simulated batch takes")
    a = ap.parse_args()
    load0 = os.getloadavg()[0]
    sim_cfg = SimConfig(
        models=tuple(SimModel(m, quality=q) for m, q in zip(MODELS, (0.0, 0.8, -0.8), strict=True))
        + (SimModel(JUDGE, judge=True),),
        latency=Latency("fixed", 0.05), seed=7, batch_seconds=a.batch_seconds,
    )
    failed = 0

    def check(ok: bool, what: str) -> None:
        nonlocal failed
        failed += not ok
        print(f"  {what}  -> {'PASS' if ok else 'FAIL'}")

    with tempfile.TemporaryDirectory(prefix="bench-batch-scenario-") as t, SimProcess(sim_cfg) as sim:
        tmp = Path(t)
        data = tmp / "general_qa"
        write_dataset(data, 200, 50)
        walls = {}
        for kind in ("live", "batch"):
            cfg = tmp / f"{kind}.toml"
            cfg.write_text(config_text(sim.url, tmp / kind, data, kind == "batch"), encoding="utf-8")
            sim.reset_stats()
            walls[kind] = run(cfg)
            if kind == "live":
                live_requests = sim.stats()["requests"]
        stats = sim.stats()
        batches = stats["batches"]
        board = {k: (tmp / k / "report" / "leaderboard.txt").read_text(encoding="utf-8") for k in walls}
        report = orjson.loads((tmp / "batch" / "report" / "report.json").read_bytes())
        live_report = orjson.loads((tmp / "live" / "report" / "report.json").read_bytes())
    queries = 250
    keys = 3 * queries + 2 * 2 * queries
    print(f"EvalScope's scenario (200 + 50 queries, 3 models + judge): live run {walls['live']:.1f} s "
          f"({live_requests} requests), batch run {walls['batch']:.1f} s (batches of {a.batch_seconds:g} s)")
    check(board["batch"] == board["live"], "leaderboard.txt of the batch run equals the live run's, byte for byte")
    check(stats["requests"] == 0, f"the batch run sent {stats['requests']} live requests (0 expected)")
    check(batches["keys"] == keys and batches["answered"] == keys,
          f"keys in batches {batches['keys']}, answered {batches['answered']} (expected {keys}: "
          f"{3 * queries} generations + {4 * queries} judgments)")
    check(batches["keys_in_two_batches"] == 0 and batches["answered_twice"] == 0,
          f"keys in two batches {batches['keys_in_two_batches']}, answered twice {batches['answered_twice']}")
    for name in (*MODELS, JUDGE):
        e, live_e = report["endpoints"][name], live_report["endpoints"][name]
        ratio = e["cost"] / e["cost_live"] if e["cost_live"] else float("nan")
        check(e["mode"] == "batch" and abs(ratio - 0.5) < 1e-9 and abs(e["cost_live"] - live_e["cost"]) < 1e-9,
              f"{name}: cost {e['cost']:.6f} = {ratio:.2f} x the live price {e['cost_live']:.6f} "
              f"(live run: {live_e['cost']:.6f})")
    print(f"load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after (2 cores, shared)")
    print("ALL PASS" if not failed else f"{failed} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
