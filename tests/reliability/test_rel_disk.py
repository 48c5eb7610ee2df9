"""A full disk and a read-only output folder: one clear error, and nothing already saved is lost.

The run folder sits on a tiny tmpfs mounted for the test (the tests run as root here; chmod would not
stop root from writing, a read-only mount does). Where mounting is not allowed the tmpfs test skips,
and the file-size limit test (RLIMIT_FSIZE in a child process, so writes past it fail with EFBIG,
"File too large", the same failed write as ENOSPC) still covers a write that fails mid-run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from reliability_support import (
    ENDPOINTS,
    Checkpoints,
    assert_one_line_error,
    clean_sim,
    dataset,
    file_digests,
    read_checkpoints,
    run_cli,
    run_config,
    threaded_sim,
    write_config,
)

from arena_engine.errors import CheckpointError
from arena_engine.pipeline import Arena

PER_SUBSET = 20
NEEDED = 4 * PER_SUBSET  # generations (2 models x 2 subsets) and, as many, judgments
SMALL_FS = "64k"  # holds a few dozen records, then ENOSPC mid-run
# Answers a failed write can cost: the requests in flight (3 endpoints x concurrency 16); the run stops
# sending the moment a write fails (its whole cancel scope is cancelled before the error propagates).
IN_FLIGHT = 3 * 16


def _mount(args: list[str]) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    if not _mount(["-t", "tmpfs", "-o", f"size={size},mode=0755", f"arena-test-{uuid.uuid4().hex[:8]}", str(where)]):
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission in this sandbox); the "
                    "RLIMIT_FSIZE test covers a failing write instead")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def _records(ck: Checkpoints) -> dict[tuple[str, bytes], dict]:
    return {(kind, k): r for kind, items in ck.lines.items() for k, r in items}


def _assert_whole(ck: Checkpoints) -> None:
    """Every line a whole record (a failed write left no half line), no key twice."""
    assert ck.bad_lines == {}, ck.bad_lines
    assert all(n == 0 for n in ck.duplicated_keys().values())


def test_disk_full_then_read_only_then_resume_loses_nothing(tmp_path: Path) -> None:
    data = dataset(tmp_path, PER_SUBSET)
    with tiny_tmpfs(tmp_path / "fs", SMALL_FS) as fs, threaded_sim(clean_sim()) as (url, stats):
        run_dir = fs / "run"
        cfg = write_config(tmp_path / "arena.json", dict.fromkeys(ENDPOINTS, url), run_dir, data)

        # 1. the disk fills up mid-run: one line naming the file and the cause
        code, _, err = run_cli("run", str(cfg), "--quiet")
        assert_one_line_error(code, err, str(run_dir / "checkpoints"), "No space left on device")
        saved = read_checkpoints(run_dir)
        _assert_whole(saved)
        before = _records(saved)
        stored = len(saved.records("generations")) + len(saved.records("judgments"))
        assert 0 < stored < 2 * NEEDED
        answered = stats()["status"].get("200", 0)  # the answers in flight when the disk filled are lost
        print(f"\ndisk full after {stored} records: {answered - stored} answered requests lost (bound {IN_FLIGHT})")
        assert stored <= answered <= stored + IN_FLIGHT

        # 2. the folder becomes read-only: a clear error from every command, nothing changes
        assert _mount(["-o", "remount,ro", str(fs)])
        files = file_digests(run_dir)
        for args in (["run", str(cfg), "--quiet"], ["report", str(run_dir)], ["rate", str(run_dir)]):
            code, _, err = run_cli(*args)
            assert_one_line_error(code, err, str(run_dir), "Read-only file system")
        with pytest.raises(CheckpointError, match="Read-only file system"):
            anyio.run(_enter, run_dir, url, data)
        assert file_digests(run_dir) == files

        # 3. room again: the rerun sends only what is missing, and every saved record is still there
        assert _mount(["-o", "remount,rw,size=16m", str(fs)])
        sent_before = stats()["requests"]
        code, _, err = run_cli("run", str(cfg), "--quiet")
        assert code == 0, err
        final = read_checkpoints(run_dir)
        _assert_whole(final)
        after = _records(final)
        assert all(after[k] == r for k, r in before.items()), "a record saved before the disk filled changed"
        assert len(final.records("generations")) == NEEDED and len(final.records("judgments")) == NEEDED
        s = stats()
        assert s["requests"] - sent_before == 2 * NEEDED - stored, "the rerun asked again for saved work"
        assert s["duplicate_200"] == answered - stored, "only the answers lost with the full disk came twice"

        # 4. the disk is full when the reports are rebuilt: one clear error, checkpoints untouched
        shutil.rmtree(run_dir / "report")
        checkpoints = file_digests(run_dir / "checkpoints")
        _fill(fs, leave=4096)
        code, _, err = run_cli("report", str(run_dir))
        assert_one_line_error(code, err, str(run_dir), "No space left on device")
        assert file_digests(run_dir / "checkpoints") == checkpoints
        assert not list((run_dir / "report").glob("*.tmp")), "a half-written report file was left behind"

        # 5. a full disk when a rerun starts: one page left (for the lock's pid, not the saved config), none
        for leave in (4096, 0):
            _fill(fs, leave=leave)
            code, _, err = run_cli("run", str(cfg), "--quiet")
            assert_one_line_error(code, err, str(run_dir), "No space left on device")
        assert file_digests(run_dir / "checkpoints") == checkpoints
        assert (run_dir / "config.json").stat().st_size > 0, "the saved config was destroyed"
        assert not (run_dir / "config.json.tmp").exists()


async def _enter(run_dir: Path, url: str, data: Path) -> None:
    async with Arena(run_config(dict.fromkeys(ENDPOINTS, url), run_dir, data)):
        pass


def _fill(fs: Path, leave: int) -> None:
    """Fill the file system but ``leave`` bytes."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    with open(fs / f"filler-{uuid.uuid4().hex[:6]}", "wb") as fh, contextlib.suppress(OSError):
        fh.write(b"\0" * max(0, free - leave))


