"""Adaptive judging against known truth (issue 23): 100 seeds in-process, plus whole runs on the simulator.

    python benchmarks/bench_stopping.py [--seeds 100] [--queries 2000] [--engine-seeds 2]

Part 1 drives the engine's own stopping code (stopping.order, stopping.schedule, stopping.cs) with
verdicts drawn in-process from the simulator's verdict model (tests/stop_study.py), 5 candidates at true
win rates 20/40/48/60/85% against the baseline, for ``--seeds`` seeds, under stop = "decided" and
stop = { halfwidth = 0.03 }, and all-pairs mode with 6 models (stopping.pairs). Part 2 runs ``Arena`` over HTTP against the simulator (SimServer) with the
same qualities for ``--engine-seeds`` seeds and checks that the judge requests counted at the simulator
are exactly those the schedule says (2 per candidate per judged query), and that the decisions agree
with the truth. Prints each bar's figures and PASS/FAIL, and the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from arena_engine.stop_rules import ABOVE, BELOW, WITHIN, StopConfig
from tests.stop_study import TARGETS, base_config, quality_for, run_study, truth


def correct(reason: str | None, true: float, margin: float) -> bool | None:
    """Whether a decision agrees with the truth (None: no decision was taken)."""
    if reason == ABOVE:
        return true > 0.5
    if reason == BELOW:
        return true < 0.5
    if reason == WITHIN:
        return abs(true - 0.5) <= margin + 1e-9
    return None


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def part_decided(seeds: int, queries: int, qualities: list[float], truths: list[float]) -> bool:
    stop = StopConfig(rule="decided")
    ratios, judged = [], [[] for _ in TARGETS]
    wrong = [0] * len(TARGETS)
    undecided = [0] * len(TARGETS)
    cover = [0] * len(TARGETS)
    t0 = time.time()
    for seed in range(seeds):
        r = run_study(seed, stop, qualities, queries)
        ratios.append(r.judge_requests / r.full_requests)
        for i, c in enumerate(r.summary.candidates):
            judged[i].append(c.judged)
            ok = correct(c.reason, truths[i], stop.margin)
            wrong[i] += ok is False
            undecided[i] += ok is None
            cover[i] += c.lower <= truths[i] <= c.upper
    mean_ratio = sum(ratios) / len(ratios)
    print(f"\n[1] stop = \"decided\" (margin {stop.margin}, min_queries {stop.min_queries}, block {stop.block}), "
          f"{seeds} seeds x {queries} queries ({time.time() - t0:.0f} s)")
    ok1 = max(ratios) <= 0.40
    print(f"  judge requests / full run: mean {100 * mean_ratio:.1f}%, min {100 * min(ratios):.1f}%, "
          f"max {100 * max(ratios):.1f}% (bar: <= 40% in every seed) {verdict(ok1)}")
    ok2 = ok3 = True
    for i, t in enumerate(TARGETS):
        agree = 1 - wrong[i] / seeds
        covered = cover[i] / seeds
        ok2 &= agree >= 0.95
        ok3 &= covered >= 0.95
        js = sorted(judged[i])
        print(f"  candidate at {100 * t:.0f}% (truth {truths[i]:.4f}): queries judged median {js[len(js) // 2]}, "
              f"max {js[-1]}; wrong decisions {wrong[i]}, undecided at the end {undecided[i]}, "
              f"decisions agreeing with the truth {100 * agree:.0f}% of seeds {verdict(agree >= 0.95)}; "
              f"final interval covers the truth {100 * covered:.0f}% {verdict(covered >= 0.95)}")
    print(f"  bar: every decision agrees with the truth in >= 95% of seeds per candidate {verdict(ok2)}")
    print(f"  bar: the final intervals cover the true win rates in >= 95% of seeds {verdict(ok3)}")
    return ok1 and ok2 and ok3


def part_halfwidth(seeds: int, queries: int, qualities: list[float], truths: list[float]) -> bool:
    stop = StopConfig(rule="halfwidth", halfwidth=0.03)
    widest = [0.0] * len(TARGETS)
    within = [0] * len(TARGETS)
    cover = [0] * len(TARGETS)
    ratios = []
    t0 = time.time()
    for seed in range(seeds):
        r = run_study(seed, stop, qualities, queries)
        ratios.append(r.judge_requests / r.full_requests)
        for i, c in enumerate(r.summary.candidates):
            hw = (c.upper - c.lower) / 2
            widest[i] = max(widest[i], hw)
            within[i] += hw <= stop.halfwidth + 1e-12
            cover[i] += c.lower <= truths[i] <= c.upper
    print(f"\n[2] stop = {{ halfwidth = 0.03 }}, {seeds} seeds x {queries} queries ({time.time() - t0:.0f} s); "
          f"judge requests / full run: mean {100 * sum(ratios) / len(ratios):.1f}%")
    ok1 = all(w == seeds for w in within)
    ok2 = all(c / seeds >= 0.95 for c in cover)
    for i, t in enumerate(TARGETS):
        print(f"  candidate at {100 * t:.0f}%: final half-width <= 0.03 in {within[i]}/{seeds} seeds "
              f"(widest {widest[i]:.4f}); coverage {100 * cover[i] / seeds:.0f}%")
    print(f"  bar: every candidate's final half-width <= 0.03 {verdict(ok1)}")
    print(f"  bar: coverage >= 95% for every candidate {verdict(ok2)}")
    return ok1 and ok2


def part_pairs(seeds: int, queries: int) -> bool:
    """All pairs, 6 models: the ranking found against the true one, and the judge requests it took."""
    from tests.stop_study import PAIR_QUALITIES, names, run_pair_study

    true_ranking = tuple(m for _, m in sorted(zip(PAIR_QUALITIES, names(len(PAIR_QUALITIES)), strict=True),
                                              reverse=True))
    right = decided = 0
    ratios = []
    t0 = time.time()
    for seed in range(seeds):
        r = run_pair_study(seed, StopConfig(rule="decided"), n=queries)
        right += r.ranking == true_ranking
        decided += r.decided
        ratios.append(r.judge_requests / r.full_requests)
    share = right / seeds
    adjacent = truth(PAIR_QUALITIES[1] - PAIR_QUALITIES[0], base_config())
    print(f"\n[4] all pairs, 6 models (qualities {PAIR_QUALITIES}: adjacent pairs {100 * adjacent:.1f}/"
          f"{100 - 100 * adjacent:.1f}), stop = \"decided\", "
          f"{seeds} seeds x {queries} queries ({time.time() - t0:.0f} s)")
    ok1 = share >= 0.95
    ok2 = max(ratios) <= 0.50
    print(f"  ranking equals the true ranking in {right}/{seeds} seeds ({100 * share:.0f}%), decided in {decided} "
          f"(bar: >= 95%) {verdict(ok1)}")
    print(f"  judge requests / full all-pairs run: mean {100 * sum(ratios) / len(ratios):.1f}%, max "
          f"{100 * max(ratios):.1f}% (bar: <= 50% in every seed) {verdict(ok2)}")
    return ok1 and ok2


def part_engine(seeds: int, queries: int, qualities: list[float], truths: list[float]) -> bool:
    """Whole runs of the engine over HTTP against the simulator."""
    import anyio
    from arena_helpers import arena_config

    from arena_engine.demo import write_demo_dataset
    from arena_engine.pipeline import Arena
    from arena_engine.sim import Latency, SimConfig, SimModel, SimServer

    names = ["base"] + [f"c{i}" for i in range(len(qualities))]
    ok = True
    print(f"\n[3] the whole engine over HTTP against the simulator, stop = \"decided\", {seeds} seed(s) x {queries} queries")
    for seed in range(seeds):
        sim_cfg = SimConfig(models=(SimModel("base", 0.0),) + tuple(SimModel(n, quality=q) for n, q in
                                                                     zip(names[1:], qualities, strict=True))
                            + (SimModel("sim-judge", judge=True),), seed=seed, latency=Latency("fixed", 0.0))
        with tempfile.TemporaryDirectory() as tmp:
            data = write_demo_dataset(Path(tmp) / "data" / "general_qa", queries // 2)

            async def main(sim_cfg: SimConfig, run_dir: Path, data: Path, seed: int) -> tuple[object, dict]:
                async with SimServer(sim_cfg) as sim:
                    cfg = arena_config(sim.url, run_dir, data, names)
                    cfg = dataclasses.replace(cfg, seed=seed, stop=StopConfig(rule="decided"))
                    async with Arena(cfg) as arena:
                        res = await arena.run()
                    return res, sim.stats()

            t0 = time.time()
            res, stats = anyio.run(main, sim_cfg, Path(tmp) / "run", data, seed)
        summary = res.stopping  # type: ignore[attr-defined]
        expected_judge = sum(2 * c.judged for c in summary.candidates)
        full = 2 * len(qualities) * summary.queries
        counted = stats["per_model"].get("sim-judge", 0)
        wrong = [c.name for c, t in zip(summary.candidates, truths, strict=True)
                 if correct(c.reason, t, 0.02) is False]
        same = counted == expected_judge
        ok &= same and not wrong
        print(f"  seed {seed}: {time.time() - t0:.0f} s; judge requests at the simulator {counted}, by the schedule "
              f"{expected_judge} {verdict(same)} ({100 * counted / full:.1f}% of the full run's {full}); "
              f"judged " + ", ".join(f"{c.name} {c.judged} ({c.reason})" for c in summary.candidates)
              + f"; wrong decisions: {wrong or 'none'} {verdict(not wrong)}")
    return ok


def part_engine_pairs(queries: int) -> bool:
    """One whole all-pairs run of the engine over HTTP: requests at the simulator against the schedule."""
    import anyio
    from arena_helpers import arena_config

    from arena_engine.demo import write_demo_dataset
    from arena_engine.pipeline import Arena
    from arena_engine.sim import Latency, SimConfig, SimModel, SimServer
    from tests.stop_study import PAIR_QUALITIES

    names = [f"m{i}" for i in range(len(PAIR_QUALITIES))]
    sim_cfg = SimConfig(models=tuple(SimModel(n, quality=q) for n, q in zip(names, PAIR_QUALITIES, strict=True))
                        + (SimModel("sim-judge", judge=True),), latency=Latency("fixed", 0.0))

    async def main(run_dir: Path, data: Path) -> tuple[object, dict]:
        async with SimServer(sim_cfg) as sim:
            cfg = arena_config(sim.url, run_dir, data, names, mode="all_pairs")
            cfg = dataclasses.replace(cfg, stop=StopConfig(rule="decided"))
            async with Arena(cfg) as arena:
                res = await arena.run()
            return res, sim.stats()

    with tempfile.TemporaryDirectory() as tmp:
        data = write_demo_dataset(Path(tmp) / "data" / "general_qa", queries // 2)
        t0 = time.time()
        res, stats = anyio.run(main, Path(tmp) / "run", data)
    s = res.stopping  # type: ignore[attr-defined]
    by_schedule = sum(2 * c.judged for c in s.candidates)
    counted = stats["per_model"].get("sim-judge", 0)
    full = 2 * len(s.candidates) * s.queries
    true_ranking = tuple(reversed(names))
    board = tuple(e.model for e in res.overall.entries)  # type: ignore[attr-defined]
    ok = counted == by_schedule and s.ranking == true_ranking
    print(f"\n[5] the whole engine, all pairs, 6 models x {queries} queries ({time.time() - t0:.0f} s): judge requests "
          f"at the simulator {counted}, by the schedule {by_schedule} ({100 * counted / full:.1f}% of the full run's "
          f"{full}); ranking {' > '.join(s.ranking)} ({'decided' if s.ranking_decided else 'not decided'}), "
          f"leaderboard {' > '.join(board)}; true ranking {verdict(s.ranking == true_ranking)}, "
          f"counts {verdict(counted == by_schedule)}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--engine-seeds", type=int, default=2)
    args = ap.parse_args()
    cfg = base_config()
    qualities = [quality_for(t, cfg) for t in TARGETS]
    truths = [truth(q, cfg) for q in qualities]
    print(f"load average before: {os.getloadavg()}")
    print("simulator qualities for true win rates " + ", ".join(f"{100 * t:.0f}%: {q:+.3f}" for t, q in
                                                                zip(TARGETS, qualities, strict=True)))
    ok = part_decided(args.seeds, args.queries, qualities, truths)
    ok &= part_halfwidth(args.seeds, args.queries, qualities, truths)
    ok &= part_pairs(args.seeds, args.queries)
    if args.engine_seeds:
        ok &= part_engine(args.engine_seeds, args.queries, qualities, truths)
        ok &= part_engine_pairs(args.queries)
    print(f"load average after: {os.getloadavg()}")
    print("ALL PASS" if ok else "SOME BARS FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
