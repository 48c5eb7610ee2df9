"""Time to first request: from the start of an `arena-engine run` process to its first request's arrival.

    python benchmarks/bench_first_request.py [--reps 7] [--queries 5] [--old-code DIR]

A simulator runs in its own process (arena_engine.sim.process.SimProcess) and notes the wall-clock
arrival of each model's first request. Each rep starts a fresh CLI process on a fresh run folder
(so it has something to send) and measures `first arrival - time just before the process was spawned`.
Two variants, rotated rep by rep so that a change in the machine's load hits both alike:

- lazy: the CLI as shipped (`arena_engine.cli.main(["run", CONFIG, "--quiet"])`);
- eager: the same, after importing the results' modules up front (rating, leaderboard, metrics with
  numba, report), which is what the CLI did before they were moved off the request path;
- old (with --old-code DIR): the CLI of another checkout, e.g. the previous commit's package
  (`mkdir /tmp/old && git archive HEAD~1 arena_engine | tar -x -C /tmp/old`), run from DIR.

Prints both medians, their difference, the bar (<= 0.4 s, issue 21, on a warm install) and the load
average before and after. A warm-up run of each variant goes first (numba's cache, the page cache).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arena_engine.demo import demo_sim_config, write_demo_dataset
from arena_engine.sim.process import SimProcess

BAR = 0.4
EAGER = ("import numba, arena_engine.rating, arena_engine.leaderboard, arena_engine.metrics, "
         "arena_engine.report, arena_engine.report.tables; ")
LAUNCH = "import sys; {eager}from arena_engine.cli import main; sys.exit(main(['run', sys.argv[1], '--quiet']))"


def _config(url: str, run_dir: Path, data: Path) -> dict[str, object]:
    def ep(name: str) -> dict[str, object]:
        return {"name": name, "api_url": url, "identity": name, "concurrency": 16}

    return {
        "run": {"output_dir": str(run_dir), "seed": 1},
        "datasets": [{"name": "general_qa", "path": str(data)}],
        "models": [ep("sim-base"), ep("sim-strong"), ep("sim-weak")],
        "arena": {"baseline": "sim-base"},
        "judge": ep("sim-judge"),
        "rating": {"rounds": 50},
    }


def one_run(sim: SimProcess, root: Path, data: Path, variant: str, n: int, old_code: Path | None) -> float:
    run_dir = root / f"run-{n}"
    cfg = root / f"config-{n}.json"
    cfg.write_bytes(orjson.dumps(_config(sim.url, run_dir, data)))
    sim.reset_stats()
    code = LAUNCH.format(eager=EAGER if variant == "eager" else "")
    where = old_code if variant == "old" else Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(where)}  # `-c` also puts the working folder first on sys.path
    started = time.time()
    proc = subprocess.run([sys.executable, "-c", code, str(cfg)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=120, cwd=where, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"the run failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
    first = sim.stats()["first_request"]
    return min(first.values()) - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=7, help="measured runs per variant (default 7)")
    ap.add_argument("--queries", type=int, default=5, help="queries per subset of the demo dataset (default 5)")
    ap.add_argument("--old-code", type=Path, help="a folder holding another arena_engine package to compare with")
    args = ap.parse_args()
    variants = ["lazy", "eager"] + (["old"] if args.old_code else [])
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench-first-") as tmp, SimProcess(demo_sim_config(latency=0.005)) as sim:
        root = Path(tmp)
        data = write_demo_dataset(root / "data" / "general_qa", args.queries)
        n = 0
        for variant in variants:  # warm-up: numba's cache, the page cache
            one_run(sim, root, data, variant, n := n + 1, args.old_code)
        for rep in range(args.reps):
            k = rep % len(variants)
            for variant in variants[k:] + variants[:k]:  # rotated: each variant goes first in turn
                times[variant].append(one_run(sim, root, data, variant, n := n + 1, args.old_code))
    load_after = os.getloadavg()
    med = {v: statistics.median(t) for v, t in times.items()}
    lazy = med["lazy"]
    label = {"lazy": "lazy (as shipped)", "eager": "eager results' imports", "old": f"old code ({args.old_code})"}
    print(f"time to first request, median of {args.reps} rotated runs each ({2 * args.queries} queries, 3 models + judge):")
    for v in variants:
        print(f"  {label[v]:<28} {med[v]:.3f} s   runs: {' '.join(f'{t:.3f}' for t in times[v])}")
    for v in variants[1:]:
        print(f"  lazy vs {v}: {med[v] - lazy:.3f} s saved ({lazy / med[v]:.2f}x)")
    print(f"  bar: <= {BAR} s -> {'MET' if lazy <= BAR else 'NOT MET'}")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} (2 cores, shared)")


if __name__ == "__main__":
    main()
