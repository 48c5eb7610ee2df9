"""Rating speed by method and data layout (issue 19's bars), medians of warm runs, beside choix.

    python benchmarks/bench_rating_layouts.py            # every case, 5 runs each
    python benchmarks/bench_rating_layouts.py --runs 7 --only pairs10_bt,pairs10_lc

Each case runs in a fresh worker process (so its peak RSS is its own) after a warm-up call that
compiles (or loads) the numba kernels; the time is the median of `--runs` calls, printed with every
run and the load average (the machine may be shared: compare CPU time when the load exceeds the CPU
count). choix (Hunter's MM / I-LSR, point estimate only) is timed on the same games where it is
installed: `choix.ilsr_pairwise` on (winner, loser) pairs, ties and strong copies dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _outcomes(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    quality = rng.normal(0, 1, k)
    u = quality[a] - quality[b] + rng.logistic(size=a.size)
    return np.select([u > 2, u > 0.5, u > -0.5, u > -2], [2, 1, 0, -1], -2).astype(np.int8)


def pairs(k: int, games: int, rows_per_query: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Queries of `rows_per_query` games: rows_per_query / 2 different random pairs, each in both orders."""
    rng = np.random.default_rng(seed)
    half = games // 2
    a = rng.integers(0, k, half)
    b = (a + rng.integers(1, k, half)) % k
    a, b = np.stack([a, b], 1).ravel(), np.stack([b, a], 1).ravel()
    q = np.arange(a.size) // rows_per_query
    return a, b, _outcomes(rng, a, b, k), q


def sweep(candidates: int, games: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    queries = games // (2 * candidates)
    cand = np.tile(np.repeat(np.arange(1, candidates + 1), 2), queries)
    first = np.tile(np.array([True, False] * candidates), queries)
    a = np.where(first, cand, 0)
    b = np.where(first, 0, cand)
    q = np.repeat(np.arange(queries), 2 * candidates)
    return a, b, _outcomes(rng, a, b, candidates + 1), q


CASES = {
    # name: (builder, k, kwargs of rate_battles, bar in seconds, label)
    "pairs10_bt": (lambda: pairs(10, 100_000, 2), 10, {"rounds": 1000}, 0.5, "K10 N100k BT, default interval"),
    "pairs10_bt_boot": (lambda: pairs(10, 100_000, 2), 10, {"rounds": 1000, "interval": "bootstrap"}, 0.5,
                        "K10 N100k BT, bootstrap R1000"),
    "pairs10_lc": (lambda: pairs(10, 100_000, 2), 10, {"rounds": 1000, "lengths": "random"}, 0.5,
                   "K10 N100k length-controlled, default interval"),
    "pairs10_lc_boot": (lambda: pairs(10, 100_000, 2), 10,
                        {"rounds": 1000, "lengths": "random", "interval": "bootstrap"}, 0.5,
                        "K10 N100k length-controlled, bootstrap R1000"),
    "pairs10_elo": (lambda: pairs(10, 100_000, 2), 10, {"rounds": 1000, "method": "elo"}, 0.5,
                    "K10 N100k Elo (BT on the Elo scale), default interval"),
    "pairs10_elo_online": (lambda: pairs(10, 100_000, 2), 10, {"rounds": 1000, "method": "elo-online"}, 0.5,
                           "K10 N100k legacy online Elo, R1000"),
    "pairs200_rows2": (lambda: pairs(200, 1_000_000, 2), 200, {"rounds": 100, "interval": "bootstrap"}, 2.0,
                       "K200 N1M all pairs, 2 rows/query, bootstrap R100"),
    "pairs200_rows4": (lambda: pairs(200, 1_000_000, 4), 200, {"rounds": 100, "interval": "bootstrap"}, 2.0,
                       "K200 N1M all pairs, 4 rows/query on 2 pairs, bootstrap R100"),
    "pairs200_rows40": (lambda: pairs(200, 1_000_000, 40), 200, {"rounds": 100, "interval": "bootstrap"}, 2.0,
                        "K200 N1M all pairs, 40 rows/query on 20 pairs, bootstrap R100"),
    "pairs200_rows40_score": (lambda: pairs(200, 1_000_000, 40), 200, {}, 2.0,
                              "K200 N1M all pairs, 40 rows/query, default interval"),
    "sweep": (lambda: sweep(200, 10_000_000), 201, {"rounds": 1000, "interval": "bootstrap"}, 1.5,
              "star 200 candidates, 10M games, bootstrap R1000"),
    "sweep_score": (lambda: sweep(200, 10_000_000), 201, {}, 1.5, "star 200 candidates, 10M games, default"),
}


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(name: str, runs: int) -> None:
    from arena_engine.rating import rate_battles

    build, k, kwargs, _, _ = CASES[name]
    a, b, o, q = build()
    kw = dict(kwargs)
    if kw.get("lengths") == "random":
        kw["lengths"] = np.random.default_rng(1).uniform(100, 2000, (a.size, 2))
    models = [f"m{m}" for m in range(k)]
    small = slice(0, 20_000)
    warm = {**kw, "rounds": 3} if "rounds" in kw else dict(kw)
    if "lengths" in warm:
        warm["lengths"] = warm["lengths"][small]
    rate_battles(a[small], b[small], o[small], q[small], models=models, baseline=0, **warm)
    times, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        rate_battles(a, b, o, q, models=models, baseline=0, **kw)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    print(json.dumps({"median": statistics.median(times), "all": times, "cpu": statistics.median(cpu),
                      "peak_rss_mb": peak_rss_mb()}))


def choix_seconds(name: str) -> float | None:
    try:
        import choix
    except ImportError:
        return None
    build, k, _, _, _ = CASES[name]
    a, b, o, _ = build()
    won = o > 0
    lost = o < 0
    data = np.concatenate([np.stack([a[won], b[won]], 1), np.stack([b[lost], a[lost]], 1)])
    t = time.perf_counter()
    choix.ilsr_pairwise(k, data, alpha=1e-6, max_iter=1000)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker")
    parser.add_argument("--runs", type=int, default=5, help="timed calls per case (median printed; default 5)")
    parser.add_argument("--only", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--no-choix", action="store_true", help="skip the choix reference")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.runs)
        return
    names = [n for n in args.only.split(",") if n] or list(CASES)
    print(f"# {os.cpu_count()} CPUs; load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    choix_done: dict[str, float | None] = {}
    for name in names:
        _, _, _, bar, label = CASES[name]
        out = subprocess.run([sys.executable, __file__, "--worker", name, "--runs", str(args.runs)],
                             capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        status = "OK  " if res["median"] <= bar else "MISS"
        print(f"[{status}] {label}: median {res['median']:.3f} s (bar <= {bar:g} s), runs "
              f"{', '.join(f'{x:.3f}' for x in res['all'])}, CPU {res['cpu']:.3f} s, peak RSS {res['peak_rss_mb']:.0f} MB,"
              f" load {os.getloadavg()[0]:.2f}", flush=True)
        data_key = name.split("_")[0] + "".join(f"_{r}" for r in ("rows4", "rows40") if f"_{r}" in name)
        if not args.no_choix and data_key not in choix_done and not name.startswith("sweep"):
            choix_done[data_key] = choix_seconds(name)
            if choix_done[data_key] is not None:
                print(f"       choix.ilsr_pairwise on the same games (point only): {choix_done[data_key]:.3f} s")
    print(f"# load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
