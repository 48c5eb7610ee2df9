"""Client CPU per request of a whole `arena-engine run` against a raw aiohttp worker pool (issue 21's bar:
<= 1.5x, with checkpoints on, at zero and at 50 ms latency).

Both clients run as processes of their own against the same minimal endpoint (bench_engine's: a
keep-alive HTTP/1.1 server in a third process that answers every POST with one small chat completion
holding a verdict, after the delay its URL names), and each is measured whole: CPU (user + system)
from its rusage, divided by the requests the endpoint received.
- run: `arena-engine run CONFIG --quiet`, 3 models (a baseline, two candidates) and a judge, checkpoints
  on, a fresh run folder each rep: N generations per model and one judge call per query, 4N requests
  (the endpoint gives every model the same answer, so a query's four judge prompts are one prompt and
  the run asks it once); imports, ratings and reports included.
- raw: bench_engine's plain loop (one aiohttp session, orjson in and out, a worker pool) sending the
  same number of requests, with the interpreter's start-up and aiohttp's import included too.

    python benchmarks/bench_run_cpu.py [--queries 3000] [--reps 2] [--latency-ms 0 50]

Reps alternate raw and run; medians are printed with the load average.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_engine import endpoint_process  # noqa: E402  (a sibling script)

MODELS = ("bench-base", "bench-a", "bench-b")
RAW = """
import sys
sys.path.insert(0, {bench!r})
from bench_engine import _run, plain_loop
url, n, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = _run(plain_loop(url, n, concurrency))
assert ok == n, (ok, n)
"""


def child_cpu(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one child process, from the rusage of waited-for children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{cmd[:3]} exited {done.returncode}:\n{done.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def config_text(api_url: str, out: Path, data: Path, concurrency: int) -> str:
    models = "".join(f'[[models]]\nname = "{m}"\napi_url = "{api_url}"\nconcurrency = {concurrency}\n\n'
                     for m in MODELS)
    return (f'[run]\noutput_dir = "{out}"\n\n[[datasets]]\nname = "qa"\npath = "{data}"\n\n{models}'
            f'[arena]\nbaseline = "{MODELS[0]}"\n\n[judge]\nname = "bench-judge"\napi_url = "{api_url}"\n'
            f'concurrency = {concurrency}\n\n[rating]\nrounds = 100\n')


def hits(base: str) -> int:
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(f"{base}/times", data=b"{}", method="POST")) as r:
        return len(orjson.loads(r.read()))


def reset(base: str) -> None:
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{base}/reset", data=b"{}", method="POST")).read()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=3000, help="queries (4 requests each; default 3000)")
    ap.add_argument("--reps", type=int, default=2, help="reps of each client, alternated (default 2)")
    ap.add_argument("--latency-ms", type=int, nargs="+", default=[0, 50], help="server latencies (default 0 50)")
    ap.add_argument("--concurrency", type=int, default=64, help="per endpoint of the run; the raw pool gets 4x")
    a = ap.parse_args()
    load0 = os.getloadavg()
    exe = str(Path(sys.executable).with_name("arena-engine"))
    requests = 4 * a.queries
    failed = 0
    print(f"whole-process client CPU per request, {a.queries} queries = {requests} requests per rep; "
          f"load average {load0[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-run-cpu-") as t, endpoint_process() as base:
        tmp = Path(t)
        data = tmp / "qa"
        data.mkdir()
        (data / "open.jsonl").write_bytes(b"".join(
            orjson.dumps({"query": f"Question number {i}: how would you approach topic {i % 37}?"}) + b"\n"
            for i in range(a.queries)))
        for latency in a.latency_ms:
            api_url = f"{base}/d{latency}/v1" if latency else f"{base}/v1"
            raw, run = [], []
            for rep in range(a.reps):
                reset(base)
                cpu, wall = child_cpu([sys.executable, "-c", RAW.format(bench=str(ROOT / "benchmarks")),
                                       f"{api_url}/chat/completions", str(requests), str(4 * a.concurrency)])
                raw.append((cpu / hits(base), wall))
                reset(base)
                cfg = tmp / f"arena-{latency}-{rep}.toml"
                cfg.write_text(config_text(api_url, tmp / f"run-{latency}-{rep}", data, a.concurrency))
                cpu, wall = child_cpu([exe, "run", str(cfg), "--quiet"])
                got = hits(base)
                if got != requests:
                    raise SystemExit(f"the run sent {got} requests, not {requests}")
                run.append((cpu / got, wall))
            raw_us = statistics.median(r[0] for r in raw) * 1e6
            run_us = statistics.median(r[0] for r in run) * 1e6
            ratio = run_us / raw_us
            ok = ratio <= 1.5
            failed += not ok
            print(f"latency {latency} ms: raw pool {raw_us:.0f} us/request (walls "
                  f"{', '.join(f'{w:.1f}' for _, w in raw)} s), arena-engine run {run_us:.0f} us/request (walls "
                  f"{', '.join(f'{w:.1f}' for _, w in run)} s): {ratio:.2f}x  -> {'PASS' if ok else 'FAIL'} (bar 1.5x)")
    print(f"load average: {load0[0]:.2f} before, {os.getloadavg()[0]:.2f} after (2 cores, shared)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
