"""Reports of a finished run: the report table, ``leaderboard.txt``, ``report.json`` (and HTML)."""

from __future__ import annotations

import os
from pathlib import Path

from ..pipeline import ArenaResults
from ..runfolder import REPORT_DIR
from .json_report import report_dict, write_json
from .tables import leaderboard_text, parse_leaderboard, report_table

__all__ = ["leaderboard_text", "parse_leaderboard", "report_dict", "report_table", "write_reports"]


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_reports(results: ArenaResults) -> dict[str, Path]:
    """Write every report under ``RUN_DIR/report/`` and return their paths by name."""
    out = results.run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "report_table": out / "report_table.txt",
        "leaderboard": out / "leaderboard.txt",
        "json": out / "report.json",
    }
    _write_text(paths["report_table"], report_table(results) + "\n")
    _write_text(paths["leaderboard"], leaderboard_text(results.boards))
    write_json(paths["json"], report_dict(results))
    return paths
