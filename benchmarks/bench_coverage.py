"""Coverage of nominal 95% intervals on battles of known truth (issue 19's table).

    python benchmarks/bench_coverage.py                 # 400 replications per row, every interval
    python benchmarks/bench_coverage.py --reps 100 --intervals score

Rows are the scenarios of tests/known_truth.py (5-level verdicts, strong verdicts weigh 3, two games
per query in both orders, a per-(query, model) random effect). A replication simulates one data set
and rates it; an interval covers when it contains the true win rate against the baseline. Coverage
is pooled over the non-baseline models of every replication, with its binomial SE (the models of one
replication are correlated, so the true SE is a little larger). Also printed: misses above / below
(truth above the upper bound / below the lower one) and the median width of the interval in pp.
"elo-online" is the legacy online Elo; its bounds are reported as a "spread", not an interval, and
its point estimates the online-Elo win rate, which is not the true win rate: it is listed to show why.
"bootstrap-refit" (length-controlled rows only) is the percentile bootstrap with an exact refit per
round, the reference that the one-step length-controlled bootstrap ("bootstrap") approximates.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from arena_engine.rating import rate_battles  # noqa: E402
from tests.known_truth import SCENARIOS, coverage, simulate, truth_of  # noqa: E402

INTERVALS = ("score", "sandwich", "bootstrap", "elo-online", "bootstrap-refit")


def seed_sd(rounds_list: list[int], seeds: int) -> None:
    """Seed-to-seed SD of each bound (pp; the largest over models and over both bounds), one data set
    per scenario, for each bootstrap `rounds` and for the default interval."""
    print(f"# seed-to-seed SD of the bounds over {seeds} seeds (pp, max over models and bounds)")
    print("| scenario | score (default) | " + " | ".join(f"bootstrap R={r}" for r in rounds_list) + " |")
    print("|" + "---|" * (2 + len(rounds_list)))
    for sc in SCENARIOS:
        data = simulate(sc, np.random.default_rng(7))
        lengths = data[4] if len(data) == 5 else None
        models = [f"m{m}" for m in range(len(sc.theta))]
        texts = []
        for interval, rounds in [("score", 0)] + [("bootstrap", r) for r in rounds_list]:
            bounds = []
            for seed in range(seeds):
                r = rate_battles(*data[:4], models=models, baseline="m0", interval=interval, rounds=rounds,
                                 seed=seed, lengths=lengths)
                bounds.append([x for m in r.per_model[1:] for x in (m.winrate_lower, m.winrate_upper)])
            texts.append(f"{100 * float(np.max(np.std(bounds, axis=0))):.3f}")
        print(f"| {sc.name} | " + " | ".join(texts) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=400, help="replications per row (default 400)")
    parser.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds (default 1000)")
    parser.add_argument("--elo-reps", type=int, default=100,
                        help="replications for the legacy elo-online column (slow: default 100)")
    parser.add_argument("--intervals", default=",".join(INTERVALS), help=f"comma-separated of {INTERVALS}")
    parser.add_argument("--lc-truth-queries", type=int, default=200_000,
                        help="queries of the length-controlled fit taken as truth (default 200000)")
    parser.add_argument("--scenarios", default="", help="only scenarios whose name contains this text")
    parser.add_argument("--seed-sd", default="", metavar="R1,R2",
                        help="instead: seed-to-seed SD of the bounds for these bootstrap rounds")
    args = parser.parse_args()
    if args.seed_sd:
        print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        seed_sd([int(x) for x in args.seed_sd.split(",")], 30)
        return
    kinds = [x for x in args.intervals.split(",") if x]
    for kind in kinds:
        if kind not in INTERVALS:
            parser.error(f"unknown interval {kind!r}; choose from {INTERVALS}")
    start = time.time()
    print(f"# coverage of nominal 95% intervals, {args.reps} replications per row ({args.elo_reps} for elo-online),"
          f" bootstrap rounds {args.rounds}")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    header = "| scenario | truth (%) | " + " | ".join(kinds) + " | default: misses above/below, median width |"
    print(header)
    print("|" + "---|" * (3 + len(kinds)))
    for sc in SCENARIOS:
        if args.scenarios not in sc.name:
            continue
        truth = truth_of(sc, args.lc_truth_queries)
        cells = {
            kind: coverage(sc, truth, kind, args.elo_reps if kind == "elo-online" else args.reps, args.rounds)
            for kind in kinds
        }
        texts = [c.text() if c else "n/a" for c in cells.values()]
        first = next((c for c in cells.values() if c), None)
        extra = f"{first.above}/{first.below}, {first.width:.1f} pp" if first else ""
        truths = ", ".join(f"{100 * t:.1f}" for t in truth)
        print(f"| {sc.name} | {truths} | " + " | ".join(texts) + f" | {extra} |", flush=True)
    print(f"# {time.time() - start:.0f} s; load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
