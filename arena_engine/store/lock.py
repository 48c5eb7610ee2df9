"""The run folder's lock: ``flock`` on ``RUN_DIR/.lock``, exclusive for the writer, shared for readers.

The writer leaves its pid in the lock file so that a second process can say who holds the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from arena_engine.errors import CheckpointError

LOCK_NAME = ".lock"


def take_lock(run_dir: Path, *, readonly: bool) -> int:
    """Lock ``run_dir`` (shared if ``readonly``) and return the lock's fd; CheckpointError if in use."""
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        os.close(fd)
        # a writer leaves its pid in the lock file; readers (a distributed run's workers) do not
        who = f"process {holder}" if holder else "the workers of a distributed run (--backend ray)"
        raise CheckpointError(
            f"run folder {run_dir} is in use by {who}; wait for it to finish or stop "
            "it, or start over in a new folder (--fresh)"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise CheckpointError(f"cannot lock run folder {run_dir}: {exc.strerror or exc}") from exc
    if readonly:
        return fd
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:  # a full disk: do not keep the lock of a store that failed to open
        os.close(fd)
        raise
    return fd


def release_lock(fd: int, *, readonly: bool) -> None:
    """Unlock and close a lock taken by ``take_lock`` (a writer first clears its pid)."""
    if not readonly:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
