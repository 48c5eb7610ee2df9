"""Helpers for the HTML report tests: a headless Chromium (Debian's package, driven by Playwright) and a
run folder built from chosen texts, so tests control every question, answer, verdict and name."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from arena_engine.battles import Game, combine
from arena_engine.config import config_from_dict
from arena_engine.judge import Verdict, candidate_view
from arena_engine.leaderboard import leaderboards
from arena_engine.pipeline import GENERATIONS, JUDGMENTS, ArenaResults, EndpointUsage
from arena_engine.store import RunStore, content_key

CHROMIUM = os.environ.get("ARENA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
INSTALL_HINT = "install it with .ci/run's steps: apt-get install chromium; pip install playwright"


def launch_browser() -> Iterator[Any]:
    """A Chromium browser for a test module; skips (with the reason) when it cannot be had."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"python package 'playwright' is not installed ({INSTALL_HINT})")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} ({INSTALL_HINT})")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageWatch:
    """Console errors, uncaught exceptions and dialogs of one page."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

        def on_dialog(d: Any) -> None:
            self.dialogs.append(f"{d.type}: {d.message}")
            d.dismiss()

        page.on("dialog", on_dialog)


def open_report(browser: Any, path: Path, *, init_script: str | None = None, width: int = 1280,
                height: int = 900) -> tuple[Any, PageWatch]:
    """Open a report file; ``init_script`` runs before the page's own script."""
    page = browser.new_page(viewport={"width": width, "height": height})
    watch = PageWatch()
    watch.attach(page)
    if init_script:
        page.add_init_script(init_script)
    page.goto(path.resolve().as_uri())
    page.wait_for_selector("body[data-browser=ready]", timeout=20_000)
    return page, watch


def wait_ready(page: Any) -> None:
    page.wait_for_selector("body[data-browser=ready]", timeout=20_000)


def shown_count(page: Any) -> int:
    wait_ready(page)
    return int(page.get_attribute("#battle-count", "data-count"))


# ---------------------------------------------------------------------------------- synthetic runs


@dataclass(frozen=True)
class Spec:
    """One battle of a synthetic run: texts and the judge's two labels ("A>B", ..., None = unparseable)."""

    query_id: str
    question: str
    candidate: str
    cand_answer: str
    base_answer: str
    labels: tuple[str | None, str | None]
    reasonings: tuple[str, str]


def synthetic_run(run_dir: Path, *, dataset: str, subset: str, baseline: str, judge: str, specs: Sequence[Spec],
                  rounds: int = 50) -> tuple[ArenaResults, RunStore]:
    """A run folder whose checkpoints hold exactly ``specs`` (records shaped like the pipeline's), and its
    results; the returned store is open (close it)."""
    candidates = list(dict.fromkeys(s.candidate for s in specs))
    models = [baseline, *candidates]
    cfg = config_from_dict(
        {
            "run": {"output_dir": str(run_dir), "seed": 3},
            "datasets": [{"name": dataset, "path": str(run_dir / "data")}],
            "models": [{"name": m, "api_url": "http://127.0.0.1:9/v1", "price_in": 1.0, "price_out": 2.0} for m in models],
            "arena": {"baseline": baseline},
            "judge": {"name": judge, "api_url": "http://127.0.0.1:9/v1"},
            "rating": {"rounds": rounds},
        },
        source="<test>",
    )
    store = RunStore(run_dir).open()
    games: list[Game] = []
    usage = {m: EndpointUsage(m) for m in models} | {"\0judge": EndpointUsage(judge)}

    def generation(model: str, spec: Spec, answer: str) -> str:
        key = content_key({"t": "generation", "model": model, "q": spec.question, "id": spec.query_id})
        store.put(GENERATIONS, key, {"model": model, "dataset": dataset, "subset": subset, "query_id": spec.query_id,
                                     "question": spec.question, "answer": answer, "prompt_tokens": 10,
                                     "completion_tokens": 20, "latency": 0.1})
        u = usage[model]
        u.requests += 1
        u.prompt_tokens += 10
        u.completion_tokens += 20
        u.latencies.append(0.05 + 0.01 * len(u.latencies))
        return key.hex()

    for spec in specs:
        cand_key = generation(spec.candidate, spec, spec.cand_answer)
        base_key = generation(baseline, spec, spec.base_answer)
        for candidate_is_a, label, reasoning in zip((True, False), spec.labels, spec.reasonings, strict=True):
            a, b = (spec.candidate, baseline) if candidate_is_a else (baseline, spec.candidate)
            a_key, b_key = (cand_key, base_key) if candidate_is_a else (base_key, cand_key)
            key = content_key({"t": "judgment", "a": a_key, "b": b_key})
            raw = orjson.dumps({"reasoning": reasoning, "verdict": label}).decode() if label else reasoning
            store.put(JUDGMENTS, key, {
                "verdict": label, "reasoning": reasoning if label else "", "raw": raw,
                "error": None if label else "no verdict label", "judge": judge, "dataset": dataset, "subset": subset,
                "query_id": spec.query_id, "a": a, "b": b, "a_key": a_key, "b_key": b_key,
            })
            outcome = candidate_view(Verdict.from_label(label), candidate_is_a) if label else None
            reason = None if label else "unparseable verdict: no verdict label"
            games.append(Game(dataset, subset, spec.query_id, spec.candidate, baseline, candidate_is_a, outcome, reason,
                              key.hex()))
            usage["\0judge"].requests += 1
            usage["\0judge"].latencies.append(0.2)
    store.sync()
    results = ArenaResults(
        config=cfg, run_dir=run_dir, games=games, battles=combine(games),
        boards=leaderboards(games, models, baseline, cfg.rating, cfg.seed), usage=usage, failures=0, missing=0,
        reference_metrics={}, reference_counts={}, queries={(dataset, subset): len({s.query_id for s in specs})},
        elapsed=1.5,
    )
    return results, store
