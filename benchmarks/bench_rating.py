"""Rating kernels against the bars of issue 6, each beside a reference measured in the same run.

    python benchmarks/bench_rating.py            # everything (a few minutes on 2 cores)
    python benchmarks/bench_rating.py --quick    # smaller reference samples

Our figures are timed in fresh worker processes (so peak RSS is the rating's own), after a warm-up
call that triggers (or loads) the numba compilation: times exclude first-run JIT compile.
The reference is our own implementation of "the sklearn way" (EvalScope / Arena-Hard): per round,
resample game rows (strong verdicts expanded to 3 rows), duplicate them, fit an unpenalised logistic
regression with L-BFGS on the dense design matrix (what sklearn's LogisticRegression(penalty=None)
does, via scipy). It is far too slow to run in full, so a few rounds (and for the 1M-game case a
10x smaller sample of rows) are timed and extrapolated linearly; the output says which.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# ---------------------------------------------------------------- data

def all_pairs(k: int, games: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random pairs; each query judges one pair in both orders (two games per query)."""
    rng = np.random.default_rng(seed)
    half = games // 2
    a = rng.integers(0, k, half)
    b = (a + rng.integers(1, k, half)) % k
    a, b = np.stack([a, b], 1).ravel(), np.stack([b, a], 1).ravel()
    q = np.arange(a.size) // 2
    return (a, b, *_outcomes(rng, a, b, rng.normal(0, 1, k)), q)


