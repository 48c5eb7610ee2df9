"""Adaptive judging's statistics and bookkeeping: the confidence sequence against its slow reference and
by simulation, the rules, the seeded order, the block schedule, the config, and a few seeds of the
known-truth study (benchmarks/bench_stopping.py runs 100)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
from stop_study import TARGETS, base_config, quality_for, run_study, truth

from arena_engine.config import config_from_dict
from arena_engine.errors import ConfigError
from arena_engine.stop_rules import ABOVE, BELOW, EXHAUSTED, PRECISE, WITHIN, StopConfig, verdict
from arena_engine.stopping.cs import RatioCS, horizons, reference_bounds
from arena_engine.stopping.order import stratified_order
from arena_engine.stopping.schedule import StopSchedule, query_score


def _scores(rng: random.Random, n: int, p: float) -> list[tuple[float, float]]:
    """Per query two games, strong verdicts weigh 3, some games excluded: (S, W) as the rating counts them."""
    out = []
    for _ in range(n):
        outcomes: list[int | None] = []
        for _ in range(2):
            u = rng.random()
            o = None if u < 0.05 else (2 if u < 0.05 + 0.3 * p else 1 if u < 0.05 + 0.9 * p else
                                       0 if u < 0.15 + 0.9 * p else -1 if rng.random() < 0.7 else -2)
            outcomes.append(o)
        out.append(query_score(outcomes, 3))
    return out


@pytest.mark.parametrize("p, n", [(0.3, 40), (0.7, 25), (0.5, 60)])
def test_the_sequence_equals_its_slow_reference(p: float, n: int) -> None:
    scores = _scores(random.Random(int(p * 100) + n), n, p)
    cs = RatioCS(confidence=0.9, bound=6.0, queries=n, points=80)
    for s, w in scores:
        cs.add(s, w)
    ref = reference_bounds(scores, confidence=0.9, bound=6.0, queries=n, points=80)
    assert cs.bounds() == pytest.approx(ref, abs=1e-12)
    assert cs.estimate == pytest.approx(sum(s for s, _ in scores) / sum(w for _, w in scores))


def test_the_sequence_covers_the_truth_at_every_query_at_once() -> None:
    """The share of sequences whose running interval ever misses the true ratio stays below alpha."""
    rng = np.random.default_rng(5)
    runs, steps, alpha = 120, 250, 0.1
    # per query: W in {2, 4, 6} (strong verdicts), S = W * score; the true ratio E[S]/E[W] by exact sums
    ws = np.array([2.0, 4.0, 6.0])
    pw = np.array([0.5, 0.3, 0.2])
    score = np.array([0.0, 0.5, 1.0])
    ps = np.array([0.55, 0.15, 0.30])
    true = float((pw @ ws) * (ps @ score) / (pw @ ws))
    missed = 0
    for _ in range(runs):
        cs = RatioCS(confidence=1 - alpha, bound=6.0, queries=steps, points=200)
        w = rng.choice(ws, size=steps, p=pw)
        s = w * rng.choice(score, size=steps, p=ps)
        ever = False
        for i in range(steps):
            cs.add(float(s[i]), float(w[i]))
            lo, hi = cs.bounds()
            ever |= not lo <= true <= hi
        missed += ever
    assert missed / runs <= alpha, f"missed {missed} of {runs}"
    # and it is not vacuous: after 250 queries the interval is far narrower than [0, 1]
    assert cs.halfwidth < 0.15


def test_the_averaged_bets_are_narrower_than_one_horizon_at_the_end() -> None:
    assert horizons(2000) == (32, 128, 512, 2048)
    assert horizons(10) == (32,)
    with pytest.raises(ValueError, match="s <= w"):
        RatioCS(confidence=0.95, bound=6.0, queries=10).add(3.0, 2.0)


def test_the_rules() -> None:
    decided = StopConfig(rule="decided", min_queries=10)
    assert verdict(decided, 0.51, 0.7, 10) == ABOVE
    assert verdict(decided, 0.51, 0.7, 9) is None  # before min_queries nothing stops
    assert verdict(decided, 0.2, 0.49, 50) == BELOW
    assert verdict(decided, 0.485, 0.515, 50) == WITHIN
    assert verdict(decided, 0.47, 0.515, 50) is None
    precise = StopConfig(rule="halfwidth", halfwidth=0.03, min_queries=1)
    assert verdict(precise, 0.40, 0.46, 5) == PRECISE
    assert verdict(precise, 0.40, 0.4601, 5) is None
    assert verdict(StopConfig(), 0.9, 0.95, 10_000) is None  # "never"


def test_the_order_is_seeded_and_every_prefix_holds_each_subset_in_proportion() -> None:
    keys = [("d", "a", str(i)) for i in range(300)] + [("d", "b", str(i)) for i in range(100)] + \
           [("e", "a", str(i)) for i in range(50)]
    order = stratified_order(keys, seed=3)
    assert sorted(order) == list(range(len(keys)))
    assert order == stratified_order(keys, seed=3) and order != stratified_order(keys, seed=4)
    assert order[:300] != sorted(order[:300])  # shuffled within a subset
    sizes = {"da": 300, "db": 100, "ea": 50}
    seen = dict.fromkeys(sizes, 0)
    for n, pos in enumerate(order, start=1):
        d, s, _ = keys[pos]
        seen[d + s] += 1
        for k, size in sizes.items():
            assert abs(seen[k] - n * size / len(keys)) <= 1.0 + 1e-9, (n, seen)


def test_a_decision_takes_effect_two_blocks_later_and_the_games_in_between_count() -> None:
    cfg = StopConfig(rule="decided", min_queries=1, block=10)
    sched = StopSchedule(cfg, ["win", "even"], 100, bound=6.0)
    assert sched.ready(1) and not sched.ready(2)
    with pytest.raises(RuntimeError, match="not ready"):
        sched.active(2)
    k = 0
    while not sched.finished(k):
        active = sched.active(k)
        for i in sched.block_range(k):
            if "win" in active:
                sched.record(i, "win", 2.0, 2.0)  # wins every game
            if "even" in active:
                sched.record(i, "even", 2.0 if i % 2 else 0.0, 2.0)
            sched.query_done(i)
        k += 1
    s = sched.summary()
    win = s.candidate("win")
    assert win.reason == ABOVE and win.decided_at is not None
    assert win.judged == win.decided_at + 10  # the block on its way when it was decided was judged too
    assert win.stopped_early and win.lower > 0.5
    even = s.candidate("even")
    assert even.judged == 100 and even.reason == EXHAUSTED and even.lower < 0.5 < even.upper


def test_query_blocks_fold_in_order_whatever_order_queries_finish_in() -> None:
    cfg = StopConfig(rule="decided", min_queries=5, block=5)

    def run(finish_order: list[int]) -> tuple:
        sched = StopSchedule(cfg, ["c"], 20, bound=2.0)
        rng = random.Random(1)
        scores = {i: rng.choice([0.0, 1.0, 2.0]) for i in range(20)}
        for i in finish_order:
            sched.record(i, "c", scores[i], 2.0)
            sched.query_done(i)
        return sched.summary()

    forward = list(range(20))
    shuffled = [4, 2, 0, 1, 3, 9, 5, 8, 6, 7, 14, 10, 13, 11, 12, 19, 15, 18, 16, 17]
    assert run(forward) == run(shuffled)


BASE = {"datasets": [{"path": "d"}], "models": [{"name": "a", "api_url": "http://x/v1"},
                                                {"name": "b", "api_url": "http://x/v1"}],
        "judge": {"name": "j", "api_url": "http://x/v1"}}


@pytest.mark.parametrize("stop, message", [
    ("halfwidth", r"'arena\.stop' = 'halfwidth': must be .*stop = \{ halfwidth = 0\.03 \}"),
    ({"halfwidth": 0.03, "margin": 0.01}, r"'arena\.stop\.margin' is used only by rule = \"decided\""),
    ({"rule": "decided", "halfwidth": 0.03}, r"'arena\.stop\.halfwidth' needs rule = \"halfwidth\""),
    ({"confidence": 1.0}, r"'arena\.stop\.confidence' must be between 0 and 1"),
    ({"min_queries": 0}, r"'arena\.stop\.min_queries' must be > 0"),
    ({"margn": 0.1}, r"unknown key 'arena\.stop\.margn' \(did you mean 'margin'\?\)"),
])
def test_bad_stop_settings_are_clear_errors(stop: object, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^arena\.toml: {message}"):
        config_from_dict({**BASE, "arena": {"stop": stop}}, source="arena.toml")


def test_stop_is_refused_where_it_cannot_decide() -> None:
    with pytest.raises(ConfigError, match=r"chooses the pairs itself; leave out 'run\.max_pairs_per_query'"):
        config_from_dict({**BASE, "run": {"mode": "all_pairs", "max_pairs_per_query": 1}, "arena": {"stop": "decided"}},
                         source="a.toml")
    assert config_from_dict({**BASE, "run": {"mode": "all_pairs"}, "arena": {"stop": "decided"}}).stop.active
    judges = {k: v for k, v in BASE.items() if k != "judge"}
    judges["judges"] = [{"name": "j1", "api_url": "http://x/v1"}, {"name": "j2", "api_url": "http://x/v1"}]
    with pytest.raises(ConfigError, match="rates every judge alone"):
        config_from_dict({**judges, "panel": {"combine": "each"}, "arena": {"stop": "decided"}}, source="a.toml")
    cfg = config_from_dict({**BASE, "arena": {"stop": {"halfwidth": 0.02, "block": 20}}}, source="a.toml")
    assert cfg.stop == StopConfig(rule="halfwidth", halfwidth=0.02, block=20)


# ------------------------------------------------------------------------------- known truth, a few seeds

def test_a_few_seeds_of_the_known_truth_study_meet_the_bars() -> None:
    """benchmarks/bench_stopping.py runs the same with 100 seeds (figures in benchmarks/README.md)."""
    cfg = base_config()
    qualities = [quality_for(t, cfg) for t in TARGETS]
    assert [truth(q, cfg) for q in qualities] == pytest.approx(TARGETS, abs=1e-9)
    for seed in range(2):
        r = run_study(seed, StopConfig(rule="decided"), qualities)
        assert r.judge_requests <= 0.40 * r.full_requests
        for c, t in zip(r.summary.candidates, TARGETS, strict=True):
            assert c.lower <= t <= c.upper
            assert c.reason in {ABOVE if t > 0.5 else BELOW, WITHIN if abs(t - 0.5) <= 0.02 + 1e-9 else BELOW,
                                EXHAUSTED}
            if abs(t - 0.5) >= 0.1:
                assert c.stopped_early
    r = run_study(0, StopConfig(rule="halfwidth", halfwidth=0.03), qualities)
    for c, t in zip(r.summary.candidates, TARGETS, strict=True):
        assert (c.upper - c.lower) / 2 <= 0.03 and c.lower <= t <= c.upper
    assert r.judge_requests < r.full_requests


def test_the_dry_run_gives_the_worst_case_and_what_is_expected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from arena_engine.cli import main
    from arena_engine.demo import write_demo_dataset

    write_demo_dataset(tmp_path / "data" / "qa", 100)  # two subsets: 200 queries
    models = "".join(f'[[models]]\nname = "{m}"\napi_url = "http://127.0.0.1:9/v1"\n' for m in ("base", "c1", "c2"))
    (tmp_path / "a.toml").write_text(
        f'[run]\noutput_dir = "run"\n[[datasets]]\npath = "data/qa"\n{models}[arena.stop]\nhalfwidth = 0.08\nmin_queries = 20\nblock = 20\n'
        '[judge]\nname = "j"\napi_url = "http://127.0.0.1:9/v1"\n', encoding="utf-8")
    assert main(["run", str(tmp_path / "a.toml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "adaptive judging: stop = halfwidth (half-width 0.08" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("judge requests: worst case"))
    worst, expected = (int(w) for w in re.findall(r"worst case (\d+).*expected about (\d+)", line)[0])
    assert worst == 2 * 2 * 200 and 0 < expected < worst
    assert "queries a candidate is judged on before it stops, by its true win rate: 10%:" in out


def test_a_few_seeds_of_all_pairs_find_the_true_ranking_with_half_the_requests() -> None:
    """benchmarks/bench_stopping.py runs the same with 100 seeds."""
    from stop_study import PAIR_QUALITIES, names, run_pair_study

    true_ranking = tuple(reversed(names(len(PAIR_QUALITIES))))
    for seed in range(2):
        r = run_pair_study(seed, StopConfig(rule="decided"))
        assert r.ranking == true_ranking and r.decided
        assert r.judge_requests <= 0.5 * r.full_requests


def test_the_pair_schedule_judges_only_undecided_adjacent_pairs_after_the_burn_in() -> None:
    from arena_engine.stopping.pairs import PairSchedule

    cfg = StopConfig(rule="decided", min_queries=10, block=10)
    sched = PairSchedule(cfg, ["a", "b", "c"], 200, bound=2.0)
    assert set(sched.active(0)) == {"a vs b", "a vs c", "b vs c"}
    win = {"a vs b": 0.0, "a vs c": 0.0}  # c > b > a (b wins a quarter against c), every game decisive
    k = 0
    while not sched.finished(k):
        for i in sched.block_range(k):
            for p in sched.active(k):
                sched.record(i, p, 2.0 * win[p] if p != "b vs c" else 2.0 * (i % 4 == 0), 2.0)
            sched.query_done(i)
        if k >= 2:
            assert "a vs c" not in sched.active(k)  # never adjacent once ranked
        k += 1
    s = sched.summary()
    assert s.ranking == ("c", "b", "a") and s.ranking_decided
    assert s.candidate("a vs c").judged == 20  # the burn-in block and the one on its way
