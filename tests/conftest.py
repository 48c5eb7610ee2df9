"""Test-session setup.

- Subprocesses started by tests import this checkout's package.
- The suite runs in two processes (`-n 2` in pyproject.toml). A test marked ``exclusive`` measures time
  (a Retry-After honoured within a grace, a SIGTERM landing at a moment, a concurrency that grows within
  a deadline): it runs while no other test runs, so the other process's load cannot make it fail. The
  two processes share one lock file: an exclusive test takes it exclusively, every other test shared; a
  turnstile taken first gives the exclusive test priority, so it is not starved by a stream of short
  tests on the other side.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parent.parent)
os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "exclusive: timing-sensitive; runs while no other test of the session runs")


def _lock_files() -> tuple[int, int] | None:
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:  # one process: nothing runs beside any test
        return None
    base = Path(tempfile.gettempdir())
    fds = []
    for name in ("turnstile", "tests"):
        fds.append(os.open(base / f"arena-engine-{run}.{name}.lock", os.O_CREAT | os.O_RDWR, 0o600))
    return fds[0], fds[1]


_FDS: tuple[int, int] | bool | None = False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    global _FDS
    if _FDS is False:
        _FDS = _lock_files()
    if not isinstance(_FDS, tuple):
        yield
        return
    turnstile, tests = _FDS
    exclusive = item.get_closest_marker("exclusive") is not None
    fcntl.flock(turnstile, fcntl.LOCK_EX)
    try:
        fcntl.flock(tests, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    finally:
        fcntl.flock(turnstile, fcntl.LOCK_UN)
    try:
        yield
    finally:
        fcntl.flock(tests, fcntl.LOCK_UN)
