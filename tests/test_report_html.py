"""report.html: built by the demo, opened from disk in headless Chromium, checked against report.json,
leaderboard.txt and the run's checkpoints (texts read back independently of the report code)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from report_browser import Spec, launch_browser, open_report, shown_count, synthetic_run, wait_ready

from arena_engine.battles import Battle, Game, combine
from arena_engine.demo import demo_config, demo_sim_config, write_demo_dataset
from arena_engine.pipeline import GENERATIONS, JUDGMENTS, Arena, ArenaResults
from arena_engine.report import parse_leaderboard, write_reports
from arena_engine.report.html import NO_OUTCOME, battle_data, embed_json, page_data
from arena_engine.sim import SimServer
from arena_engine.store import RunStore

DEMO_QUERIES = 15


@dataclass
class Demo:
    run_dir: Path
    html: Path
    report: dict[str, Any]
    results: ArenaResults
    texts: dict[tuple[str, str, str, str], dict[str, str]]  # per battle: question, answers, reasoning


def _oracle_texts(run_dir: Path, battles: list[Battle]) -> dict[tuple[str, str, str, str], dict[str, str]]:
    """Every battle's texts, found by model and query in the checkpoints (not by content key)."""
    with RunStore(run_dir) as store:
        gens = {(r["model"], r["dataset"], r["subset"], r["query_id"]): r for r in store.records(GENERATIONS)}
        judg = {(r["dataset"], r["subset"], r["query_id"], r["a"], r["b"]): r for r in store.records(JUDGMENTS)}
    out = {}
    for b in battles:
        c = gens[(b.candidate, b.dataset, b.subset, b.query_id)]
        o = gens[(b.opponent, b.dataset, b.subset, b.query_id)]
        j1 = judg[(b.dataset, b.subset, b.query_id, b.candidate, b.opponent)]
        j2 = judg[(b.dataset, b.subset, b.query_id, b.opponent, b.candidate)]
        out[(b.dataset, b.subset, b.query_id, b.candidate)] = {
            "question": c["question"], "cand": c["answer"], "opp": o["answer"],
            "r1": j1["reasoning"], "r2": j2["reasoning"], "v1": j1["verdict"], "v2": j2["verdict"],
        }
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The built-in demo (its dataset, simulated models and judge, and config; 200 bootstrap rounds to
    save time), run once, with its reports written as `arena-engine demo` writes them."""
    out = tmp_path_factory.mktemp("demo")

    async def run() -> ArenaResults:
        data = write_demo_dataset(out / "data" / "general_qa", DEMO_QUERIES)
        async with SimServer(demo_sim_config(seed=0, latency=0.002)) as sim, \
                Arena(demo_config(sim.url, out, data, seed=0, rounds=200)) as arena:
            return await arena.run()

    results = anyio.run(run)
    paths = write_reports(results)  # after the arena closed, as the CLI does: it reopens the checkpoints
    report = orjson.loads(paths["json"].read_bytes())
    return Demo(results.run_dir, paths["html"], report, results, _oracle_texts(results.run_dir, results.battles))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture
def page(demo: Demo, browser: Any) -> Iterator[Any]:  # demo first: it runs an event loop, Playwright holds one
    page, watch = open_report(browser, demo.html)
    yield page
    page.close()
    assert watch.errors == [], "the page logged errors"
    assert watch.dialogs == []


def _expected(demo: Demo, *, cand: str | None = None, subset: str | None = None, mode: str = "all",
              thr: float = 0.5, text: str = "") -> int:
    n = 0
    for b in demo.results.battles:
        if (cand is not None and b.candidate != cand) or (subset is not None and b.subset != subset):
            continue
        if (mode == "ge" and (b.score is None or b.score < thr)) or (mode == "le" and (b.score is None or b.score > thr)):
            continue
        if mode == "excluded" and b.score is not None:
            continue
        t = demo.texts[(b.dataset, b.subset, b.query_id, b.candidate)]
        if text and not any(text.lower() in t[k].lower() for k in ("question", "cand", "opp", "r1", "r2")):
            continue
        n += 1
    return n


# ------------------------------------------------------------------------------- without a browser


def test_embedded_json_cannot_end_the_script_and_reads_back() -> None:
    nasty = {"a": "</script><script>alert(1)</script>", "b": "<!-- x", "c": "&amp; > <", "d": "line\u2028sep\u2029end",
             "</script>": ["<img src=x onerror=alert(1)>"]}
    text = embed_json(nasty)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert orjson.loads(text) == nasty


def test_page_is_self_contained_and_runs_only_its_own_script(demo: Demo) -> None:
    html = demo.html.read_text(encoding="utf-8")
    assert not re.search(r"<link\b|<iframe\b|<img\b|\bsrc\s*=|@import|url\(", html, re.IGNORECASE)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg\b)", html), "the page names a network address"
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)
    assert csp and "default-src 'none'" in csp.group(1)
    scripts = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp.group(1)


def test_battle_data_holds_every_battle_and_each_text_once(demo: Demo) -> None:
    with RunStore(demo.run_dir) as store:
        data = battle_data(demo.results, store)
    n = len(demo.results.battles)
    assert data["n"] == n and all(len(col) == n for col in data["columns"].values())
    strings, cols = data["strings"], data["columns"]
    assert len(strings) == len(set(strings))
    for i, b in enumerate(demo.results.battles):
        t = demo.texts[(b.dataset, b.subset, b.query_id, b.candidate)]
        assert strings[cols["q"][i]] == t["question"]
        assert strings[cols["ac"][i]] == t["cand"] and strings[cols["ao"][i]] == t["opp"]
        assert strings[cols["r1"][i]] == t["r1"] and strings[cols["r2"][i]] == t["r2"]
        assert data["models"][cols["cand"][i]] == b.candidate
    # the baseline's answer to a query is shared by both candidates' battles and stored once
    assert len({cols["ao"][i] for i in range(n)}) == n // 2


def test_report_without_checkpoints_lists_battles_without_texts(demo: Demo) -> None:
    data = page_data(demo.results, None)["battles"]
    assert data["texts"] is False and data["n"] == len(demo.results.battles)
    assert set(data["columns"]["q"]) == {-1} and set(data["columns"]["ac"]) == {-1}


def test_excluded_games_carry_their_reason_and_raw_judge_output(tmp_path: Path) -> None:
    specs = [
        Spec("1", "q one", "cand", "answer one", "base one", ("A>B", None), ("fine", "no label here")),
        Spec("2", "q two", "cand", "answer two", "base two", ("A>>B", "B>>A"), ("good", "great")),
    ]
    results, store = synthetic_run(tmp_path / "run", dataset="ds", subset="sub", baseline="base", judge="j", specs=specs)
    with store:
        data = battle_data(results, store)
    s, c = data["strings"], data["columns"]
    first = [b.query_id for b in results.battles].index("1")
    assert c["s"][first] == -1 and c["o2"][first] == NO_OUTCOME and c["o1"][first] == 1
    assert s[c["x2"][first]] == "unparseable verdict: no verdict label" and c["x1"][first] == -1
    assert "no label here" in s[c["r2"][first]]  # the raw output, since the verdict could not be read
    second = 1 - first
    assert c["s"][second] == 4 and c["x1"][second] == c["x2"][second] == -1


def test_battle_without_judgments_takes_its_texts_from_the_answers(tmp_path: Path) -> None:
    """A candidate's request failed: the battle was never judged, yet the question and the baseline's
    answer are shown, found by model and query."""
    specs = [Spec("1", "q one", "cand", "answer one", "base one", ("A>B", "B>A"), ("r1", "r2"))]
    results, store = synthetic_run(tmp_path / "run", dataset="ds", subset="sub", baseline="base", judge="j", specs=specs)
    with store:
        store.put(GENERATIONS, b"\x01" * 16, {"model": "base", "dataset": "ds", "subset": "sub", "query_id": "2",
                                              "question": "q two", "answer": "base two"})
        games = [*results.games, *(Game("ds", "sub", "2", "cand", "base", a, None, "no answer: cand") for a in (True, False))]
        results = replace(results, games=games, battles=combine(games))
        data = battle_data(results, store)
    s, c = data["strings"], data["columns"]
    i = [b.query_id for b in results.battles].index("2")
    assert s[c["q"][i]] == "q two" and s[c["ao"][i]] == "base two" and c["ac"][i] == -1
    assert s[c["x1"][i]] == s[c["x2"][i]] == "no answer: cand" and c["r1"][i] == c["r2"][i] == -1


def test_all_excluded_run_renders_and_browses(browser: Any, tmp_path: Path) -> None:
    specs = [Spec(str(i), f"q {i}", "cand", f"a {i}", f"b {i}", (None, None), ("junk", "more junk")) for i in range(3)]
    results, store = synthetic_run(tmp_path / "run", dataset="ds", subset="sub", baseline="base", judge="j", specs=specs)
    with store:
        html = write_reports(results, store=store)["html"]
    page, watch = open_report(browser, html)
    assert page.locator("#boards").inner_text().strip() != ""
    assert shown_count(page) == 3
    page.select_option("#f-mode", "ge")
    assert shown_count(page) == 0
    page.select_option("#f-mode", "excluded")
    assert shown_count(page) == 3
    page.locator("#battle-rows tr").first.click()
    assert page.inner_text("#detail-reasoning-1") == "junk"
    assert page.inner_text("#detail-verdict-1") == "no verdict"
    page.close()
    assert watch.errors == [] and watch.dialogs == []


# --------------------------------------------------------------------------------------- in Chromium


def test_leaderboards_show_the_numbers_of_report_json_and_leaderboard_txt(page: Any, demo: Demo) -> None:
    text_boards = parse_leaderboard((demo.run_dir / "report" / "leaderboard.txt").read_text())
    boards = demo.report["leaderboards"]
    assert len(boards) == 4  # overall, the dataset, two subsets
    for board in boards:
        table = page.locator(f'table.leaderboard[data-scope="{board["title"]}"]')
        models = table.locator("tbody tr td:nth-child(2)").all_inner_texts()
        rates = table.locator("tbody td.winrate").all_inner_texts()
        assert [m.split("\n")[0].replace("baseline", "").strip() for m in models] == [e["model"] for e in board["entries"]]
        for e, shown in zip(board["entries"], rates, strict=True):
            want = 50.0 if e["model"] == demo.report["baseline"] else round(100 * e["winrate"], 1)
            assert float(shown) == pytest.approx(want, abs=1e-9)
            assert float(shown) == pytest.approx(text_boards[board["title"]][e["model"]][0], abs=1e-9)
    # the forest plot draws one row per model of the overall board, and the heat map a cell per candidate x scope
    assert page.locator("#forest-plot svg g.row").count() == len(boards[0]["entries"])
    assert page.locator("table.heat td.cell").count() == 2 * 3
    # pairwise results: won / tied / lost battles per pair, as the battles say
    for row in page.locator("#pairs tbody tr").all():
        cand, opp, n, won, tied, lost, excluded, _ = row.locator("td").all_inner_texts()
        mine = [b for b in demo.results.battles if b.candidate == cand and b.opponent == opp]
        assert int(n) == len(mine) == 2 * DEMO_QUERIES and int(excluded) == 0
        assert (int(won), int(tied), int(lost)) == (sum(b.score > 0.5 for b in mine), sum(b.score == 0.5 for b in mine),
                                                    sum(b.score < 0.5 for b in mine))


def test_threshold_and_text_filters_count_the_right_battles(page: Any, demo: Demo) -> None:
    assert shown_count(page) == len(demo.results.battles) == 2 * 2 * DEMO_QUERIES
    page.select_option("#f-candidate", label="sim-strong")
    page.select_option("#f-subset", label="general_qa / arena")
    page.select_option("#f-mode", "ge")
    for thr in (0.75, 1.0, 0.5, 0.0):
        page.fill("#f-threshold", str(thr))
        assert shown_count(page) == _expected(demo, cand="sim-strong", subset="arena", mode="ge", thr=thr), thr
    page.select_option("#f-mode", "le")
    page.fill("#f-threshold", "0.25")
    assert shown_count(page) == _expected(demo, cand="sim-strong", subset="arena", mode="le", thr=0.25)
    page.select_option("#f-mode", "excluded")
    assert shown_count(page) == 0 == _expected(demo, mode="excluded")

    page.select_option("#f-mode", "all")
    page.select_option("#f-candidate", label="all")
    page.select_option("#f-subset", label="all")
    page.fill("#f-text", "PhotoSynthesis")
    want = _expected(demo, text="photosynthesis")
    assert 0 < want < len(demo.results.battles)
    assert shown_count(page) == want
    page.select_option("#f-candidate", label="sim-weak")
    assert shown_count(page) == _expected(demo, cand="sim-weak", text="photosynthesis")
    page.fill("#f-text", "no such text anywhere")
    assert shown_count(page) == 0
    assert page.locator("#battle-rows").inner_text().strip() == "No battle matches these filters."


def test_pages_through_battles(page: Any, demo: Demo) -> None:
    n = len(demo.results.battles)
    page.select_option("#f-page-size", "10")
    wait_ready(page)
    assert page.locator("#battle-rows tr").count() == 10
    page.click("#p-next")
    assert page.locator("#battle-rows tr td").first.inner_text() == "11"
    page.click("#p-last")
    last = page.locator("#battle-rows tr")
    assert last.count() == n - 10 * ((n - 1) // 10)
    assert last.last.locator("td").first.inner_text() == str(n)
    assert page.is_disabled("#p-next") and not page.is_disabled("#p-prev")


def test_opens_a_battle_with_both_answers_and_both_verdicts(page: Any, demo: Demo, tmp_path: Path) -> None:
    page.select_option("#f-candidate", label="sim-weak")
    page.select_option("#f-subset", label="general_qa / example")
    page.fill("#f-text", "capital of France")
    assert shown_count(page) == _expected(demo, cand="sim-weak", subset="example", text="capital of France") > 0
    row = page.locator("#battle-rows tr").first
    qid = row.locator("td").nth(2).inner_text()
    row.click()
    detail = page.locator("#battle-detail")
    assert detail.is_visible()
    t = demo.texts[("general_qa", "example", qid, "sim-weak")]
    assert page.inner_text("#detail-question") == t["question"]
    assert page.inner_text("#detail-answer-candidate") == t["cand"]
    assert page.inner_text("#detail-answer-opponent") == t["opp"]
    assert page.inner_text("#detail-reasoning-1") == t["r1"]
    assert page.inner_text("#detail-reasoning-2") == t["r2"]
    assert page.inner_text("#detail-verdict-1").startswith(f"Judge: {t['v1']} → sim-weak")
    assert page.inner_text("#detail-verdict-2").startswith(f"Judge: {t['v2']} → sim-weak")
    # both answers side by side, both verdicts side by side
    boxes = [page.locator("#detail-answer-candidate"), page.locator("#detail-answer-opponent")]
    y = [b.bounding_box()["y"] for b in boxes]
    x = [b.bounding_box()["x"] for b in boxes]
    assert abs(y[0] - y[1]) < 2 and x[0] < x[1]
    shot = tmp_path / "battle.png"
    detail.scroll_into_view_if_needed()
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000
