"""Model and judge text is untrusted: script payloads in answers, reasoning, questions and names must show
as text in report.html and never run, with the page's Content-Security-Policy and without it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_browser import Spec, launch_browser, open_report, shown_count, synthetic_run

from arena_engine.report import write_reports

# Each payload records that it ran (window.__ran) and opens a dialog; neither may happen.
IMG = """<img src=x onerror="window.__ran.push('img');alert('img')">"""
SCRIPT = """</script><script>window.__ran.push('script');alert('script')</script><!--"""
SVG = """"'><svg onload="window.__ran.push('svg');alert('svg')">"""
STYLE = """</style><style>*{display:none!important}</style>"""
JS_BREAK = "\u2028\u2029\"});window.__ran.push('json');//"
ALL = "\n".join((IMG, SCRIPT, SVG, STYLE, JS_BREAK))

CANDIDATE = f"cand{IMG}"
BASELINE = f"base{SVG}"
JUDGE = f"judge{SCRIPT}"
DATASET = f"ds{STYLE}"
SUBSET = "sub<b onmouseover=alert(1)>x</b>"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    specs = [
        Spec(f"{i}<script>alert('qid')</script>", f"Question {i}: {ALL}", CANDIDATE, f"Candidate says {i}:\n{ALL}",
             f"Baseline says {i}: {SVG}{IMG}", ("A>B", "B>A") if i % 3 else ("B>>A", "A>>B"),
             (f"reasoning one {i} {IMG}{SCRIPT}", f"reasoning two {i} {SVG}{JS_BREAK}"))
        for i in range(6)
    ]
    specs.append(Spec("bad", f"Question bad {SCRIPT}", CANDIDATE, f"answer {IMG}", f"base {SVG}", ("A=B", None),
                      (f"tie {STYLE}", f"garbage {IMG} from the judge")))
    run_dir = tmp_path_factory.mktemp("xss") / "run"
    results, store = synthetic_run(run_dir, dataset=DATASET, subset=SUBSET, baseline=BASELINE, judge=JUDGE, specs=specs)
    with store:
        return write_reports(results, store=store)["html"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


def test_payloads_stay_inside_the_data_element(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert len(re.findall(r"<script\b", html, re.IGNORECASE)) == 2
    assert len(re.findall(r"</script", html, re.IGNORECASE)) == 2
    assert len(re.findall(r"</style", html, re.IGNORECASE)) == 1
    for marker in ("<img", "<svg onload", "<b onmouseover", "\u2028", "\u2029"):
        assert marker not in html


def _without_csp(path: Path, out: Path) -> Path:
    html = path.read_text(encoding="utf-8")
    stripped, n = re.subn(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
    assert n == 1
    out.write_text(stripped, encoding="utf-8")
    return out


@pytest.mark.parametrize("csp", [True, False], ids=["as-written", "csp-removed"])
def test_no_payload_runs_and_every_payload_shows_as_text(browser: Any, report: Path, tmp_path: Path, csp: bool) -> None:
    path = report if csp else _without_csp(report, tmp_path / "report.html")
    page, watch = open_report(browser, path, init_script="window.__ran = [];")

    # names: leaderboard, title, heat map, usage table, browser filters
    assert CANDIDATE in page.inner_text("#title") and BASELINE in page.inner_text("#title")
    overall = page.locator('table.leaderboard[data-scope="OVERALL"] tbody tr td:nth-child(2)').all_inner_texts()
    assert any(CANDIDATE in c for c in overall) and any(BASELINE in c for c in overall)
    assert page.inner_text("table.heat tbody th") == CANDIDATE
    assert JUDGE in page.inner_text("#usage")
    assert page.locator("#f-subset option").all_inner_texts()[1] == f"{DATASET} / {SUBSET}"

    # texts: search for a payload literally, open the battle, read everything back unchanged
    page.fill("#f-text", "<img src=x onerror=")
    assert shown_count(page) == 7
    page.fill("#f-text", "garbage <img")
    assert shown_count(page) == 1
    page.locator("#battle-rows tr").first.click()
    assert page.inner_text("#detail-question") == f"Question bad {SCRIPT}"
    assert page.inner_text("#detail-answer-candidate") == f"answer {IMG}"
    assert page.inner_text("#detail-answer-opponent") == f"base {SVG}"
    assert page.inner_text("#detail-reasoning-1") == f"tie {STYLE}"
    assert f"garbage {IMG} from the judge" in page.inner_text("#detail-reasoning-2")
    assert page.inner_text("#detail-excluded-2") == "Excluded: unparseable verdict: no verdict label"
    assert page.inner_text("#detail-title") == f"{CANDIDATE} vs {BASELINE}"
    page.fill("#f-text", "")
    assert shown_count(page) == 7
    page.locator("#battle-rows tr").first.click()
    assert page.inner_text("#detail-answer-candidate") == "Candidate says 0:\n" + ALL
    assert page.locator("#detail-meta").inner_text().startswith(f"{DATASET} / {SUBSET} · query 0<script>alert('qid')</script>")
    page.hover("#battle-rows tr td:nth-child(2)")  # a mouse over the subset name fires nothing

    # nothing ran, nothing was parsed as markup, nothing was hidden by injected CSS
    assert page.evaluate("window.__ran") == []
    assert watch.dialogs == []
    assert page.locator("img, iframe, object, embed, b").count() == 0
    assert page.evaluate("[...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length") == 0
    assert page.evaluate("document.styleSheets.length") == 1
    assert page.locator("#battle-detail").is_visible()
    assert watch.errors == []
    page.close()