# ------------------------------------------------------------------------------ file size limit


# The CLI with its files limited in size: writes past the limit fail with EFBIG instead of a SIGXFSZ kill.
LIMITED_CLI = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv[0] = "arena-engine"
runpy.run_module("arena_engine.cli", run_name="__main__")
"""


def test_a_write_failing_mid_run_is_one_clear_error_and_the_resume_loses_nothing(tmp_path: Path) -> None:
    """The real command in a child whose files may not grow past 24 kB: writes start failing mid-run."""
    data = dataset(tmp_path, PER_SUBSET)
    run_dir = tmp_path / "run"
    with threaded_sim(clean_sim()) as (url, stats):
        cfg = write_config(tmp_path / "arena.json", dict.fromkeys(ENDPOINTS, url), run_dir, data)
        proc = subprocess.run([sys.executable, "-c", LIMITED_CLI, "24000", "run", str(cfg), "--quiet"],
                              capture_output=True, text=True, timeout=120, check=False)
        assert_one_line_error(proc.returncode, proc.stderr, str(run_dir / "checkpoints"), "File too large")
        saved = read_checkpoints(run_dir)
        _assert_whole(saved)
        before = _records(saved)
        stored = len(before)
        assert 0 < stored < 2 * NEEDED
        assert max(p.stat().st_size for p in (run_dir / "checkpoints").glob("*.jsonl")) <= 24_000
        answered = stats()["status"].get("200", 0)
        print(f"\ndisk full after {stored} records: {answered - stored} answered requests lost (bound {IN_FLIGHT})")
        assert stored <= answered <= stored + IN_FLIGHT

        sent_before = stats()["requests"]
        code, _, err = run_cli("run", str(cfg), "--quiet")
        assert code == 0, err
        final = read_checkpoints(run_dir)
        _assert_whole(final)
        after = _records(final)
        assert all(after[k] == r for k, r in before.items())
        assert len(after) == 2 * NEEDED
        assert stats()["requests"] - sent_before == 2 * NEEDED - stored
        assert stats()["duplicate_200"] == answered - stored
