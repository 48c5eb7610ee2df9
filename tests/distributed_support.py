"""Shared by the lease and Ray tests: rate-limited configs over one simulator, and their checks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from arena_helpers import arena_config, dataset

from arena_engine.config import RunConfig
from arena_engine.demo import demo_sim_config
from arena_engine.limits import Limits
from arena_engine.sim import SimConfig

MODELS = ["sim-base", "sim-strong", "sim-weak"]
#: Requests per second each model endpoint may send, and the judge's (windows of one second).
MODEL_RATE, JUDGE_RATE = 10, 20
WINDOW = 1.0


def limited_sim(latency: float = 0.005) -> SimConfig:
    """The demo's models behind one server that answers 429 above the sum of the client limits."""
    total = MODEL_RATE * len(MODELS) + JUDGE_RATE
    return replace(demo_sim_config(seed=0, latency=latency), rpm_limit=total * 60.0, rpm_window_s=WINDOW)


def limited_config(api_url: str, tmp: Path, name: str, queries: int) -> RunConfig:
    """Every endpoint limited to its rate over one-second windows (the tests can watch them bind)."""
    cfg = arena_config(api_url, tmp / name, dataset(tmp, queries), MODELS)

    def limit(ep, rate):  # type: ignore[no-untyped-def]
        return replace(ep, limits=Limits(concurrency=16, rpm=rate * 60.0, window=WINDOW))

    models = tuple(replace(m, endpoint=limit(m.endpoint, MODEL_RATE)) for m in cfg.models)
    return replace(cfg, models=models, judge=replace(cfg.judge, endpoint=limit(cfg.judge.endpoint, JUDGE_RATE)))


def max_in_window(times: list[float], period: float) -> int:
    """The most sends the simulator saw within any half-open window of ``period`` seconds."""
    times = sorted(times)
    best = j = 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + period:
            j += 1
        best = max(best, j - i)
    return best


def window_excess(stats: dict, rates: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Endpoints whose busiest window held more than their limit: name -> (seen, limit)."""
    out = {}
    for model, times in stats["times"].items():
        seen = max_in_window(times, WINDOW)
        if seen > rates[model]:
            out[model] = (seen, rates[model])
    return out


RATES = {**dict.fromkeys(MODELS, MODEL_RATE), "sim-judge": JUDGE_RATE}
