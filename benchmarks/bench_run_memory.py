"""Peak memory of a whole `arena-engine run` against its size (issue 21's bar: 100k queries, 3 models + a
judge, peak RSS <= 300 MB and within 10% of the 10k run's).

For each size: the demo's models and judge (3 models + judge, lognormal latency around --latency-ms) on
the simulator in a process of its own, the demo's dataset (two subsets of half the queries each),
`arena-engine run CONFIG --quiet` as a child process with checkpoints and reports on, a fresh run folder;
the child's own peak RSS comes from wait4(). Prints each size's peak, the growth per query between the
smallest and the largest size, the 100k figure that growth implies when 100k was not run, and the load.

    python benchmarks/bench_run_memory.py [--queries 2000 8000] [--latency-ms 20]
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

from arena_engine.demo import demo_config, demo_sim_config, write_demo_dataset
from arena_engine.runfolder import config_to_dict
from arena_engine.sim.process import SimProcess

BAR_MB = 300.0
BAR_QUERIES = 100_000


def peak_of_run(config: Path) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of `arena-engine run CONFIG --quiet`, forked from this small process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "arena_engine.cli", "run", str(config), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        assert proc.stderr is not None
        raise SystemExit(f"the run of {config} exited {code}: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, nargs="+", default=[2000, 8000], help="run sizes (default 2000 8000)")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="the simulator's median latency (default 20)")
    a = ap.parse_args()
    load0 = os.getloadavg()[0]
    sizes = sorted(a.queries)
    peaks: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-run-memory-") as t, \
            SimProcess(demo_sim_config(latency=a.latency_ms / 1000)) as sim:
        for n in sizes:
            folder = Path(t) / str(n)
            data = write_demo_dataset(folder / "data", n // 2)
            cfg = folder / "arena.json"
            cfg.write_bytes(orjson.dumps(config_to_dict(demo_config(sim.url, folder, data))))
            peaks[n], wall = peak_of_run(cfg)
            print(f"{n:>7} queries ({7 * n:,} requests): peak RSS {peaks[n]:.0f} MB, wall {wall:.0f} s")
    small, large = sizes[0], sizes[-1]
    ok = True
    if large > small:
        per_query = (peaks[large] - peaks[small]) / (large - small) * 1024
        print(f"growth {per_query:.1f} KB per query between {small} and {large} queries")
        if BAR_QUERIES not in peaks:
            implied = peaks[large] + per_query * (BAR_QUERIES - large) / 1024
            print(f"implied at {BAR_QUERIES:,} queries: {implied:.0f} MB (bar {BAR_MB:.0f} MB; run --queries "
                  f"10000 100000 to measure it)")
            ok = implied <= BAR_MB
    if BAR_QUERIES in peaks:
        ok = peaks[BAR_QUERIES] <= BAR_MB
        if 10_000 in peaks:
            ok = ok and peaks[BAR_QUERIES] <= 1.1 * peaks[10_000]
    print(f"{'PASS' if ok else 'FAIL'} (bar: peak <= {BAR_MB:.0f} MB at {BAR_QUERIES:,} queries and within 10% "
          f"of 10k's); load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after (2 cores, shared)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
