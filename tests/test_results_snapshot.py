"""The results snapshot (arena_engine.snapshot) stands in for the walk only when nothing the walk reads
changed: after a checkpoint is edited, the snapshot damaged, the config or a dataset changed, the
results are those of a fresh walk; when nothing changed, no walk happens and the results are the same."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import pytest
from arena_helpers import dataset
from test_results_from_store import _config, _facts, _run, _sim

from arena_engine import from_store, snapshot
from arena_engine.config import RunConfig
from arena_engine.from_store import results_of_folder
from arena_engine.pipeline import ArenaResults
from arena_engine.snapshot import SNAPSHOT_FILE
from tests.waiting import wait_until


def _walked(cfg: RunConfig, monkeypatch: pytest.MonkeyPatch) -> ArenaResults:
    """The results of a fresh walk (no snapshot read or written)."""
    with monkeypatch.context() as m:
        m.setattr(snapshot, "load", lambda *a, **k: None)
        m.setattr(snapshot, "save", lambda *a, **k: False)
        return results_of_folder(cfg)


def _no_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Any) -> None:
        raise AssertionError("walked although the snapshot was valid")
    monkeypatch.setattr(from_store._Walk, "run", refuse)


def _facts_all(r: ArenaResults) -> dict[str, Any]:
    return {**_facts(r), "missing": r.missing, "failures": r.failures}


@pytest.fixture
def finished(tmp_path: Path) -> tuple[ArenaResults, RunConfig]:
    data = dataset(tmp_path, 16)
    own, cfg, _ = _run(_sim(("judge",)), lambda url: _config(url, tmp_path / "run", data))
    assert (cfg.output_dir / SNAPSHOT_FILE).is_file()  # the run left one
    return own, cfg


def test_the_runs_snapshot_gives_its_results_without_a_walk(finished: tuple[ArenaResults, RunConfig],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    own, cfg = finished
    walk = _walked(cfg, monkeypatch)
    # the rating is not part of the fingerprint: other rounds still read the snapshot
    other = dataclasses.replace(cfg, rating=dataclasses.replace(cfg.rating, rounds=20))
    other_walk = _walked(other, monkeypatch)
    with monkeypatch.context() as m:
        _no_walk(m)  # type: ignore[arg-type]
        got = results_of_folder(cfg)
        assert _facts_all(got) == _facts_all(walk)
        assert _facts(got) == _facts(own)
        assert _facts_all(results_of_folder(other)) == _facts_all(other_walk)


@pytest.mark.parametrize("racy", [True, False])
def test_an_edited_checkpoint_is_walked_again(finished: tuple[ArenaResults, RunConfig], racy: bool,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _, cfg = finished
    if not racy:  # the snapshot holds no digest: the file's stat alone must show the edit
        monkeypatch.setattr(snapshot, "RACY_NS", 0)
        (cfg.output_dir / SNAPSHOT_FILE).unlink()
        results_of_folder(cfg)
        assert not snapshot_digests(cfg)
    path = cfg.output_dir / "checkpoints" / "judgments.jsonl"
    if not racy:  # the edit below must get a ctime of its own: wait for the file system's clock to move on
        probe = cfg.output_dir.parent / "fs-clock-probe"

        def clock_moved_on() -> bool:
            probe.write_bytes(b"")
            return probe.stat().st_ctime_ns > path.stat().st_ctime_ns

        wait_until(clock_moved_on, 5, "the file system's clock to pass the checkpoint's ctime", interval=0.001)
        probe.unlink()
    raw = bytearray(path.read_bytes())
    for a, b in ((b'"A>B"', b'"B>A"'), (b'"B>A"', b'"A>B"'), (b'"A=B"', b'"A>B"')):
        at = raw.find(a)
        if at >= 0:
            raw[at:at + len(a)] = b  # same size, same line: its checksum no longer matches
            break
    else:
        pytest.fail("no verdict label to edit")
    st = os.stat(path)
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with its mtime put back
    got = results_of_folder(cfg)
    walk = _walked(cfg, monkeypatch)
    assert _facts_all(got) == _facts_all(walk)
    assert got.missing == 1  # the damaged verdict reads as never judged


def snapshot_digests(cfg: RunConfig) -> dict[str, str]:
    import orjson

    raw = (cfg.output_dir / SNAPSHOT_FILE).read_bytes()
    digests: dict[str, str] = orjson.loads(raw[len(snapshot.MAGIC) + 33:])["fingerprint"]["digests"]
    return digests


def test_a_new_record_is_walked_again(finished: tuple[ArenaResults, RunConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    _, cfg = finished
    path = cfg.output_dir / "checkpoints" / "judgments.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))  # the last verdict lost (as if never stored)
    (cfg.output_dir / "checkpoints" / "judgments.idx").unlink()
    got = results_of_folder(cfg)
    assert got.missing == 1
    assert _facts_all(got) == _facts_all(_walked(cfg, monkeypatch))


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_a_damaged_snapshot_is_ignored(finished: tuple[ArenaResults, RunConfig], damage: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _, cfg = finished
    walk = _walked(cfg, monkeypatch)
    path = cfg.output_dir / SNAPSHOT_FILE
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        i = raw.find(b'"outcome":[') + 11
        raw[i] = ord("1") if raw[i] != ord("1") else ord("2")
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "garbage":
        raw = bytearray(b"not a snapshot\n" * 20)
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    assert _facts_all(results_of_folder(cfg)) == _facts_all(walk)
    # ... and the walk wrote a good one again
    with monkeypatch.context() as m:
        _no_walk(m)  # type: ignore[arg-type]
        assert _facts_all(results_of_folder(cfg)) == _facts_all(walk)


def test_a_changed_config_or_dataset_is_walked_again(finished: tuple[ArenaResults, RunConfig],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _, cfg = finished
    strong = dataclasses.replace(cfg, baseline="strong")
    got = results_of_folder(strong)
    assert _facts_all(got) == _facts_all(_walked(strong, monkeypatch))
    assert got.missing > 0  # battles against another baseline were never judged
    judge = dataclasses.replace(cfg.judge, template="Q: {question}\nA: {answer_a}\nB: {answer_b}")
    other = dataclasses.replace(cfg, judge=judge)
    got = results_of_folder(other)
    assert got.missing > 0 and _facts_all(got) == _facts_all(_walked(other, monkeypatch))
    # the first config's snapshot was replaced by the others': its own walk gives the run's results again
    assert _facts_all(results_of_folder(cfg)) == _facts_all(_walked(cfg, monkeypatch))
    data = Path(cfg.datasets[0].path)
    file = data if data.is_file() else sorted(data.glob("*.jsonl"))[0]
    with file.open("a") as fh:
        fh.write('{"id": "extra", "query": "one more question?"}\n')
    got = results_of_folder(cfg)
    assert got.missing > 0 and _facts_all(got) == _facts_all(_walked(cfg, monkeypatch))


def _report_files(run_dir: Path) -> dict[str, bytes]:
    """The report's files, the time the results took aside."""
    out = run_dir / "report"
    return {str(p.relative_to(out)): re.sub(rb'"elapsed_seconds": ?[0-9.e+-]+', b"", p.read_bytes())
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != ".battle-browser.cache"}


