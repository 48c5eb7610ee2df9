"""Append-only JSONL checkpoints: one file per kind, indexed by 16-byte content keys.

A run folder looks like::

    run_dir/.lock                       flock'ed by the one process writing the folder (holds its pid)
    run_dir/checkpoints/<kind>.jsonl    one record per line

Each line is ``{"k":"<32 hex key>","c":"<8 hex crc32>","r":<record>}`` followed by ``\\n``. The key and
the checksum sit at fixed offsets, so opening a folder indexes it without parsing the records: the scan
checks each line's frame and crc32 and keeps only 16-byte digests and file offsets in numpy arrays.

Durability: ``put`` writes the whole line to the OS with one ``write`` before it returns, so a killed
process loses nothing it was told was stored. ``fsync`` runs on a background thread, at most
``fsync_interval`` seconds after a write or once ``fsync_every`` records are pending, so a power loss
loses at most that much.

Damage found on open:

- a torn last line (no newline: a write cut short by a crash) is truncated, with a logged warning; it
  never held an acknowledged record. If it is a complete record that only lacks its newline, the newline
  is added instead.
- a corrupt line elsewhere (bad frame or checksum) is logged with ``file:line`` and skipped. If a valid
  record is embedded after garbage in the line (two writers' lines glued together), that record is kept.
  If the line's key can still be read, the warning names the key and says its request will be sent
  again: the result is unreadable, so we neither pretend it exists nor forget it silently. Such keys are
  listed by :meth:`RunStore.unreadable` and in :attr:`RunStore.corrupt_lines`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from arena_engine.errors import CheckpointError

__all__ = ["CorruptLine", "RunStore", "TornTail", "content_key"]

logger = logging.getLogger(__name__)

KEY_SIZE = 16
DEFAULT_FSYNC_INTERVAL = 1.0
DEFAULT_FSYNC_EVERY = 1000
CHECKPOINT_DIR = "checkpoints"
LOCK_NAME = ".lock"

_KIND_RE = re.compile(r"[a-z_][a-z0-9_]*")

# Line frame: {"k":"<32 hex>","c":"<8 hex>","r":<record>}\n
_P0 = b'{"k":"'
_P1 = b'","c":"'
_P2 = b'","r":'
_KEY_AT = len(_P0)  # 6
_CRC_AT = _KEY_AT + 2 * KEY_SIZE + len(_P1)  # 45
_BODY_AT = _CRC_AT + 8 + len(_P2)  # 59
_MIN_LINE = _BODY_AT + len(b"{}") + len(b"}\n")  # 63
_LINE_FMT = b'{"k":"%s","c":"%08x","r":%s}\n'

# Overlay of keys put since the last merge; merged into the numpy index when it gets this big.
_MERGE_AT = 65536
_READ_CHUNK = 16 << 20

Fsync = Callable[[int], None]


def content_key(obj: object) -> bytes:
    """16-byte blake2b digest of the canonical (sorted-key) orjson encoding of ``obj``.

    Stable across runs, processes and machines for the same JSON-able value. Strings holding lone
    surrogates (which orjson cannot encode) fall back to an ASCII-escaped stdlib encoding, so they
    still get a distinct, stable key.
    """
    try:
        data = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        import json

        data = json.dumps(obj, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode()
    return hashlib.blake2b(data, digest_size=KEY_SIZE).digest()


@dataclass(frozen=True, slots=True)
class CorruptLine:
    """A line that could not be read as a record; ``key`` is set when its key could still be read."""

    path: Path
    line: int
    reason: str
    key: bytes | None = None
    superseded: bool = False  # a valid record with the same key exists elsewhere in the file

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}"
        if self.key is None:
            return f"{where}: {self.reason}; its key is unreadable, so that request will be sent again"
        if self.superseded:
            return f"{where}: {self.reason} (key {self.key.hex()}); a valid copy exists, nothing is lost"
        return (
            f"{where}: {self.reason} (key {self.key.hex()}); the stored result is unreadable, "
            "so that request will be sent again"
        )


@dataclass(frozen=True, slots=True)
class TornTail:
    """The unterminated end of a file left by an interrupted write, repaired on open."""

    path: Path
    line: int
    size: int
    completed: bool  # True: it was a whole record missing only its newline, which was added

    def __str__(self) -> str:
        if self.completed:
            return (
                f"{self.path}:{self.line}: last record lacked its newline (interrupted write); completed it"
            )
        return (
            f"{self.path}:{self.line}: torn last line ({self.size} bytes, no newline) from an interrupted "
            "write; truncated it (it was never acknowledged)"
        )


def _encode_record(record: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError as exc:
        if "surrogates" not in str(exc):
            raise TypeError(f"checkpoint record is not JSON-able: {exc}") from exc
        return orjson.dumps(_scrub_surrogates(record))


def _scrub_surrogates(obj: Any) -> Any:
    """Replace lone surrogates (invalid in UTF-8) by U+FFFD; they only come from broken text."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(obj, dict):
        return {_scrub_surrogates(k): _scrub_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_scrub_surrogates(v) for v in obj]
    return obj


