"""Judge panels against known truth (issue 24): whole `arena-engine run`s against the simulator.

    python benchmarks/bench_panel.py [--queries 2000] [--seed 0] [--calibration 0.0]

Prints each bar's figures and PASS/FAIL, and the load average. The study itself (simulator judges,
truth labels, the runs) is tests/panel_study.py; tests/test_judge_panels.py runs a smaller one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.panel_study import (
    CAND_A,
    CAND_B,
    NOISES,
    SELF_JUDGE,
    STRONG,
    binomial_se,
    cascade_study,
    panel_study,
)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000, help="queries per study (two subsets of half each)")
    parser.add_argument("--seed", type=int, default=0, help="the simulator's seed")
    parser.add_argument("--calibration", type=float, default=0.0, help="the cascade's panel.calibration")
    args = parser.parse_args()
    print(f"judge panel benchmarks (issue 24) - {args.queries} queries, seed {args.seed}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="bench-panel-") as tmp:
        t0 = time.monotonic()
        f = panel_study(Path(tmp) / "panel", args.queries, args.seed)
        print(f"\npanel run (4 judges, combine = mean): {time.monotonic() - t0:.1f} s")

        print("\nbar 1a: pairwise kappas order as the noises do (noise " +
              " / ".join(f"{j} {n}" for j, n in NOISES.items()) + ")")
        low, mid, high = NOISES
        order = [(low, mid), (low, high), (mid, high)]  # the pairs by their summed noise
        for kind, index in (("5 labels", 0), ("win/tie/loss", 1)):
            values = [f.kappas[p][index] for p in order]
            ok = values[0] > values[1] > values[2]
            failed += not ok
            print(f"  kappa on {kind}: " + ", ".join(f"{a}~{b} {v:.4f}" for (a, b), v in zip(order, values, strict=True))
                  + f"  -> {verdict(ok)}")

        print("\nbar 1b: each judge's agreement with the truth labels within its binomial SE of the simulator's")
        for j in NOISES:
            measured, truth, n = f.agreement[j]
            se = binomial_se(truth, n)
            ok = abs(measured - truth) <= se
            failed += not ok
            print(f"  {j}: measured {measured:.4f}, simulator {truth:.4f}, |diff| {abs(measured - truth):.4f}, "
                  f"SE {se:.4f} (z {(measured - truth) / se:+.2f}, {n} battles)  -> {verdict(ok)}")

        print(f"\nbar 3: a judge with self-preference 0.5 toward {CAND_A} is flagged with the right sign")
        sp = f.self_preference[SELF_JUDGE]
        est = sp["estimate"]
        ok = sp["flagged"] and est["value"] > 0
        failed += not ok
        print(f"  {SELF_JUDGE} toward {sp['model']}: {est['value']:+.4f} [{est['lower']:+.4f}, {est['upper']:+.4f}] "
              f"flagged={sp['flagged']} ({sp['direction']})  -> {verdict(ok)}")
        control = f.self_preference[low]
        cest = control["estimate"]
        ok = not control["flagged"]
        failed += not ok
        print(f"  control {low} (no preference) toward {control['model']}: {cest['value']:+.4f} "
              f"[{cest['lower']:+.4f}, {cest['upper']:+.4f}] flagged={control['flagged']}  -> {verdict(ok)}")
        printed = [line for line in f.stderr.splitlines() if "self-preference toward" in line]
        print("  terminal: " + " | ".join(s.strip() for s in printed))

        print("\nbar 4: human_labels from a file of 500 labels: agreement printed with its interval")
        lines = [line.strip() for line in f.human500_stderr.splitlines() if "vs human labels" in line]
        for line in lines:
            print(f"  terminal: {line}")
        ok = bool(lines) and all("500 labelled battles" in line and "[" in line for line in lines) \
            and f.rerun_requests == 0
        failed += not ok
        print(f"  requests the rerun sent: {f.rerun_requests}  -> {verdict(ok)}")

        t0 = time.monotonic()
        c = cascade_study(Path(tmp) / "cascade", args.queries, args.seed, args.calibration)
        print(f"\ncascade run cheap (noise 1.5) -> strong (noise 0.5), calibration {args.calibration}, then "
              f"strong only: {time.monotonic() - t0:.1f} s")
        share = c.seen[STRONG] / c.battles
        ok = share <= 0.5
        failed += not ok
        print(f"bar 2a: the strong judge saw {c.seen[STRONG]} of {c.battles} battles ({100 * share:.1f}%, "
              f"<= 50%)  -> {verdict(ok)}")
        for m in (CAND_A, CAND_B):
            diff = c.cascade_winrates[m] - c.strong_winrates[m]
            ok = abs(diff) <= 0.01
            failed += not ok
            print(f"bar 2b: {m} win rate: cascade {100 * c.cascade_winrates[m]:.2f}%, strong only "
                  f"{100 * c.strong_winrates[m]:.2f}%, diff {100 * diff:+.2f} pp (within 1 pp)  -> {verdict(ok)}")
    print(f"\n{failed} bar check(s) failed; load average at the end: {os.getloadavg()[0]:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
