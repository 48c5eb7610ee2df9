"""report.html's plots and layout in Chromium at 1400 and 800 px: the ratings' forest plot per scope, the
position-consistency chart, the reference answer and its metrics in the battle view, no page-wide
horizontal scroll (wide tables scroll inside their box), and a font stack that names CJK faces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from report_browser import Spec, launch_browser, open_report, synthetic_run, wait_ready
from test_report_html import Demo, demo  # noqa: F401  (the demo run, built once per module)

from arena_engine.metrics import METRIC_NAMES, sample_metrics
from arena_engine.report import write_reports
from arena_engine.report.html import _asset

IMG = """<img src=x onerror="window.__ran.push('img')">"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


def _overflow(page: Any) -> list[str]:
    """Elements that stick out of the viewport without a scrolling box around them."""
    return page.evaluate("""() => {
      const vw = document.documentElement.clientWidth, out = [];
      for (const e of document.querySelectorAll('main *')) {
        if (e.getBoundingClientRect().right <= vw + 1 || e.closest('[hidden]')) continue;
        let p = e.parentElement, boxed = false;
        for (; p && p !== document.body; p = p.parentElement) {
          const ox = getComputedStyle(p).overflowX;
          if ((ox === 'auto' || ox === 'scroll' || ox === 'hidden') && p.getBoundingClientRect().right <= vw + 1) { boxed = true; break; }
        }
        if (!boxed) out.push(e.tagName + '#' + e.id);
      }
      return out;
    }""")


@pytest.mark.parametrize("width", [1400, 800])
def test_layout_plots_and_battle_view(demo: Demo, browser: Any, width: int) -> None:  # noqa: F811
    page, watch = open_report(browser, demo.html, width=width, height=1000)
    boards = demo.report["leaderboards"]
    # open a battle of the subset with reference answers, so the widest parts of the page are shown
    subsets = page.locator("#f-subset option").all_inner_texts()
    page.select_option("#f-subset", str(subsets.index("general_qa / example") - 1))
    wait_ready(page)
    page.locator("#battle-rows tr").first.click()
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    assert _overflow(page) == []
    # the forest plot of ratings: one row per model, labelled with the rating and its interval
    rows = page.locator("#rating-plot svg g.row")
    assert rows.count() == len(boards[0]["entries"])
    for e in boards[0]["entries"]:
        label = page.locator(f'#rating-plot g.row[data-model="{e["model"]}"]').text_content()
        assert f"{e['rating']:.0f}" in label
        if e["model"] != demo.report["baseline"]:
            assert f"({e['rating_lower']:.0f} – {e['rating_upper']:.0f})" in label
    # per scope: the selector redraws it for the last subset board
    page.select_option("#forest-scope", str(len(boards) - 1))
    last = boards[-1]["entries"]
    strong = next(e for e in last if e["model"] == "sim-strong")
    assert f"{strong['rating']:.0f}" in page.locator('#rating-plot g.row[data-model="sim-strong"]').text_content()
    # the position-consistency chart: one bar per candidate, with the share of agreeing battles
    bars = page.locator("#consistency-plot g.row")
    candidates = [e["model"] for e in boards[0]["entries"] if e["model"] != demo.report["baseline"]]
    assert bars.count() == len(candidates)
    shares = demo.report["judge_diagnostics"]["position_consistency"]
    for m in candidates:
        assert f"{100 * shares[m]:.1f}%" in page.locator(f'#consistency-plot g.row[data-model="{m}"]').text_content()
    # the battle view: the query's reference answer (as the dataset file says) and both answers' metrics
    detail = page.inner_text("#detail-meta")
    qid = detail.split("query ")[1].split(" ·")[0]
    lines = (demo.run_dir.parent / "data" / "general_qa" / "example.jsonl").read_text(encoding="utf-8").splitlines()
    reference = orjson.loads(lines[int(qid)])["response"]
    assert page.inner_text("#detail-reference") == reference
    cand = page.inner_text("#detail-answer-candidate")
    want = sample_metrics(cand, reference)
    cells = page.locator('#detail-ref-metrics tr[data-model="sim-strong"] td').all_inner_texts()[1:]
    assert [float(c) for c in cells] == [pytest.approx(want[n], abs=5e-5) for n in METRIC_NAMES]
    assert watch.errors == [] and watch.dialogs == []
    page.close()


def test_a_battle_without_a_reference_shows_none(demo: Demo, browser: Any) -> None:  # noqa: F811
    page, watch = open_report(browser, demo.html, width=1400, height=1000)
    subsets = page.locator("#f-subset option").all_inner_texts()
    page.select_option("#f-subset", str(subsets.index("general_qa / arena") - 1))
    wait_ready(page)
    page.locator("#battle-rows tr").first.click()
    assert page.locator("#detail-reference").count() == 0 and page.locator("#detail-question").is_visible()
    assert watch.errors == []
    page.close()


def test_reference_text_is_escaped(browser: Any, tmp_path: Path) -> None:
    specs = [Spec(str(i), f"Question {i}", "cand", f"answer {i}", f"base {i}", ("A>B", "B>A"), ("r1", "r2"))
             for i in range(3)]
    run_dir = tmp_path / "run"
    (run_dir / "data").mkdir(parents=True)
    rows = [{"id": str(i), "query": f"Question {i}", "response": f"ref {i} {IMG}</script>"} for i in range(3)]
    (run_dir / "data" / "s.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    results, store = synthetic_run(run_dir, dataset="ds", subset="s", baseline="base", judge="j", specs=specs)
    with store:
        html = write_reports(results, store=store)["html"]
    page, watch = open_report(browser, html, init_script="window.__ran = [];")
    page.locator("#battle-rows tr").first.click()
    assert page.inner_text("#detail-reference") == f"ref 0 {IMG}</script>"
    assert page.evaluate("window.__ran") == [] and page.locator("main img").count() == 0
    assert watch.errors == []
    page.close()


def test_font_stack_names_cjk_faces(demo: Demo, browser: Any) -> None:  # noqa: F811
    css = _asset("report.css")
    for face in ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei"):
        assert f'"{face}"' in css
    page, _ = open_report(browser, demo.html)
    family = page.evaluate("getComputedStyle(document.body).fontFamily")
    assert "Noto Sans CJK SC" in family and family.rstrip().endswith("sans-serif")
    page.close()


def test_diff_toggle_marks_the_words_only_one_answer_has(browser: Any, tmp_path: Path) -> None:
    specs = [Spec("0", "Question", "cand", f"The capital is Paris {IMG} indeed", "The capital is Lyon",
                  ("A>B", "B>A"), ("r1", "r2"))]
    results, store = synthetic_run(tmp_path / "run", dataset="ds", subset="s", baseline="base", judge="j", specs=specs)
    with store:
        html = write_reports(results, store=store)["html"]
    page, watch = open_report(browser, html, init_script="window.__ran = [];")
    page.locator("#battle-rows tr").first.click()
    page.check("#diff-toggle")
    only_cand = page.locator("#detail-answer-candidate mark").all_inner_texts()
    assert only_cand == ["Paris", "<img", "src=x", """onerror="window.__ran.push('img')">""", "indeed"]
    assert page.locator("#detail-answer-opponent mark").all_inner_texts() == ["Lyon"]
    assert page.inner_text("#detail-answer-candidate") == f"The capital is Paris {IMG} indeed"  # text unchanged
    page.uncheck("#diff-toggle")
    assert page.locator("#battle-detail mark").count() == 0
    assert page.evaluate("window.__ran") == [] and watch.errors == []
    page.close()
