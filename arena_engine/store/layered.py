"""A worker's own checkpoints over the run folder's, and their merge into the run folder.

Workers that run parts of one run at once (a distributed run's) cannot share one writer's lock, so
each writes its own store in ``RUN_DIR/shards/<i>-of-<n>/`` (on storage every
node sees) and reads the run folder's own checkpoints (earlier runs, any backend)
through a read-only view: :class:`LayeredStore`. Whoever next opens the run folder for writing (the
driver at the end, or any later run, local or not) folds the worker stores into the main checkpoints
with :func:`merge_worker_stores` and removes them, so a crash at any point loses no finished request
and a resume on either backend reuses everything.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from arena_engine.store.runstore import RunStore

logger = logging.getLogger("arena_engine.store")

WORKERS_DIR = "shards"  # the folder's name on disk: kept, so folders of earlier releases still merge


def worker_dir(run_dir: Path, index: int, count: int) -> Path:
    return Path(run_dir) / WORKERS_DIR / f"{index}-of-{count}"


class LayeredStore:
    """A worker's own store (read and written) over the run folder's checkpoints (read only)."""

    def __init__(self, run_dir: Path, index: int, count: int, *, fsync_interval: float = 1.0) -> None:
        self.run_dir = Path(run_dir)
        self.base = RunStore(self.run_dir, readonly=True)
        self.own = RunStore(worker_dir(self.run_dir, index, count), fsync_interval=fsync_interval)

    def open(self) -> LayeredStore:
        self.base.open()
        try:
            self.own.open()
        except BaseException:
            self.base.close()
            raise
        return self

    def close(self) -> None:
        try:
            self.own.close()
        finally:
            self.base.close()

    def get(self, kind: str, key: bytes) -> dict[str, Any] | None:
        rec = self.own.get(kind, key)
        return rec if rec is not None else self.base.get(kind, key)

    def has(self, kind: str, key: bytes) -> bool:
        return self.own.has(kind, key) or self.base.has(kind, key)

    def put(self, kind: str, key: bytes, record: dict[str, Any]) -> None:
        if not self.base.has(kind, key):
            self.own.put(kind, key, record)


def merge_worker_stores(store: RunStore) -> int:
    """Fold every worker store under the (open, writable) ``store``'s folder into it, then remove them.

    Returns the number of records added. A worker store still locked by a live worker raises CheckpointError
    (naming the folder and the process) before anything is removed.
    """
    root = store.run_dir / WORKERS_DIR
    if not root.is_dir():
        return 0
    added = 0
    merged: list[Path] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        with RunStore(folder) as part:
            for kind in part.kinds():
                for key, rec in part.items(kind):
                    if not store.has(kind, key):
                        store.put(kind, key, rec)
                        added += 1
        merged.append(folder)
    store.sync()  # the records are durable in the run folder before their workers' copies go
    for folder in merged:
        shutil.rmtree(folder)
    shutil.rmtree(root, ignore_errors=True)
    if added:
        logger.info("merged %d record(s) from %d worker folder(s) into %s", added, len(merged), store.run_dir)
    return added
