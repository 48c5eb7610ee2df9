"""``arena-engine batches RUN_DIR [--cancel]``: a run folder's batches with their status at the provider."""

from __future__ import annotations

import sys
from pathlib import Path

import aiohttp

from ..errors import ArenaError
from .ledger import FOLDER, LEDGER, Ledger
from .protocols import batch_api
from .session import batch_roles


async def show_batches(run_dir: Path, cancel: bool = False) -> int:
    """Print one line per chunk (its endpoint, requests, batch id and status); with ``cancel``, cancel
    every batch that is still running. Exit status 0."""
    from ..runfolder import load_run_config

    if not (run_dir / FOLDER / LEDGER).exists():
        print(f"{run_dir}: no batches (no endpoint of this run folder ran in batch mode)")
        return 0
    config = load_run_config(run_dir)
    roles = batch_roles(config)
    ledger = Ledger(run_dir)
    rows: list[tuple[str, str, str, str, str]] = []
    cancelled = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        for c in ledger.chunks.values():
            ep = roles.get(c.role)
            who = ep.name if ep is not None else c.role.replace("\0judge", "judge")
            status = c.status or ("created" if c.batch_id else "uploaded" if c.file_id else "not uploaded")
            if c.batch_id is not None and not c.done and ep is not None:
                api = batch_api(http, ep)
                try:
                    status = api.status_of(await api.get(c.batch_id))
                    if cancel and status not in api.TERMINAL and status not in ("cancelling", "canceling"):
                        status = api.status_of(await api.cancel(c.batch_id))
                        cancelled += 1
                except ArenaError as exc:
                    status = f"unknown ({exc})"
            if c.done:
                status += ", results stored" if not c.error else f", failed: {c.error}"
            rows.append((c.name, who, str(c.requests), c.batch_id or "-", status))
    header = ("chunk", "endpoint", "requests", "batch", "status")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    if cancel:
        print(f"cancelled {cancelled} batch(es); a rerun queues their unanswered requests again", file=sys.stderr)
    return 0
