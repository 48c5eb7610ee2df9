"""Reports of a finished run: the report table, ``leaderboard.txt``, ``report.json`` and ``report.html``."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from ..errors import CheckpointError
from ..results import ArenaResults
from ..runfolder import REPORT_DIR
from ..snapshot import file_digest, read_sealed, write_sealed
from ..store import CHECKPOINT_DIR, RunStore
from .html import DATA_SCHEMA, iter_browser, render_html, report_html
from .json_report import report_dict, write_json
from .parts import INLINE_BATTLES, PART_BATTLES, PARTS_DIR
from .tables import leaderboard_text, parse_leaderboard, report_table

__all__ = ["leaderboard_text", "parse_leaderboard", "report_dict", "report_html", "report_table", "write_reports"]


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_reports(results: ArenaResults, store: RunStore | None = None, *, inline: int = INLINE_BATTLES,
                  part_size: int = PART_BATTLES) -> dict[str, Path]:
    """Write every report under ``RUN_DIR/report/`` and return their paths by name.

    The battle browser of ``report.html`` reads questions, answers and judge reasoning from the run's
    checkpoints: pass the open ``store`` of the run (``Arena._store`` while the arena is open), or
    leave it out and the run folder's checkpoints are opened here, which needs the folder unlocked
    (call after the ``async with Arena(...)`` block has closed). A folder without checkpoints gives a
    report whose browser lists battles and verdicts without texts.
    """
    out = results.run_dir / REPORT_DIR
    try:
        return _write_reports(results, store, out, inline, part_size)
    except OSError as exc:  # a full or read-only disk: say so in one line, leave no half-written file
        for tmp in [*out.glob("*.tmp"), *out.glob(f"{PARTS_DIR}/*.tmp")]:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise CheckpointError(f"cannot write the reports in {out}: {exc.strerror or exc}") from exc


def _write_reports(results: ArenaResults, store: RunStore | None, out: Path, inline: int,
                   part_size: int) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "report_table": out / "report_table.txt",
        "leaderboard": out / "leaderboard.txt",
        "json": out / "report.json",
        "html": out / "report.html",
    }
    _write_text(paths["report_table"], report_table(results) + "\n")
    board_text = leaderboard_text(results.boards)
    if results.stopping is not None:  # which candidates stopped early (no line reads as a leaderboard row)
        from .stop_report import stop_lines

        board_text += "\n" + "\n".join(stop_lines(results)) + "\n"
    _write_text(paths["leaderboard"], board_text)
    report = report_dict(results)
    write_json(paths["json"], report)
    key = _browser_key(results, inline, part_size)
    head = _kept_browser(out, key)
    if head is None:
        if store is not None or not (results.run_dir / CHECKPOINT_DIR).is_dir():
            head, digests = _write_browser(out, results, store, inline, part_size)
        else:
            with RunStore(results.run_dir) as own:
                head, digests = _write_browser(out, results, own, inline, part_size)
        if key is not None:
            _keep_browser(out, key, head, digests)
        else:
            with contextlib.suppress(OSError):
                (out / BROWSER_CACHE).unlink()
    _write_text(paths["html"], render_html({"report": report, "battles": head}))
    return paths


# The battle browser (the page's first battles and the part files) depends on the games, the checkpoints'
# texts and the datasets' references, not on the ratings: when the results come with the digest of their
# inputs (a results snapshot vouches for them, arena_engine.snapshot), the browser made from those very
# inputs is kept in BROWSER_CACHE and reused, as long as every part file beside the page is still the one
# written then. Anything else (no digest, other inputs, a damaged cache, an edited or missing part) and
# the browser is made again.
BROWSER_CACHE = ".battle-browser.cache"
_BROWSER_MAGIC = b"arena-engine battle browser 1\n"


def _browser_key(results: ArenaResults, inline: int, part_size: int) -> str | None:
    if results.inputs is None:
        return None
    return f"{results.inputs}:{DATA_SCHEMA}:{inline}:{part_size}"


def _part_files(out: Path) -> set[str]:
    folder = out / PARTS_DIR
    return {f"{PARTS_DIR}/{p.name}" for p in folder.glob("part-*.js")} if folder.is_dir() else set()


def _kept_browser(out: Path, key: str | None) -> dict[str, Any] | None:
    """The page's battle data kept for ``key``, when the part files beside it are still those written."""
    if key is None:
        return None
    body = read_sealed(out / BROWSER_CACHE, _BROWSER_MAGIC)
    if body is None:
        return None
    try:
        kept = orjson.loads(body)
        if kept["key"] != key or set(kept["parts"]) != _part_files(out):
            return None
        for rel, digest in kept["parts"].items():
            if file_digest(out / rel) != digest:
                return None
        head: dict[str, Any] = kept["head"]
        return head
    except (orjson.JSONDecodeError, KeyError, TypeError, OSError):
        return None


def _write_browser(out: Path, results: ArenaResults, store: RunStore | None, inline: int,
                   part_size: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Write the battle parts beside report.html one at a time (a big run's ~70 MB of parts are never
    held at once); the page's battle data and each part's digest."""
    head, parts = iter_browser(results, store, inline=inline, part_size=part_size)
    digests: dict[str, str] = {}

    def written() -> Iterator[tuple[str, str]]:
        for rel, text in parts:
            digests[rel] = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
            yield rel, text

    _write_parts(out, [p["src"] for p in head.get("parts", [])], written())
    return head, digests


def _keep_browser(out: Path, key: str, head: dict[str, Any], digests: dict[str, str]) -> None:
    write_sealed(out / BROWSER_CACHE, _BROWSER_MAGIC, orjson.dumps({"key": key, "head": head, "parts": digests}))


def _write_parts(out: Path, names: list[str], parts: Iterable[tuple[str, str]]) -> None:
    """Replace the battle parts beside report.html with ``parts`` ((relative path, text), the paths
    ``names``), written as they come (stale ones of a bigger run removed first)."""
    folder = out / PARTS_DIR
    for old in folder.glob("part-*.js") if folder.is_dir() else ():
        if f"{PARTS_DIR}/{old.name}" not in names:
            old.unlink()
    if names:
        folder.mkdir(exist_ok=True)
    for rel, text in parts:
        _write_text(out / rel, text)
    if folder.is_dir() and not names:
        with contextlib.suppress(OSError):
            folder.rmdir()
