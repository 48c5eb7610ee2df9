"""A big run's report.html keeps its first battles and loads the rest from compressed parts beside it:
the browser shows the same battles, counts and texts as one page holding them all."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from report_browser import launch_browser, open_report, shown_count
from test_report_html import Demo, demo  # noqa: F401  (the demo run, built once per module)

from arena_engine.report import write_reports
from arena_engine.report.html import report_html
from arena_engine.report.parts import PARTS_DIR
from arena_engine.store import RunStore

INLINE, PART = 7, 11  # the demo's 60 battles: 7 in the page, then parts of 11, 11, 11, 11, 9


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture(scope="module")
def reports(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:  # noqa: F811
    """The demo's report written in parts, and the same report as one page."""
    whole = tmp_path_factory.mktemp("whole") / "report.html"
    with RunStore(demo.run_dir) as store:
        whole.write_text(report_html(demo.results, store), encoding="utf-8")
    paths = write_reports(demo.results, inline=INLINE, part_size=PART)
    split = tmp_path_factory.mktemp("split")
    shutil.copytree(paths["html"].parent, split, dirs_exist_ok=True)
    return split / "report.html", whole


def test_parts_are_written_beside_the_page_and_hold_only_base64(reports: tuple[Path, Path]) -> None:
    page, _ = reports
    parts = sorted((page.parent / PARTS_DIR).glob("part-*.js"))
    assert [p.name for p in parts] == [f"part-{i:04d}.js" for i in range(1, 6)]
    html = page.read_text(encoding="utf-8")
    data = orjson.loads(re.search(r'<script type="application/json" id="arena-data">(.*?)</script>', html, re.S)[1])
    assert [p["src"] for p in data["battles"]["parts"]] == [f"{PARTS_DIR}/{p.name}" for p in parts]
    assert data["battles"]["n"] == INLINE and data["battles"]["total"] == 60
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)
    assert csp and "default-src 'none'" in csp.group(1) and "file:" in csp.group(1)
    for p in parts:  # the payload is base64 only, whatever the answers say
        assert re.fullmatch(r'"use strict";\(window\.ARENA_PARTS = window\.ARENA_PARTS \|\| \[\]\)'
                            r'\.push\(\{"i": \d+, "n": \d+, "z": "[A-Za-z0-9+/=]+"\}\);\n', p.read_text())


def test_the_page_in_parts_browses_like_the_whole_page(reports: tuple[Path, Path], demo: Demo,  # noqa: F811
                                                       browser: Any) -> None:
    split, whole = reports
    seen = []
    for path in (split, whole):
        page, watch = open_report(browser, path)
        page.fill("#f-text", "France")  # typed as soon as the page is usable: parts may still be inflating
        page.wait_for_selector("body[data-parts=loaded]", timeout=20_000)
        counts = [shown_count(page)]
        page.fill("#f-text", "")
        counts.append(shown_count(page))
        page.select_option("#f-candidate", label="sim-weak")
        counts.append(shown_count(page))
        page.fill("#f-text", "capital of France")
        counts.append(shown_count(page))
        page.select_option("#f-candidate", label="all")
        page.fill("#f-text", "")
        page.select_option("#f-mode", "ge")
        page.fill("#f-threshold", "0.75")
        counts.append(shown_count(page))
        page.select_option("#f-mode", "all")
        page.click("#p-last")  # the last battle lives in the last part
        row = page.locator("#battle-rows tr").last
        sub, qid, cand = (row.locator("td").nth(i).inner_text() for i in (1, 2, 3))
        row.click()
        detail = {k: page.inner_text(f"#detail-{k}") for k in
                  ("question", "answer-candidate", "answer-opponent", "reasoning-1", "reasoning-2")}
        seen.append((counts, sub, qid, cand, detail, page.inner_text("#subtitle"), page.inner_text("#pairs")))
        assert watch.errors == []
        page.close()
    assert seen[0] == seen[1]
    counts, sub, qid, cand, detail, _, _ = seen[0]
    assert counts[1] == len(demo.results.battles) == 60 and 0 < counts[3] < counts[2] < counts[1]
    assert 0 < counts[0] < 60
    t = demo.texts[(*sub.split(" / "), qid, cand)]
    assert detail == {"question": t["question"], "answer-candidate": t["cand"], "answer-opponent": t["opp"],
                      "reasoning-1": t["r1"], "reasoning-2": t["r2"]}


def test_a_page_copied_without_its_parts_says_what_is_missing(reports: tuple[Path, Path], browser: Any,
                                                              tmp_path: Path) -> None:
    split, _ = reports
    shutil.copy(split, tmp_path / "report.html")
    (tmp_path / PARTS_DIR).mkdir()
    shutil.copy(split.parent / PARTS_DIR / "part-0001.js", tmp_path / PARTS_DIR)  # the other four are lost
    page, watch = open_report(browser, tmp_path / "report.html")
    page.wait_for_selector("body[data-parts=missing]", timeout=20_000)
    assert shown_count(page) == INLINE + PART
    note = page.inner_text("#browser-note")
    assert "60 battles" in note and "42 of them" in note and "part-0002.js" in note
    assert "60 battles" in page.inner_text("#subtitle")
    assert watch.errors == ["console.error: Failed to load resource: net::ERR_FILE_NOT_FOUND"] * 4  # the lost four


def test_a_smaller_rerun_removes_the_parts_it_no_longer_needs(demo: Demo) -> None:  # noqa: F811
    paths = write_reports(demo.results, inline=INLINE, part_size=PART)
    folder = paths["html"].parent / PARTS_DIR
    assert len(list(folder.glob("part-*.js"))) == 5
    paths = write_reports(demo.results, inline=INLINE, part_size=30)
    assert sorted(p.name for p in folder.glob("part-*.js")) == ["part-0001.js", "part-0002.js"]
    paths = write_reports(demo.results)
    html = paths["html"].read_text(encoding="utf-8")
    assert not folder.exists() and '"parts"' not in html
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)
    assert csp and "file:" not in csp[1] and "'self'" not in csp[1]  # one page: no script from anywhere else


@pytest.mark.parametrize("inline", [INLINE, 1000])
def test_parts_made_one_at_a_time_are_those_of_the_whole_browser(demo: Demo, inline: int) -> None:  # noqa: F811
    """The parts written as they are made (int64 columns, scores rounded per row) are the files that
    splitting the whole browser's lists gives, byte for byte; a browser without parts is unchanged."""
    from arena_engine.report.html import battle_data, iter_browser
    from arena_engine.report.parts import part_script, split_battles

    with RunStore(demo.run_dir) as store:
        head, parts = split_battles(battle_data(demo.results, store), inline=inline, part_size=PART)
        files = {p["src"]: part_script(i + 1, part) for i, (p, part) in enumerate(zip(head.get("parts", []), parts, strict=True))}
        streamed_head, streamed = iter_browser(demo.results, store, inline=inline, part_size=PART)
        assert orjson.dumps(streamed_head) == orjson.dumps(head)
        assert dict(streamed) == files