def test_report_reuses_the_battle_browser_made_from_the_same_inputs(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from arena_engine.report import html, write_reports

    data = dataset(tmp_path, 12)
    _, cfg, _ = _run(_sim(("judge",)), lambda url: _config(url, tmp_path / "run", data))
    small = {"inline": 5, "part_size": 7}  # parts beside the page, as a big run has
    write_reports(results_of_folder(cfg), **small)  # type: ignore[arg-type]
    first = _report_files(cfg.output_dir)
    assert any(k.startswith("report_battles/") for k in first)
    with monkeypatch.context() as m:
        m.setattr(html, "battle_data", lambda *a, **k: pytest.fail("made the browser again"))
        write_reports(results_of_folder(cfg), **small)  # type: ignore[arg-type]
    assert _report_files(cfg.output_dir) == first
    out = cfg.output_dir / "report"
    part = sorted((out / "report_battles").glob("part-*.js"))[0]
    part.write_text("tampered")  # an edited part: made again
    write_reports(results_of_folder(cfg), **small)  # type: ignore[arg-type]
    assert _report_files(cfg.output_dir) == first
    cache = out / ".battle-browser.cache"
    cache.write_bytes(cache.read_bytes()[:-3])  # a damaged cache: made again
    write_reports(results_of_folder(cfg), **small)  # type: ignore[arg-type]
    assert _report_files(cfg.output_dir) == first
    # results with no digest of their inputs never use the cache
    results = _walked(cfg, monkeypatch)
    assert results.inputs is None  # no snapshot saved or read
    with monkeypatch.context() as m:
        made: list[int] = []
        real = html.battle_data
        m.setattr(html, "battle_data", lambda *a, **k: made.append(1) or real(*a, **k))
        write_reports(results, **small)  # type: ignore[arg-type]
        assert made
    assert _report_files(cfg.output_dir) == first
