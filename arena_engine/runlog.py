"""``RUN_DIR/runs.jsonl``: which processes worked on a run folder, and which of them died.

A sending process appends a ``start`` line once its datasets are valid and an ``end`` line when it
closes (finished, failed or interrupted alike). A start with no end is a process that died (SIGKILL,
power loss) with requests in flight: those were sent, perhaps paid, and never stored, and how many is
not known (at most the endpoints' concurrency). The log is metadata, not results: it lives beside the
checkpoints, not among them, and a damaged or torn line is skipped.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

RUN_LOG = "runs.jsonl"


@dataclass
class RunHistory:
    """``processes`` that sent, ``interrupted`` ones among them, and the ``requests`` the closed ones sent."""

    processes: int = 0
    interrupted: int = 0
    requests: int = 0


def append(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one event; a full or read-only disk loses the event, not the run (the caller goes on)."""
    with contextlib.suppress(OSError):
        fd = os.open(run_dir / RUN_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, orjson.dumps(record) + b"\n")
        finally:
            os.close(fd)


def history(run_dir: Path) -> RunHistory:
    started: set[str] = set()
    ended: set[str] = set()
    requests = 0
    try:
        raw = (run_dir / RUN_LOG).read_bytes()
    except OSError:
        return RunHistory()
    for line in raw.splitlines():
        try:
            rec = orjson.loads(line)
            run_id, event = str(rec["run_id"]), rec["event"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        if event == "start":
            started.add(run_id)
        elif event == "end":
            ended.add(run_id)
            sent = rec.get("requests")
            if isinstance(sent, dict):
                requests += sum(n for n in sent.values() if isinstance(n, int))
    return RunHistory(processes=len(started), interrupted=len(started - ended), requests=requests)