def arena_sweep(candidates: int, games: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """One baseline (model 0), every candidate answers every query, two games per (query, candidate)."""
    rng = np.random.default_rng(seed)
    queries = games // (2 * candidates)
    cand = np.tile(np.repeat(np.arange(1, candidates + 1), 2), queries)
    first = np.tile(np.array([True, False] * candidates), queries)
    a = np.where(first, cand, 0)
    b = np.where(first, 0, cand)
    q = np.repeat(np.arange(queries), 2 * candidates)
    return (a, b, *_outcomes(rng, a, b, rng.normal(0, 0.7, candidates + 1)), q)


def _outcomes(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray]:
    u = quality[a] - quality[b] + rng.logistic(size=a.size)
    return (np.select([u > 2, u > 0.5, u > -0.5, u > -2], [2, 1, 0, -1], -2).astype(np.int8),)


SCENARIOS = {
    # name: (data builder, k, rounds, interval, bar in seconds, label)
    "pairs10": (lambda: all_pairs(10, 100_000), 10, 1000, "bootstrap", 0.5,
                "K=10 all pairs, N=100k games, 1,000 rounds cluster bootstrap"),
    "sweep": (lambda: arena_sweep(200, 10_000_000), 201, 1000, "bootstrap", 2.0,
              "200 candidates vs 1 baseline, N=10M games, 1,000 rounds"),
    "pairs200": (lambda: all_pairs(200, 1_000_000), 200, 100, "bootstrap", 2.0,
                 "K=200 all pairs, N=1M games, 100 rounds cluster bootstrap"),
    "pairs200_sandwich": (lambda: all_pairs(200, 1_000_000), 200, 0, "sandwich", 2.0,
                          "K=200 all pairs, N=1M games, sandwich intervals (no resampling)"),
}


# ---------------------------------------------------------------- ours (worker process)

def peak_rss_mb() -> float:
    """High-water RSS of this process image. ru_maxrss would also count the parent's memory at
    fork time (it survives exec), so read VmHWM where the kernel offers it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(name: str, repeats: int) -> None:
    from arena_engine.rating import rate_battles

    build, k, rounds, interval, _, _ = SCENARIOS[name]
    a, b, o, q = build()
    models = [f"m{m}" for m in range(k)]
    small = slice(0, 20_000)
    rate_battles(a[small], b[small], o[small], q[small], models=models, baseline=0, rounds=3, interval=interval)
    rss_before = peak_rss_mb()
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        rate_battles(a, b, o, q, models=models, baseline=0, rounds=rounds, interval=interval)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    peak = peak_rss_mb()
    print(json.dumps({
        "seconds": statistics.median(times), "all": times, "cpu": statistics.median(cpu), "peak_rss_mb": peak,
        "rss_before_mb": rss_before,
    }))


def run_worker(name: str, repeats: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", name, "--repeats", str(repeats)],
        capture_output=True, text=True, check=True, env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_start(hide_scipy: bool = False) -> float:
    """Import + first (small) call in a fresh interpreter, numba cache warm; best of 4.

    With scipy installed, numba's first cache load imports scipy.linalg to look for BLAS; scipy is
    only a test dependency, so `hide_scipy` measures a runtime install (scipy made unimportable)."""
    code = (
        ("import sys; sys.modules['scipy'] = None\n" if hide_scipy else "")
        + "import time; t0 = time.perf_counter()\n"
        "import numpy as np\n"
        "from arena_engine.rating import rate_battles\n"
        "a = np.array([1, 0, 2, 0]); b = np.array([0, 1, 0, 2]); o = np.array([1, -1, 2, 0], dtype=np.int8)\n"
        "rate_battles(a, b, o, np.array([0, 0, 1, 1]), models=['x', 'y', 'z'], baseline='x', rounds=100)\n"
        "print(time.perf_counter() - t0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    best = math.inf
    for _ in range(4):  # the first run may still have to write the cache
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        best = min(best, float(out.stdout.strip()))
    return best


# ---------------------------------------------------------------- reference: the sklearn way

def _expand_strong(a: np.ndarray, b: np.ndarray, o: np.ndarray, strong_weight: int = 3) -> tuple[np.ndarray, ...]:
    reps = np.where(np.abs(o) == 2, strong_weight, 1)
    return np.repeat(a, reps), np.repeat(b, reps), np.repeat(np.sign(o), reps)


def sklearn_way_round(a: np.ndarray, b: np.ndarray, winner: np.ndarray, k: int, base: int,
                      rng: np.random.Generator) -> np.ndarray:
    """One bootstrap round: rows resampled, duplicated, logistic regression by L-BFGS (tol 1e-6)."""
    from scipy.optimize import minimize

    idx = rng.integers(0, a.size, a.size)
    aa, bb, ww = a[idx], b[idx], winner[idx]
    n = 2 * aa.size
    x = np.zeros((n, k))
    rows = np.arange(n)
    x[rows, np.concatenate([aa, aa])] = math.log(10)
    x[rows, np.concatenate([bb, bb])] = -math.log(10)
    y = np.concatenate([(ww > 0) | (ww == 0), ww > 0]).astype(np.float64)  # a tie: one win each way

    def loss(beta: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ beta
        p = 1.0 / (1.0 + np.exp(-z))
        value = float(np.sum(np.logaddexp(0.0, z) - y * z))
        return value, x.T @ (p - y)

    fit = minimize(loss, np.zeros(k), jac=True, method="L-BFGS-B", options={"gtol": 1e-6, "maxiter": 100})
    scores = 400 * fit.x + 1000
    return scores - scores[base] + 1000


def reference(name: str, quick: bool) -> tuple[float, str]:
    """Seconds the sklearn way would take for the scenario (extrapolated), and how it was measured."""
    build, k, rounds, _, _, _ = SCENARIOS[name]
    a, b, o, _ = build()
    rng = np.random.default_rng(1)
    sample_rounds = 1 if quick else 2
    if name == "sweep":
        # EvalScope fits one candidate against the baseline at a time: time candidate 1, scale by 200
        mine = (a == 1) | (b == 1)
        ea, eb, ew = _expand_strong(a[mine], b[mine], o[mine])
        t = time.perf_counter()
        for _ in range(sample_rounds):
            sklearn_way_round(np.where(ea == 1, 1, 0), np.where(eb == 1, 1, 0), ew, 2, 0, rng)
        per_round = (time.perf_counter() - t) / sample_rounds
        return per_round * 200 * rounds, f"{sample_rounds} round(s) of 1 candidate timed, x200 candidates x{rounds} rounds"
    scale = 1.0
    if a.size > 200_000:
        keep = slice(0, a.size // 10)
        a, b, o = a[keep], b[keep], o[keep]
        scale = 10.0
    ea, eb, ew = _expand_strong(a, b, o)
    t = time.perf_counter()
    for _ in range(sample_rounds):
        sklearn_way_round(ea, eb, ew, k, 0, rng)
    per_round = (time.perf_counter() - t) / sample_rounds
    how = f"{sample_rounds} round(s) timed, x{rounds} rounds"
    if scale != 1.0:
        how = f"{sample_rounds} round(s) on a 1/10 row sample timed, x10 rows x{rounds} rounds"
    return per_round * scale * rounds, how


def reference_memory_mb(name: str) -> float:
    """Dense design matrix of the sklearn way: 2 x expanded rows x K float64."""
    build, k, _, _, _, _ = SCENARIOS[name]
    _, _, o, _ = build()
    expanded = int(np.sum(np.where(np.abs(o) == 2, 3, 1)))
    return 2 * expanded * k * 8 / 2**20


# ---------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.repeats)
        return

    print(f"rating benchmarks (issue 6) - {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("ours: median of 5 calls in a fresh worker after a warm-up call (JIT compile excluded);")
    print("wall time on a shared machine: when the load average exceeds the CPU count, compare CPU time\n")
    rows = []
    for name, (_, _, _, interval, bar, label) in SCENARIOS.items():
        ours = run_worker(name, repeats=5)
        if interval == "sandwich":
            ref_name = "pairs200"
            ref_s, how = reference(ref_name, args.quick)
            ref_s /= SCENARIOS[ref_name][2]  # one sklearn fit gives a point estimate, no interval at all
            how = "1 sklearn fit (point estimate only; no interval)"
        else:
            ref_s, how = reference(name, args.quick)
        rows.append((label, ours, ref_s, how, bar))
        status = "OK " if ours["seconds"] <= bar else "MISS"
        print(f"[{status}] {label}")
        print(f"       ours {ours['seconds']:8.3f} s   (bar <= {bar:g} s; runs {', '.join(f'{x:.3f}' for x in ours['all'])}; "
              f"CPU {ours['cpu']:.3f} s summed over threads)")
        print(f"       peak RSS of the worker {ours['peak_rss_mb']:7.0f} MB (data + warm-up alone: {ours['rss_before_mb']:.0f} MB)")
        print(f"       sklearn way {ref_s:10.1f} s   ({how})   ratio {ref_s / ours['seconds']:,.0f}x")
        if name == "pairs200":
            print(f"       sklearn way design matrix alone: {reference_memory_mb(name):,.0f} MB (bar for ours: < 1024 MB)")
        print()
    cold = cold_start()
    status = "OK " if cold < 2.0 else "MISS"
    print(f"[{status}] cold start: import arena_engine.rating + first call, warm numba cache: {cold:.2f} s (bar < 2 s)")
    print(f"       without scipy (a runtime install; numba then skips its BLAS probe): {cold_start(True):.2f} s")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import numpy, numba"], check=True)
    print(f"       for scale: a fresh interpreter importing numpy + numba alone takes {time.perf_counter() - t:.2f} s")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
