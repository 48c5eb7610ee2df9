"""Results from the store (issues 20/21): `arena-engine report`, `rate` and a finished run's rerun.

    python benchmarks/bench_results.py [--queries 10000] [--folder DIR] [--old-tree DIR]

1. makes a finished run with the whole CLI (`arena-engine demo`: 3 models + judge on the simulator at
   20 ms; --queries in all, half per subset), unless --folder already holds one;
2. times `arena-engine report RUN_DIR` and `arena-engine rate RUN_DIR` as new processes, and the rerun
   of the finished run (`arena-engine demo` on the same folder: nothing to send, prints its
   leaderboard), each best of --reps;
3. compares the report `report` writes with the one the run wrote (report_table.txt and
   leaderboard.txt byte for byte; report.json without its timing and this-process fields);
4. the reference measured in the same run: the rating alone (``leaderboards`` on the same games, in
   this process), so the bar reads "report <= 3 s + rating"; with --old-tree (a checkout of the code
   before this change, e.g. ``git archive 87aca7e arena_engine | tar -x -C DIR``) also the old `rate`.

The load average is printed before and after: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLI = [sys.executable, "-c", "import sys; from arena_engine.cli import main; sys.exit(main())"]
#: report.json fields that say when or by which process, not what the run found
VOLATILE = {"elapsed_seconds", "processes"}
PROCESS_FIELDS = {"requests", "failures", "attempts", "sent_prompt_tokens", "sent_completion_tokens", "sent_cost",
                  "reused"}


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def timed(args: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if out.returncode not in (0, 1):
        raise SystemExit(f"{args} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return wall, out.stdout


def best(args: list[str], reps: int, env: dict[str, str] | None = None) -> tuple[float, str]:
    runs = [timed(args, env) for _ in range(reps)]
    return min(w for w, _ in runs), runs[-1][1]


def stable_json(path: Path) -> dict:
    data = json.loads(path.read_text())
    for k in VOLATILE:
        data.pop(k, None)
    for ep in data.get("endpoints", {}).values():
        for k in PROCESS_FIELDS:
            ep.pop(k, None)
    return data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--folder", type=Path, default=None, help="demo output folder to make or reuse")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--old-tree", type=Path, default=None, help="a checkout whose arena_engine/ is the old code")
    args = ap.parse_args()
    folder = args.folder or Path(f"/tmp/bench_results_{args.queries}")
    run_dir = folder / "run"
    print("load before:", load())
    if not (run_dir / "report" / "report.json").exists():
        t = time.perf_counter()
        timed(["demo", "--output", str(folder), "--queries", str(args.queries // 2), "--latency", "0.02", "--quiet"])
        print(f"made the run: {args.queries} queries in {time.perf_counter() - t:.1f} s")
    own = run_dir / "report"
    kept = folder / "run-report"
    if not kept.exists():
        shutil.copytree(own, kept)  # the report the run itself wrote

    report_s, _ = best(["report", str(run_dir)], args.reps)
    same_text = all((own / n).read_bytes() == (kept / n).read_bytes() for n in ("report_table.txt", "leaderboard.txt"))
    same_json = stable_json(own / "report.json") == stable_json(kept / "report.json")
    rate_s, _ = best(["rate", str(run_dir)], args.reps)
    rerun_s, rerun_out = best(["demo", "--output", str(folder), "--queries", str(args.queries // 2), "--latency",
                               "0.02", "--quiet"], args.reps)

    from arena_engine.from_store import results_of_folder
    from arena_engine.leaderboard import leaderboards
    from arena_engine.runfolder import load_run_config

    cfg = load_run_config(run_dir)
    t = time.perf_counter()
    results = results_of_folder(cfg)
    in_process = time.perf_counter() - t
    leaderboards(results.games, [m.name for m in cfg.models], cfg.baseline, cfg.rating, cfg.seed)  # compile/warm
    t = time.perf_counter()
    leaderboards(results.games, [m.name for m in cfg.models], cfg.baseline, cfg.rating, cfg.seed)
    rating_s = time.perf_counter() - t

    print(f"queries {sum(results.queries.values())}, games {len(results.games)}")
    print(f"arena-engine report: {report_s:.2f} s (bar 3 s + rating {rating_s:.2f} s = {3 + rating_s:.2f} s: "
          f"{report_s / (3 + rating_s):.2f}x); report equal to the run's own: text {same_text}, json {same_json}")
    print(f"arena-engine rate:   {rate_s:.2f} s")
    print(f"rerun of the finished run: {rerun_s:.2f} s (bar 3 s: {rerun_s / 3:.2f}x); leaderboard printed: "
          f"{'OVERALL LEADERBOARD' in rerun_out}")
    print(f"results_from_store in this process: {in_process:.2f} s, of which rating alone {rating_s:.2f} s")
    if args.old_tree is not None:
        env = {**os.environ, "PYTHONPATH": str(args.old_tree)}
        old_s, old_out = best(["rate", str(run_dir)], args.reps, env)
        _, new_out = timed(["rate", str(run_dir)])
        print(f"old `rate` (offline pipeline replay): {old_s:.2f} s; new {rate_s:.2f} s = {rate_s / old_s:.2f}x; "
              f"same output: {old_out == new_out}")
    print("load after:", load())


if __name__ == "__main__":
    main()
