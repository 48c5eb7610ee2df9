"""Results from the store (issues 20/21): `arena-engine report`, `rate` and a finished run's rerun.

    python benchmarks/bench_results.py [--queries 10000] [--folder DIR] [--old-tree DIR]

1. makes a finished run with the whole CLI (`arena-engine demo`: 3 models + judge on the simulator at
   20 ms; --queries in all, half per subset), unless --folder already holds one;
2. times `arena-engine report RUN_DIR` and `arena-engine rate RUN_DIR` as new processes, and the rerun
   of the finished run (`arena-engine demo` on the same folder: nothing to send, prints its
   leaderboard), each best of --reps;
3. compares the report `report` writes with the one the run wrote (report_table.txt, leaderboard.txt
   and the battle parts byte for byte; report.json, and the report embedded in report.html, without
   their timing and this-process fields; the rest of report.html byte for byte);
4. the reference measured in the same run: the rating alone (``leaderboards`` on the same games, in
   this process), so the bar reads "report <= 3 s + rating"; the in-process results with the run
   folder's results snapshot and with a fresh walk (no snapshot read or written); with --old-tree (a
   checkout of the code before this change, e.g. ``git archive 87aca7e arena_engine | tar -x -C DIR``)
   also the old `rate`.

The CLI processes import the package from its bytecode (``compileall`` first, as an installed package
has it: with PYTHONDONTWRITEBYTECODE set, an editable checkout would compile every module in every
process). The load average is printed before and after: the machine is shared.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
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


def html_parts(path: Path) -> tuple[str, dict]:
    """report.html without its embedded data, and that data's report (timing and this-process fields out)."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r'(<script type="application/json"[^>]*>)(.*?)(</script>)', text, re.S)
    assert m is not None, f"{path}: no embedded data"
    data = json.loads(m.group(2))
    report = data.get("report", {})
    for k in VOLATILE:
        report.pop(k, None)
    for ep in report.get("endpoints", {}).values():
        for k in PROCESS_FIELDS:
            ep.pop(k, None)
    return text[:m.start(2)] + text[m.end(2):], data


def same_parts(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in (a / "report_battles").glob("*.js")) if (a / "report_battles").is_dir() else []
    other = sorted(p.name for p in (b / "report_battles").glob("*.js")) if (b / "report_battles").is_dir() else []
    return names == other and all((a / "report_battles" / n).read_bytes() == (b / "report_battles" / n).read_bytes()
                                  for n in names)


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
    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "arena_engine"), quiet=1)
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
    same_html = html_parts(own / "report.html") == html_parts(kept / "report.html") and same_parts(own, kept)
    rate_s, _ = best(["rate", str(run_dir)], args.reps)
    rerun_s, rerun_out = best(["demo", "--output", str(folder), "--queries", str(args.queries // 2), "--latency",
                               "0.02", "--quiet"], args.reps)

    from arena_engine import snapshot
    from arena_engine.from_store import results_of_folder
    from arena_engine.leaderboard import leaderboards
    from arena_engine.runfolder import load_run_config

    cfg = load_run_config(run_dir)
    t = time.perf_counter()
    results = results_of_folder(cfg)
    in_process = time.perf_counter() - t
    load_, save_ = snapshot.load, snapshot.save
    snapshot.load, snapshot.save = (lambda *a, **k: None), (lambda *a, **k: False)  # type: ignore[assignment]
    try:
        t = time.perf_counter()
        results_of_folder(cfg)
        walked = time.perf_counter() - t
    finally:
        snapshot.load, snapshot.save = load_, save_
    leaderboards(results.games, [m.name for m in cfg.models], cfg.baseline, cfg.rating, cfg.seed)  # compile/warm
    t = time.perf_counter()
    leaderboards(results.games, [m.name for m in cfg.models], cfg.baseline, cfg.rating, cfg.seed)
    rating_s = time.perf_counter() - t

    print(f"queries {sum(results.queries.values())}, games {len(results.games)}")
    print(f"arena-engine report: {report_s:.2f} s (bar 3 s + rating {rating_s:.2f} s = {3 + rating_s:.2f} s: "
          f"{report_s / (3 + rating_s):.2f}x); report equal to the run's own: text {same_text}, json {same_json}, "
          f"html and parts {same_html}")
    print(f"arena-engine rate:   {rate_s:.2f} s")
    print(f"rerun of the finished run: {rerun_s:.2f} s (bar 3 s: {rerun_s / 3:.2f}x); leaderboard printed: "
          f"{'OVERALL LEADERBOARD' in rerun_out}")
    print(f"results_from_store in this process: {in_process:.2f} s with the results snapshot, {walked:.2f} s "
          f"walking (no snapshot); rating alone {rating_s:.2f} s")
    if args.old_tree is not None:
        env = {**os.environ, "PYTHONPATH": str(args.old_tree)}
        old_s, old_out = best(["rate", str(run_dir)], args.reps, env)
        _, new_out = timed(["rate", str(run_dir)])
        print(f"old `rate` (offline pipeline replay): {old_s:.2f} s; new {rate_s:.2f} s = {rate_s / old_s:.2f}x; "
              f"same output: {old_out == new_out}")
    print("load after:", load())


if __name__ == "__main__":
    main()
