"""report.html at scale: 100k battles (2 candidates x 50k queries), every answer and verdict distinct.

The report is written as a run writes it (`write_reports`: the page with its first battles, the rest
compressed in `report_battles/` beside it). Prints, for the Python side, the time to build and write
the reports against reading the same checkpoint records once in file order (the floor of any report
that shows the texts), and the sizes of report.html and of its parts against the raw text they carry;
for the browser side (Debian's Chromium via Playwright, when installed), the time until the page is
usable (every part loaded) against a bare page that only parses all the battles as one JSON, a text
search against a naive per-battle search in the same page, and the longest main-thread task while
searching (a frozen page shows up there).

    python benchmarks/bench_report_html.py [--battles 100000] [--answer-words 80] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arena_engine.battles import Game, combine
from arena_engine.config import config_from_dict
from arena_engine.judge import LABELS, Verdict, candidate_view
from arena_engine.leaderboard import leaderboards
from arena_engine.pipeline import GENERATIONS, JUDGMENTS, ArenaResults, EndpointUsage
from arena_engine.report import write_reports
from arena_engine.report.html import embed_json, page_data
from arena_engine.report.parts import PARTS_DIR
from arena_engine.store import RunStore, content_key

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
WORDS = [f"w{i:x}" for i in range(3000)] + ["the", "a", "of", "and", "to", "in", "is", "answer", "python", "model"]


def build(run_dir: Path, battles: int, answer_words: int, seed: int = 0) -> tuple[ArenaResults, RunStore, int]:
    rng = np.random.default_rng(seed)
    cands, base = ["cand-a", "cand-b"], "base"
    queries = battles // len(cands)
    subsets = [f"s{i}" for i in range(4)]
    cfg = config_from_dict({
        "run": {"output_dir": str(run_dir), "seed": seed}, "datasets": [{"name": "bench", "path": str(run_dir)}],
        "models": [{"name": m, "api_url": "http://127.0.0.1:9/v1"} for m in [base, *cands]],
        "arena": {"baseline": base}, "judge": {"name": "judge", "api_url": "http://127.0.0.1:9/v1"},
        "rating": {"rounds": 20},
    }, source="<bench>")
    store = RunStore(run_dir, fsync_interval=60).open()
    words = np.array(WORDS)
    text_bytes = 0

    def text(n: int) -> str:
        return " ".join(words[rng.integers(0, len(words), n)])

    games: list[Game] = []
    labels = list(LABELS)
    for q in range(queries):
        sub, qid = subsets[q % len(subsets)], str(q)
        question = f"Question {q}: " + text(15) + "?"
        keys = {}
        for m in [base, *cands]:
            answer = text(answer_words)
            text_bytes += len(answer) + (len(question) if m == base else 0)
            k = content_key({"m": m, "q": q})
            store.put(GENERATIONS, k, {"model": m, "dataset": "bench", "subset": sub, "query_id": qid,
                                       "question": question, "answer": answer})
            keys[m] = k.hex()
        for c in cands:
            for cand_is_a in (True, False):
                label = labels[int(rng.integers(0, 5))]
                reasoning = "Assistant " + text(20)
                text_bytes += len(reasoning)
                a, b = (c, base) if cand_is_a else (base, c)
                k = content_key({"j": q, "a": a, "b": b})
                store.put(JUDGMENTS, k, {"verdict": label, "reasoning": reasoning, "raw": "", "dataset": "bench",
                                         "subset": sub, "query_id": qid, "a": a, "b": b, "a_key": keys[a],
                                         "b_key": keys[b]})
                games.append(Game("bench", sub, qid, c, base, cand_is_a,
                                  candidate_view(Verdict.from_label(label), cand_is_a), None, k.hex()))
    store.sync()
    results = ArenaResults(
        config=cfg, run_dir=run_dir, games=games, battles=combine(games),
        boards=leaderboards(games, [base, *cands], base, cfg.rating, seed),
        usage={m: EndpointUsage(m) for m in [base, *cands]}, failures=0, missing=0, reference_metrics={},
        reference_counts={}, queries={("bench", s): queries // len(subsets) for s in subsets}, elapsed=0.0,
    )
    return results, store, text_bytes


def python_side(results: ArenaResults, store: RunStore) -> tuple[Path, int, dict[str, Any]]:
    t0 = time.perf_counter()
    n_records = sum(1 for _ in store.records(GENERATIONS)) + sum(1 for _ in store.records(JUDGMENTS))
    t_floor = time.perf_counter() - t0
    t0 = time.perf_counter()
    paths = write_reports(results, store)
    t_html = time.perf_counter() - t0
    print(f"python: reports built and written in {t_html:.2f} s; reading the {n_records:,} checkpoint records "
          f"once takes {t_floor:.2f} s (ratio {t_html / t_floor:.2f}x)")
    parts = sum(p.stat().st_size for p in (paths["html"].parent / PARTS_DIR).glob("*.js"))
    return paths["html"], parts, page_data(results, store)


BARE = """<!DOCTYPE html><meta charset="utf-8"><body><script type="application/json" id="arena-data">{data}</script>
<script>const t0 = performance.now(); const D = JSON.parse(document.getElementById("arena-data").textContent);
document.body.dataset.parsed = String(performance.now() - t0);</script></body>"""

NAIVE_SEARCH = """(needle) => {
  const D = JSON.parse(document.getElementById("arena-data").textContent).battles;
  const S = D.strings, c = D.columns, n = D.n; const lo = needle.toLowerCase();
  const t0 = performance.now(); let k = 0;
  for (let i = 0; i < n; i++) {
    const f = [c.q[i], c.ac[i], c.ao[i], c.r1[i], c.r2[i]];
    if (f.some((j) => j >= 0 && S[j].toLowerCase().includes(lo))) k++;
  }
  return [performance.now() - t0, k];
}"""


def _longest(page: Any) -> str:
    """The longest main-thread task since the last reset (Chromium reports tasks over 50 ms only)."""
    durations = page.evaluate("window.__long")
    return f"{max(durations):.0f} ms" if durations else "under 50 ms"


def browser_side(path: Path, bare: Path) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("browser: playwright is not installed; skipped")
        return
    if not Path(CHROMIUM).exists():
        print(f"browser: no Chromium at {CHROMIUM}; skipped")
        return
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        warm = browser.new_page()  # the first page pays the renderer's start-up; keep it out of both figures
        warm.goto(bare.with_name("warm.html").as_uri())
        warm.close()
        page = browser.new_page()
        t0 = time.perf_counter()
        page.goto(bare.as_uri(), timeout=120_000)
        page.wait_for_selector("body[data-parsed]", state="attached", timeout=120_000)
        t_bare = time.perf_counter() - t0
        needle = "w1a w2b"
        naive_ms, naive_count = page.evaluate(NAIVE_SEARCH, needle)  # over every battle, held in this page
        page.close()

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        t0 = time.perf_counter()
        page.goto(path.as_uri(), timeout=120_000)
        page.wait_for_selector("body[data-parts=loaded]", state="attached", timeout=120_000)
        # the page's own clock, from navigation start: Playwright's polling waits for a busy main thread
        t_load = float(page.get_attribute("body", "data-ready-ms")) / 1000
        t_all = float(page.get_attribute("body", "data-parts-ms")) / 1000
        print(f"browser: report usable {t_load:.2f} s after opening (bar 3 s), every battle loaded after {t_all:.2f} s; "
              f"a bare page that only parses all the battles as one JSON takes {t_bare:.2f} s "
              f"(ratio {t_all / t_bare:.2f}x)")
        page.evaluate("""() => { window.__long = []; new PerformanceObserver((l) => { for (const e of l.getEntries())
            window.__long.push(e.duration); }).observe({ type: "longtask" }); }""")
        t0 = time.perf_counter()
        page.fill("#f-text", needle)
        page.wait_for_function("document.body.dataset.browser === 'busy'")
        page.wait_for_selector("body[data-browser=ready]", timeout=120_000)
        t_search = time.perf_counter() - t0 - 0.15  # minus the typing debounce
        count = page.get_attribute("#battle-count", "data-count")
        longest = _longest(page)
        print(f"browser: text search over all texts {t_search:.2f} s ({count} battles), longest main-thread task "
              f"{longest}; a naive per-battle search takes {naive_ms / 1000:.2f} s ({naive_count} battles) "
              f"as one blocking task in the bare page (ratio {t_search / (naive_ms / 1000):.2f}x)")
        page.evaluate("window.__long = []")
        t0 = time.perf_counter()
        page.fill("#f-text", "")
        page.select_option("#f-mode", "ge")
        page.fill("#f-threshold", "0.75")
        page.wait_for_selector("body[data-browser=ready]")
        page.locator("#battle-rows tr").first.click()
        page.wait_for_selector("#battle-detail:not([hidden])")
        t_click = time.perf_counter() - t0
        longest = _longest(page)
        print(f"browser: threshold filter + open a battle {t_click:.2f} s, longest task {longest}; "
              f"page errors: {errors or 'none'}")
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--battles", type=int, default=100_000)
    ap.add_argument("--answer-words", type=int, default=80)
    ap.add_argument("--keep", type=Path, default=None, help="keep the run folder and report here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-html-"))
    run_dir = (args.keep or tmp) / "run"
    try:
        t0 = time.perf_counter()
        results, store, text_bytes = build(run_dir, args.battles, args.answer_words)
        print(f"setup: {len(results.battles):,} battles, {text_bytes / 1e6:.1f} MB of text, built in "
              f"{time.perf_counter() - t0:.1f} s")
        with store:
            out, parts, data = python_side(results, store)
        size = out.stat().st_size
        print(f"size: report.html {size / 1e6:.1f} MB (bar 15 MB) + {parts / 1e6:.1f} MB of parts beside it for "
              f"{text_bytes / 1e6:.1f} MB of distinct text (ratio {(size + parts) / text_bytes:.2f}x); "
              f"{len(data['battles']['strings']):,} strings")
        bare = run_dir / "bare.html"
        bare.with_name("warm.html").write_text("<!DOCTYPE html><p>warm</p>", encoding="utf-8")
        bare.write_text(BARE.replace("{data}", embed_json(data)), encoding="utf-8")
        browser_side(out, bare)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