def _frame(key: bytes, body: bytes) -> bytes:
    return _LINE_FMT % (key.hex().encode("ascii"), zlib.crc32(body), body)


_HEX_LUT = np.full(256, 255, dtype=np.uint8)
_HEX_LUT[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX_LUT[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_FRAME_POS = np.concatenate(
    [
        np.arange(0, _KEY_AT),
        np.arange(_KEY_AT + 2 * KEY_SIZE, _CRC_AT),
        np.arange(_CRC_AT + 8, _BODY_AT + 1),
    ]
)
_FRAME_VAL = np.frombuffer(_P0 + _P1 + _P2 + b"{", np.uint8)
_KEY_POS = np.arange(_KEY_AT, _KEY_AT + 2 * KEY_SIZE)
_CRC_POS = np.arange(_CRC_AT, _CRC_AT + 8)
_CRC_WEIGHTS = (16 ** np.arange(7, -1, -1)).astype(np.uint64)


def _parse_line(line: bytes) -> tuple[bytes, bytes] | None:
    """(key, body) of one framed line (with or without its newline), or None if it is not valid."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if len(line) < _MIN_LINE - 1 or not line.startswith(_P0) or not line.endswith(b"}"):
        return None
    if line[_KEY_AT + 2 * KEY_SIZE : _CRC_AT] != _P1 or line[_CRC_AT + 8 : _BODY_AT] != _P2:
        return None
    try:
        key = bytes.fromhex(line[_KEY_AT : _KEY_AT + 2 * KEY_SIZE].decode("ascii"))
        crc = int(line[_CRC_AT : _CRC_AT + 8], 16)
    except ValueError:
        return None
    body = line[_BODY_AT:-1]
    if zlib.crc32(body) != crc or not body.startswith(b"{"):
        return None
    return key, body


def _salvage_key(line: bytes) -> bytes | None:
    """The key of a damaged line whose frame start is intact."""
    if not line.startswith(_P0) or line[_KEY_AT + 2 * KEY_SIZE : _CRC_AT] != _P1:
        return None
    raw = line[_KEY_AT : _KEY_AT + 2 * KEY_SIZE]
    if not re.fullmatch(rb"[0-9a-f]{32}", raw):
        return None
    return bytes.fromhex(raw.decode("ascii"))


def _split_key(key: bytes) -> tuple[int, int]:
    return int.from_bytes(key[:8], "big"), int.from_bytes(key[8:], "big")


class _KindIndex:
    """Keys of one kind: a numpy index of merged entries plus a dict of recent puts.

    Merged entries live in file order (``f_off``, ``f_len``) and in key order (``s_hi``, ``s_lo``: the
    two big-endian halves of the key; ``s_pos``: the entry's position in file order).
    """

    __slots__ = ("f_len", "f_off", "overlay", "s_hi", "s_lo", "s_pos")

    def __init__(self) -> None:
        self.f_off: npt.NDArray[np.int64] = np.empty(0, np.int64)
        self.f_len: npt.NDArray[np.uint32] = np.empty(0, np.uint32)
        self.s_hi: npt.NDArray[np.uint64] = np.empty(0, np.uint64)
        self.s_lo: npt.NDArray[np.uint64] = np.empty(0, np.uint64)
        self.s_pos: npt.NDArray[np.int64] = np.empty(0, np.int64)
        self.overlay: dict[bytes, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.f_off) + len(self.overlay)

    def find(self, key: bytes) -> tuple[int, int] | None:
        hit = self.overlay.get(key)
        if hit is not None:
            return hit
        n = len(self.s_hi)
        if n == 0:
            return None
        hi, lo = _split_key(key)
        i = int(self.s_hi.searchsorted(np.uint64(hi)))
        while i < n and int(self.s_hi[i]) == hi:
            if int(self.s_lo[i]) == lo:
                p = int(self.s_pos[i])
                return int(self.f_off[p]), int(self.f_len[p])
            i += 1
        return None

    def build(
        self,
        hi: npt.NDArray[np.uint64],
        lo: npt.NDArray[np.uint64],
        off: npt.NDArray[np.int64],
        ln: npt.NDArray[np.uint32],
    ) -> npt.NDArray[np.bool_]:
        """Index entries given in file order; the first of equal keys wins. Returns the duplicate mask."""
        n = len(off)
        order = np.lexsort((np.arange(n), lo, hi))
        shi, slo = hi[order], lo[order]
        dup_sorted = np.zeros(n, dtype=bool)
        if n > 1:
            dup_sorted[1:] = (shi[1:] == shi[:-1]) & (slo[1:] == slo[:-1])
        keep = order[~dup_sorted]
        file_pos = np.sort(keep)
        self.f_off = off[file_pos]
        self.f_len = ln[file_pos]
        self.s_hi = hi[keep]
        self.s_lo = lo[keep]
        self.s_pos = np.searchsorted(file_pos, keep).astype(np.int64)
        self.overlay = {}
        dup = np.zeros(n, dtype=bool)
        dup[order[dup_sorted]] = True
        return dup

    def merge_overlay(self) -> None:
        if not self.overlay:
            return
        keys = np.frombuffer(b"".join(self.overlay), dtype=">u8").reshape(-1, 2).astype(np.uint64)
        locs = np.array(list(self.overlay.values()), dtype=np.int64).reshape(-1, 2)
        base = len(self.f_off)
        self.f_off = np.concatenate([self.f_off, locs[:, 0]])
        self.f_len = np.concatenate([self.f_len, locs[:, 1].astype(np.uint32)])
        new_hi, new_lo = keys[:, 0], keys[:, 1]
        new_pos = np.arange(base, base + len(locs), dtype=np.int64)
        order = np.argsort(new_hi, kind="stable")
        new_hi, new_lo, new_pos = new_hi[order], new_lo[order], new_pos[order]
        at = self.s_hi.searchsorted(new_hi)
        self.s_hi = np.insert(self.s_hi, at, new_hi)
        self.s_lo = np.insert(self.s_lo, at, new_lo)
        self.s_pos = np.insert(self.s_pos, at, new_pos)
        self.overlay = {}


@dataclass(slots=True)
class _KindFile:
    path: Path
    fd: int
    end: int  # bytes of valid data; all our writes go here (the file is O_APPEND and we hold the lock)
    index: _KindIndex
    unreadable: dict[bytes, CorruptLine]


class RunStore:
    """Checkpoints of one run folder. Use from one thread (the event loop's); ``put`` is cheap.

    ::

        with RunStore(run_dir) as store:
            key = content_key(request)
            if not store.has("generations", key):
                store.put("generations", key, {"answer": ...})
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        fsync_interval: float = DEFAULT_FSYNC_INTERVAL,
        fsync_every: int = DEFAULT_FSYNC_EVERY,
        verify: bool = True,
        fsync: Fsync = os.fsync,
    ) -> None:
        if fsync_interval < 0:
            raise ValueError(f"fsync_interval must be >= 0, got {fsync_interval}")
        if fsync_every < 1:
            raise ValueError(f"fsync_every must be >= 1, got {fsync_every}")
        self.run_dir = Path(run_dir)
        self.fsync_interval = fsync_interval
        self.fsync_every = fsync_every
        self.verify = verify
        self._fsync = fsync
        self._files: dict[str, _KindFile] = {}
        self._lock_fd: int | None = None
        self._open = False
        # Open-time findings.
        self.corrupt = 0
        self.corrupt_lines: list[CorruptLine] = []
        self.torn: list[TornTail] = []
        self.duplicates = 0
        # Durability bookkeeping: _written is bumped only by put (caller's thread), _synced only by the
        # syncer thread; their difference is the number of records not yet fsynced.
        self._written = 0
        self._synced = 0
        self.fsyncs = 0
        self._first_pending = 0.0
        self._cond = threading.Condition()
        self._stopping = False
        self._syncer: threading.Thread | None = None
        self._sync_error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> RunStore:
        if self._open:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            ck = self.run_dir / CHECKPOINT_DIR
            ck.mkdir(exist_ok=True)
            for path in sorted(ck.glob("*.jsonl")):
                kind = path.stem
                if _KIND_RE.fullmatch(kind):
                    self._files[kind] = self._load(kind, path)
        except BaseException:
            self._close_files()
            self._release_lock()
            raise
        self._open = True
        self._stopping = False
        self._syncer = threading.Thread(target=self._sync_loop, name=f"fsync {self.run_dir}", daemon=True)
        self._syncer.start()
        return self

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
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
        counts = ", ".join(f"{k}={len(f.index)}" for k, f in sorted(self._files.items()))
        state = "open" if self._open else "closed"
        return (
            f"<RunStore {str(self.run_dir)!r} {state} {counts or 'empty'} pending_fsync="
            f"{self._written - self._synced} corrupt={self.corrupt}>"
        )

    # ------------------------------------------------------------------ queries

    def has(self, kind: str, key: bytes) -> bool:
        f = self._files.get(kind)
        return f is not None and f.index.find(key) is not None

    def get(self, kind: str, key: bytes) -> dict[str, Any] | None:
        f = self._files.get(kind)
        if f is None:
            return None
        loc = f.index.find(key)
        if loc is None:
            return None
        off, ln = loc
        data = os.pread(f.fd, ln, off)
        if len(data) != ln:
            raise CheckpointError(f"{f.path}: record at byte {off} is cut short; the file changed under us")
        rec: dict[str, Any] = orjson.loads(data[_BODY_AT:-2])
        return rec

    def records(self, kind: str) -> Iterator[dict[str, Any]]:
        """Every valid record of ``kind`` stored when the call is made, in file order, one per key."""
        f = self._files.get(kind)
        if f is None:
            return iter(())
        offs = f.index.f_off
        lens = f.index.f_len
        recent = list(f.index.overlay.values())
        return self._iter_records(f.path, offs, lens, recent)

    @staticmethod
    def _iter_records(
        path: Path,
        offs: npt.NDArray[np.int64],
        lens: npt.NDArray[np.uint32],
        recent: list[tuple[int, int]],
    ) -> Iterator[dict[str, Any]]:
        with open(path, "rb", buffering=1 << 20) as fh:
            pos = 0
            step = 65536
            for i in range(0, len(offs), step):
                for off, ln in zip(offs[i : i + step].tolist(), lens[i : i + step].tolist(), strict=True):
                    if off != pos:
                        fh.seek(off)
                    data = fh.read(ln)
                    pos = off + ln
                    yield orjson.loads(data[_BODY_AT:-2])
            for off, ln in recent:
                if off != pos:
                    fh.seek(off)
                data = fh.read(ln)
                pos = off + ln
                yield orjson.loads(data[_BODY_AT:-2])

    def count(self, kind: str) -> int:
        f = self._files.get(kind)
        return 0 if f is None else len(f.index)

    def kinds(self) -> list[str]:
        return sorted(self._files)

    def unreadable(self, kind: str) -> list[bytes]:
        """Keys whose only stored line is corrupt: finished once, but their result cannot be read."""
        f = self._files.get(kind)
        if f is None:
            return []
        return [k for k in f.unreadable if f.index.find(k) is None]

    @property
    def pending_fsync(self) -> int:
        """Records written to the OS but not yet fsynced."""
        return self._written - self._synced

    # ------------------------------------------------------------------ writes

    def put(self, kind: str, key: bytes, record: dict[str, Any]) -> None:
        """Append one record; a no-op if ``key`` is already stored. Written to the OS on return."""
        f = self._files.get(kind)
        if f is None:
            f = self._new_kind(kind)
        if len(key) != KEY_SIZE:
            raise ValueError(f"checkpoint keys are {KEY_SIZE} bytes (content_key), got {len(key)}")
        idx = f.index
        if idx.find(key) is not None:
            return
        if self._sync_error is not None:
            self._raise_sync_error()
        line = _frame(key, _encode_record(record))
        self._write(f, line)
        idx.overlay[key] = (f.end, len(line))
        f.end += len(line)
        if len(idx.overlay) >= _MERGE_AT:
            idx.merge_overlay()
        self._written += 1
        pending = self._written - self._synced
        if pending == 1 or pending == self.fsync_every:
            with self._cond:
                if pending == 1:
                    self._first_pending = time.monotonic()
                self._cond.notify()

    def sync(self) -> None:
        """fsync every checkpoint file now."""
        self._check_open()
        self._sync_all()
        self._raise_sync_error()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if not self._open:
            raise CheckpointError(f"run store {self.run_dir} is not open; call open() or use `with`")

    def _new_kind(self, kind: str) -> _KindFile:
        self._check_open()
        if not _KIND_RE.fullmatch(kind):
            raise ValueError(f"checkpoint kind must match [a-z_][a-z0-9_]*, got {kind!r}")
        path = self.run_dir / CHECKPOINT_DIR / f"{kind}.jsonl"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._fsync_dir(path.parent)
        f = _KindFile(path, fd, os.fstat(fd).st_size, _KindIndex(), {})
        self._files[kind] = f
        return f

    def _write(self, f: _KindFile, line: bytes) -> None:
        try:
            n = os.write(f.fd, line)
            while n < len(line):  # short writes: disk full or a signal mid-way
                n += os.write(f.fd, line[n:])
        except OSError as exc:
            # Never leave half a line behind: the next line would be glued to it.
            with contextlib.suppress(OSError):
                os.ftruncate(f.fd, f.end)
            raise CheckpointError(f"cannot append to {f.path}: {exc.strerror or exc}") from exc

    def _sync_loop(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._stopping and self._written == self._synced:
                    cond.wait()
                if self._stopping:
                    return
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
        written = self._written
        try:
            for f in list(self._files.values()):
                self._fsync(f.fd)
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
            self._sync_error = None
            raise CheckpointError(f"fsync of checkpoints in {self.run_dir} failed: {exc}") from exc

    def _fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    def _take_lock(self) -> None:
        path = self.run_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise CheckpointError(
                f"run folder {self.run_dir} is in use by process {holder}; wait for it to finish or stop "
                "it, or start over in a new folder (--fresh)"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise CheckpointError(f"cannot lock run folder {self.run_dir}: {exc.strerror or exc}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _close_files(self) -> None:
        files, self._files = self._files, {}
        for f in files.values():
            with contextlib.suppress(OSError):
                os.close(f.fd)

    # ------------------------------------------------------------------ open-time scan

    def _load(self, kind: str, path: Path) -> _KindFile:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        try:
            scan = _Scanner(path, fd, self.verify)
            scan.run()
            end = scan.end
            if scan.torn is not None:
                end = self._repair_tail(fd, scan, path)
            f = _KindFile(path, fd, end, _KindIndex(), {})
            dup = f.index.build(scan.hi, scan.lo, scan.off, scan.ln)
            ndup = int(dup.sum())
            if ndup:
                self.duplicates += ndup
                logger.warning(
                    "%s: %d duplicate record(s) of a stored key; the first copy of each is used", path, ndup
                )
            for c in scan.corrupt:
                key = c.key
                if key is not None:
                    if f.index.find(key) is not None:
                        c = CorruptLine(c.path, c.line, c.reason, key, superseded=True)
                    else:
                        f.unreadable[key] = c
                self.corrupt += 1
                self.corrupt_lines.append(c)
                logger.warning("%s", c)
            return f
        except BaseException:
            os.close(fd)
            raise

    def _repair_tail(self, fd: int, scan: _Scanner, path: Path) -> int:
        assert scan.torn is not None
        tail_off, tail = scan.torn
        parsed = _parse_line(tail)
        if parsed is not None:
            os.write(fd, b"\n")
            key, _ = parsed
            scan.add_one(key, tail_off, len(tail) + 1)
            end = tail_off + len(tail) + 1
            info = TornTail(path, scan.lines + 1, len(tail), completed=True)
        else:
            os.ftruncate(fd, tail_off)
            end = tail_off
            info = TornTail(path, scan.lines + 1, len(tail), completed=False)
        self._fsync(fd)
        self.torn.append(info)
        logger.warning("%s", info)
        return end


class _Scanner:
    """Reads one checkpoint file in big chunks and validates every line's frame (and crc32)."""

    def __init__(self, path: Path, fd: int, verify: bool) -> None:
        self.path = path
        self.fd = fd
        self.verify = verify
        self.lines = 0
        self.end = 0  # offset just past the last newline
        self.torn: tuple[int, bytes] | None = None
        self.corrupt: list[CorruptLine] = []
        self._hi: list[npt.NDArray[np.uint64]] = []
        self._lo: list[npt.NDArray[np.uint64]] = []
        self._off: list[npt.NDArray[np.int64]] = []
        self._ln: list[npt.NDArray[np.uint32]] = []
        self._extra = False  # entries added out of file order (salvaged)
        self.hi: npt.NDArray[np.uint64] = np.empty(0, np.uint64)
        self.lo: npt.NDArray[np.uint64] = np.empty(0, np.uint64)
        self.off: npt.NDArray[np.int64] = np.empty(0, np.int64)
        self.ln: npt.NDArray[np.uint32] = np.empty(0, np.uint32)

    def run(self) -> None:
        buf = bytearray(_READ_CHUNK)
        carry = 0  # bytes of an unfinished line at the start of buf
        base = 0  # file offset of buf[0]
        while True:
            if carry == len(buf):  # one line longer than the buffer
                buf.extend(bytes(len(buf)))
            with memoryview(buf) as mv:
                got = os.readv(self.fd, [mv[carry:]]) if carry else os.readv(self.fd, [mv])
            if got == 0:
                if carry:
                    self.torn = (base, bytes(buf[:carry]))
                break
            n = carry + got
            last_nl = buf.rfind(b"\n", 0, n)
            if last_nl < 0:
                carry = n
                continue
            self._chunk(buf, last_nl + 1, base)
            rest = n - (last_nl + 1)
            buf[:rest] = buf[last_nl + 1 : n]
            base += last_nl + 1
            carry = rest
        self.end = base
        self._finish()

    def add_one(self, key: bytes, off: int, ln: int) -> None:
        hi, lo = _split_key(key)
        self.hi = np.append(self.hi, np.uint64(hi))
        self.lo = np.append(self.lo, np.uint64(lo))
        self.off = np.append(self.off, np.int64(off))
        self.ln = np.append(self.ln, np.uint32(ln))

    def _chunk(self, buf: bytearray, n: int, base: int) -> None:
        arr = np.frombuffer(buf, dtype=np.uint8, count=n)
        ends = np.flatnonzero(arr == 10)  # index of each line's newline
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        lens = ends - starts + 1
        first_line = self.lines
        self.lines += len(ends)

        ok = lens >= _MIN_LINE
        ok &= arr[ends - 1] == ord("}")
        cand = np.flatnonzero(ok)
        s = starts[cand]
        frame = arr[s[:, None] + _FRAME_POS]
        good = (frame == _FRAME_VAL).all(axis=1)
        nib_key = _HEX_LUT[arr[s[:, None] + _KEY_POS]]
        nib_crc = _HEX_LUT[arr[s[:, None] + _CRC_POS]]
        good &= (nib_key != 255).all(axis=1) & (nib_crc != 255).all(axis=1)
        key_bytes = (nib_key[:, 0::2] << 4) | nib_key[:, 1::2]
        crc = nib_crc.astype(np.uint64) @ _CRC_WEIGHTS
        if self.verify:
            crc32 = zlib.crc32
            with memoryview(buf) as mv:
                for j, (st, en, c) in enumerate(
                    zip(s.tolist(), ends[cand].tolist(), crc.tolist(), strict=True)
                ):
                    if crc32(mv[st + _BODY_AT : en - 1]) != c:
                        good[j] = False
        sel = cand[good]
        kb = np.ascontiguousarray(key_bytes[good]).view(">u8").astype(np.uint64)
        self._hi.append(kb[:, 0].copy())
        self._lo.append(kb[:, 1].copy())
        self._off.append((starts[sel] + base).astype(np.int64))
        self._ln.append(lens[sel].astype(np.uint32))

        bad_mask = np.ones(len(ends), dtype=bool)
        bad_mask[sel] = False
        bad = np.flatnonzero(bad_mask)
        if len(bad):
            del arr
            for i in bad.tolist():
                st, en = int(starts[i]), int(ends[i])
                self._bad_line(bytes(buf[st : en + 1]), base + st, first_line + i + 1)

    def _bad_line(self, line: bytes, off: int, line_no: int) -> None:
        body = line[:-1]
        if not body.strip():
            self.corrupt.append(CorruptLine(self.path, line_no, "blank line"))
            return
        # A valid record glued after garbage (a torn write that was later appended to) is kept.
        at = line.rfind(_P0)
        while at > 0:
            parsed = _parse_line(line[at:])
            if parsed is not None:
                key = parsed[0]
                hi, lo = _split_key(key)
                self._hi.append(np.array([hi], np.uint64))
                self._lo.append(np.array([lo], np.uint64))
                self._off.append(np.array([off + at], np.int64))
                self._ln.append(np.array([len(line) - at], np.uint32))
                self._extra = True
                self.corrupt.append(
                    CorruptLine(
                        self.path,
                        line_no,
                        f"{at} bytes of garbage before a valid record (kept)",
                        _salvage_key(line),
                    )
                )
                return
            at = line.rfind(_P0, 0, at)
        reason = "bad checksum" if _salvage_key(line) is not None else "not a checkpoint record"
        self.corrupt.append(CorruptLine(self.path, line_no, reason, _salvage_key(line)))

    def _finish(self) -> None:
        if self._off:
            self.hi = np.concatenate(self._hi)
            self.lo = np.concatenate(self._lo)
            self.off = np.concatenate(self._off)
            self.ln = np.concatenate(self._ln)
        if self._extra:
            order = np.argsort(self.off, kind="stable")
            self.hi, self.lo, self.off, self.ln = (
                self.hi[order],
                self.lo[order],
                self.off[order],
                self.ln[order],
            )
        self._hi, self._lo, self._off, self._ln = [], [], [], []
