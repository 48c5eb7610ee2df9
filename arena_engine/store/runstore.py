"""RunStore: the checkpoints of one run folder, opened under an exclusive lock."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from arena_engine.errors import CheckpointError
from arena_engine.store.frame import KEY_SIZE, encode_record, frame
from arena_engine.store.index import Location
from arena_engine.store.kindfile import (
    KIND_PATTERN,
    Fsync,
    KindFile,
    append_line,
    iter_items,
    load_kind_file,
    new_kind_file,
    read_body,
)
from arena_engine.store.lock import release_lock, take_lock
from arena_engine.store.repair import CorruptLine, TornTail
from arena_engine.store.scan import LEN_MASK, rows_for_keys

logger = logging.getLogger("arena_engine.store")

DEFAULT_FSYNC_INTERVAL = 1.0
DEFAULT_FSYNC_EVERY = 1000
CHECKPOINT_DIR = "checkpoints"
MAX_LINE = int(LEN_MASK)


class RunStore:
    """Append-only checkpoints of one run folder, indexed by 16-byte content keys.

    Use from one thread (the event loop's). ``put`` costs a few microseconds: it frames the record,
    writes it to the OS and indexes it; fsync happens on a background thread at most ``fsync_interval``
    seconds after a write, or as soon as ``fsync_every`` records are pending. ``sync()`` fsyncs now.

    ``full_scan=True`` ignores the sidecar indexes and re-reads and checksums every line on open.

    ``readonly=True`` opens the folder under a *shared* lock for reading only (the workers of a
    distributed run read the records of earlier runs this way, side by side): nothing is repaired or
    written, a torn last line is left out, and a missing folder reads as empty. A writer's exclusive
    lock and readers' shared locks exclude each other.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        fsync_interval: float = DEFAULT_FSYNC_INTERVAL,
        fsync_every: int = DEFAULT_FSYNC_EVERY,
        full_scan: bool = False,
        fsync: Fsync = os.fsync,
        readonly: bool = False,
    ) -> None:
        if fsync_interval < 0:
            raise ValueError(f"fsync_interval must be >= 0, got {fsync_interval}")
        if fsync_every < 1:
            raise ValueError(f"fsync_every must be >= 1, got {fsync_every}")
        self.run_dir = Path(run_dir)
        self.fsync_interval = fsync_interval
        self.fsync_every = fsync_every
        self.full_scan = full_scan
        self.readonly = readonly
        self._fsync = fsync
        self._kinds: dict[str, KindFile] = {}
        self._lock_fd: int | None = None
        self._open = False
        # What open() found and repaired.
        self.corrupt = 0
        self.corrupt_lines: list[CorruptLine] = []
        self.torn: list[TornTail] = []
        self.duplicates = 0
        # Durability: _written is bumped only by put (caller's thread), _synced only by _sync_all.
        self._written = 0
        self._synced = 0
        self.fsyncs = 0  # completed fsync rounds
        self._first_pending = 0.0
        self._cond = threading.Condition()
        self._sync_lock = threading.Lock()
        self._stopping = False
        self._syncer: threading.Thread | None = None
        self._sync_error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> RunStore:
        """Lock the folder, repair and index its checkpoint files. Raises CheckpointError if in use."""
        if self._open:
            return self
        if self.readonly:
            return self._open_readonly()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._take_lock()
        except OSError as exc:  # a read-only or full disk, a file where the folder should be
            raise CheckpointError(f"cannot use run folder {self.run_dir}: {exc.strerror or exc}") from exc
        ck = self.run_dir / CHECKPOINT_DIR
        self._load_all(ck, "open")
        self._open = True
        self._stopping = False
        self._syncer = threading.Thread(target=self._sync_loop, name=f"fsync {self.run_dir}", daemon=True)
        self._syncer.start()
        return self

    def _open_readonly(self) -> RunStore:
        ck = self.run_dir / CHECKPOINT_DIR
        if ck.is_dir():  # a folder without checkpoints reads as empty
            try:
                self._take_lock()
            except OSError as exc:
                raise CheckpointError(f"cannot read run folder {self.run_dir}: {exc.strerror or exc}") from exc
            self._load_all(ck, "read")
        self._open = True
        return self

    def _load_all(self, ck: Path, verb: str) -> None:
        """Index every kind's checkpoint file (the lock is held); on failure release everything."""
        try:
            if not ck.is_dir():
                ck.mkdir()
                self._fsync_dir(self.run_dir)
            for path in sorted(ck.glob("*.jsonl")):
                if KIND_PATTERN.fullmatch(path.stem):
                    self._kinds[path.stem] = self._load(path)
        except BaseException as exc:
            self._close_files()
            self._release_lock()
            if isinstance(exc, OSError):
                raise CheckpointError(f"cannot {verb} the checkpoints of {self.run_dir}: {exc.strerror or exc}") from exc
            raise

    def close(self) -> None:
        """fsync everything, update the sidecar indexes, release the lock. Idempotent."""
        if not self._open:
            return
        self._open = False
        if self.readonly:
            self._close_files()
            self._release_lock()
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._syncer is not None:
            self._syncer.join()
            self._syncer = None
        try:
            self._sync_all()
        finally:
            self._close_files()
            self._release_lock()
        self._raise_sync_error()

    def __enter__(self) -> RunStore:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={len(k.index)}" for name, k in sorted(self._kinds.items()))
        return (
            f"<RunStore {str(self.run_dir)!r} {'open' if self._open else 'closed'} {counts or 'empty'} "
            f"pending_fsync={self.pending_fsync} corrupt={self.corrupt}>"
        )

    # ------------------------------------------------------------------ reads

    def has(self, kind: str, key: bytes) -> bool:
        """Is a readable record stored under ``key``?"""
        k = self._kind(kind)
        return k is not None and k.index.find(key) is not None

    def get(self, kind: str, key: bytes) -> dict[str, Any] | None:
        """The record stored under ``key``, read from disk; None if absent or found unreadable."""
        k = self._kind(kind)
        if k is None:
            return None
        loc = k.index.find(key)
        if loc is None:
            return None
        body = read_body(k, loc)
        if body is None:
            self._unreadable_now(k, key, loc[2])
            return None
        rec: dict[str, Any] = orjson.loads(body)
        return rec

    def items(self, kind: str) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """(key, record) for every readable record of ``kind`` stored at the call, in file order."""
        k = self._kind(kind)
        if k is None:
            return iter(())
        return iter_items(k, *k.index.locations(), self._unreadable_now)

    def records(self, kind: str) -> Iterator[dict[str, Any]]:
        """Every readable record of ``kind`` stored at the call, in file order, one per key."""
        return (rec for _, rec in self.items(kind))

    def count(self, kind: str) -> int:
        k = self._kind(kind)
        return 0 if k is None else len(k.index)

    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def unreadable(self, kind: str) -> list[bytes]:
        """Keys whose only stored line is damaged: finished once, but their result cannot be read."""
        k = self._kind(kind)
        if k is None:
            return []
        return [key for key in k.unreadable if k.index.find(key) is None]

    @property
    def pending_fsync(self) -> int:
        """Records written to the OS but not yet fsynced."""
        return self._written - self._synced

    # ------------------------------------------------------------------ writes

    def put(self, kind: str, key: bytes, record: dict[str, Any]) -> None:
        """Append ``record`` under ``key``, written to the OS before returning. No-op if ``key`` is stored."""
        if self.readonly:
            raise CheckpointError(f"run store {self.run_dir} is open read-only")
        k = self._kinds.get(kind) if self._open else None
        if k is None:
            k = self._new_kind(kind)
        if len(key) != KEY_SIZE:
            raise ValueError(f"checkpoint keys are {KEY_SIZE}-byte content_key digests, got {len(key)} bytes")
        if k.index.find(key) is not None:
            return
        if self._sync_error is not None:
            self._raise_sync_error()  # stays raised: what was written may not be on disk
        line = frame(key, encode_record(record))
        if len(line) > MAX_LINE:
            raise CheckpointError(f"record for key {key.hex()} is {len(line)} bytes; the limit is 1 GiB")
        append_line(k, line)
        off = k.end
        k.end += len(line)
        k.lines += 1
        loc = (off, len(line), k.lines)
        k.index.add(key, loc)
        k.pending.append((key, loc))
        self._written += 1
        pending = self._written - self._synced
        if pending == 1 or pending == self.fsync_every:
            with self._cond:
                if pending == 1:
                    self._first_pending = time.monotonic()
                self._cond.notify()

    def sync(self) -> None:
        """fsync every checkpoint file now (blocking)."""
        if not self._open:
            raise CheckpointError(f"run store {self.run_dir} is not open")
        self._sync_all()
        self._raise_sync_error()

    # ------------------------------------------------------------------ internals: files

    def _kind(self, kind: str) -> KindFile | None:
        if not self._open:
            raise CheckpointError(f"run store {self.run_dir} is not open; call open() or use `with`")
        return self._kinds.get(kind)

    def _new_kind(self, kind: str) -> KindFile:
        if not self._open:
            raise CheckpointError(f"run store {self.run_dir} is not open; call open() or use `with`")
        if not KIND_PATTERN.fullmatch(kind):
            raise ValueError(f"checkpoint kind must match [a-z_][a-z0-9_]*, got {kind!r}")
        path = self.run_dir / CHECKPOINT_DIR / f"{kind}.jsonl"
        k = new_kind_file(path)
        self._fsync_dir(path.parent)
        self._kinds[kind] = k
        return k

    def _unreadable_now(self, k: KindFile, key: bytes, line: int) -> None:
        k.index.kill(key)
        # The sidecar still calls that line a record; empty it so the next open scans the file, which
        # tells the damaged line from the copy that will be stored again.
        with self._sync_lock:
            if not k.side_stale:
                k.side_stale = True
                if k.side is not None:
                    k.side.keep(0)
        c = CorruptLine(k.path, line, "record damaged since it was indexed (bad frame or checksum)", key)
        k.unreadable[key] = c
        self.corrupt += 1
        self.corrupt_lines.append(c)
        logger.warning("%s", c)

    # ------------------------------------------------------------------ internals: fsync

    def _sync_loop(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._stopping and self._written == self._synced:
                    cond.wait()
                deadline = self._first_pending + self.fsync_interval
                while (
                    not self._stopping
                    and self._written - self._synced < self.fsync_every
                    and (left := deadline - time.monotonic()) > 0
                ):
                    cond.wait(left)
                if self._stopping:
                    return
            self._sync_all()

    def _sync_all(self) -> None:
        """fsync the checkpoint files, then record the now-durable lines in the sidecars."""
        with self._sync_lock:
            written = self._written
            try:
                for k in list(self._kinds.values()):
                    done: list[tuple[bytes, Location]] = []
                    with contextlib.suppress(IndexError):
                        while True:
                            done.append(k.pending.popleft())
                    self._fsync(k.fd)
                    if done and not k.side_stale and k.side is not None:
                        k.side.append(rows_for_keys([key for key, _ in done], [loc for _, loc in done]))
                        self._fsync(k.side.fd)
            except OSError as exc:
                self._sync_error = exc
                return
            self.fsyncs += 1
            if written > self._synced:
                self._synced = written
                if self._written > written:
                    self._first_pending = time.monotonic()

    def _raise_sync_error(self) -> None:
        exc = self._sync_error
        if exc is not None:
            raise CheckpointError(
                f"fsync of checkpoints in {self.run_dir} failed: {exc}; records written since the last "
                "good fsync may not be on disk. Stop, fix the disk, and resume from this folder"
            ) from exc

    def _fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    def _load(self, path: Path) -> KindFile:
        k, found = load_kind_file(path, readonly=self.readonly, full_scan=self.full_scan, fsync=self._fsync)
        if found.torn is not None:
            self.torn.append(found.torn)
        self.duplicates += found.repeated
        self.corrupt += len(found.corrupt_lines)
        self.corrupt_lines.extend(found.corrupt_lines)
        return k

    def _take_lock(self) -> None:
        self._lock_fd = take_lock(self.run_dir, readonly=self.readonly)

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            release_lock(fd, readonly=self.readonly)

    def _close_files(self) -> None:
        kinds, self._kinds = self._kinds, {}
        for k in kinds.values():
            if k.side is not None:
                with contextlib.suppress(OSError):
                    k.side.close()
            with contextlib.suppress(OSError):
                os.close(k.fd)
