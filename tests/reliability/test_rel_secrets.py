"""A distinctive fake API key in the environment never reaches a file, a log line, the CLI's output or an
exception text, also when the server answers 401 and echoes the Authorization header back in its error
message (as some real servers do), in full or cut off by our own truncation of long messages.

"Reaches" means any 10 characters in a row of the key's distinctive part: a key cut in half is a leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from aiohttp import web
from reliability_support import ENDPOINTS, config_dict, dataset, faulty_sim, read_checkpoints, run_config

from arena_engine.config import load_config
from arena_engine.errors import ConfigError
from arena_engine.pipeline import Arena, ArenaResults
from arena_engine.report import write_reports
from arena_engine.sim import SimServer

KEY_ENV = "ARENA_TEST_KEY"
KEY = "sk-test-DISTINCTIVE-1234567890abcdef"
WINDOWS = sorted({KEY[i : i + 10] for i in range(len("sk-test-"), len(KEY) - 9)})
# With this much text before it, the echoed key straddles the 300-character cut of server messages.
PAD_TO_CUT = 297 - len("Incorrect API key provided: Bearer ") - 18


def leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        return [w for w in WINDOWS if w.encode() in text]
    return [w for w in WINDOWS if w in text]


def assert_clean(what: str, text: str | bytes) -> None:
    found = leaks(text)
    assert not found, f"{what} holds part of the API key: {found}"


def assert_folder_clean(folder: Path) -> int:
    n = 0
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            assert_clean(str(p), p.read_bytes())
            n += 1
    return n


@contextlib.contextmanager
def echo_401_server(pad: int = 0) -> Iterator[tuple[str, list[str]]]:
    """An endpoint that answers every request 401 and puts the Authorization header in its message.

    It runs on its own event loop in a thread, so a CLI subprocess can use it too."""
    seen: list[str] = []

    async def chat(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        seen.append(auth)
        message = ("x" * pad + f"Incorrect API key provided: {auth}. You can find your API key at "
                   "https://platform.example.com/account/api-keys.")
        body = {"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}
        return web.json_response(body, status=401)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1", seen
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


class _AllRecords(logging.Handler):
    """Every log record of every logger, at DEBUG, formatted as a handler would write it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.exc_info:
            text += self.formatter.formatException(record.exc_info) if self.formatter else ""
        self.lines.append(text)


@contextlib.contextmanager
def debug_logs() -> Iterator[_AllRecords]:
    root = logging.getLogger()
    handler = _AllRecords()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


async def _arena(urls: dict[str, str], run_dir: Path, data: Path) -> ArenaResults:
    async with Arena(run_config(urls, run_dir, data, api_key_env=KEY_ENV, max_attempts=3)) as arena:
        return await arena.run()


@pytest.mark.parametrize("pad", [0, PAD_TO_CUT], ids=["echoed-in-full", "echoed-and-cut"])
def test_a_401_echoing_the_key_leaves_no_trace_of_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    pad: int) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    data = dataset(tmp_path, 4)
    run_dir = tmp_path / "run"
    with echo_401_server(pad) as (url, seen), debug_logs() as logs:
        try:
            results = anyio.run(_arena, dict.fromkeys(ENDPOINTS, url), run_dir, data)
        except Exception as exc:  # nothing should raise; if it does, its text must be clean too
            assert_clean("exception", f"{exc!r} {exc}")
            raise
        paths = write_reports(results)
    assert seen and all(a == f"Bearer {KEY}" for a in seen), "the key was not even sent"
    # the requests failed at once (401 is not retried) and say why, without the key
    failures = read_checkpoints(run_dir).records("failures")
    assert len(failures) == 2 * 8 and all(f["status"] == 401 and f["attempts"] == 1 for f in failures)
    assert all(f["error"].startswith("http_401: ") and "Incorrect API key provided" in f["error"] for f in failures)
    assert all(g.reason and g.reason.startswith("no answer") for g in results.games)
    assert_clean("game reasons", " ".join(str(g) for g in results.games))
    assert_clean("results", repr(results.usage) + repr(results.boards))
    assert_clean("log lines", "\n".join(logs.lines))
    assert any("failed" in line for line in logs.lines), "the failures were logged"
    assert set(paths.values()) <= set(run_dir.rglob("*"))
    assert assert_folder_clean(run_dir) >= 8


def test_a_normal_run_through_faults_leaves_no_trace_of_the_key(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    data = dataset(tmp_path, 6)
    run_dir = tmp_path / "run"

    async def main() -> ArenaResults:
        async with SimServer(faulty_sim("judge")) as sim:
            return await _arena(dict.fromkeys(ENDPOINTS, sim.url), run_dir, data)

    with debug_logs() as logs:
        results = anyio.run(main)
        write_reports(results)
    assert any(g.outcome is not None for g in results.games)
    assert_clean("log lines", "\n".join(logs.lines))
    assert_folder_clean(run_dir)
    saved = orjson.loads((run_dir / "config.json").read_bytes())
    assert saved["models"][0]["api_key_env"] == KEY_ENV  # the variable's name, never its value


def test_the_cli_with_debug_logs_never_prints_the_key(tmp_path: Path) -> None:
    data = dataset(tmp_path, 3)
    env = {**os.environ, KEY_ENV: KEY}
    with echo_401_server(PAD_TO_CUT) as (url, seen):
        cfg = tmp_path / "arena.json"
        cfg.write_bytes(orjson.dumps(config_dict(dict.fromkeys(ENDPOINTS, url), tmp_path / "run", data,
                                                 api_key_env=KEY_ENV, max_attempts=2)))
        proc = subprocess.run([sys.executable, "-m", "arena_engine.cli", "--debug", "run", str(cfg)],
                              capture_output=True, env=env, timeout=120, check=False)
    assert seen and seen[0] == f"Bearer {KEY}"
    assert proc.returncode == 1, proc.stderr.decode()[-3000:]  # finished, with failed requests
    assert b"http_401: " in proc.stderr, "the log lines (at DEBUG level, --debug) report the 401s"
    assert_clean("CLI stdout", proc.stdout)
    assert_clean("CLI stderr", proc.stderr)
    assert_folder_clean(tmp_path / "run")


def test_a_key_written_into_a_config_file_is_refused_without_repeating_it(tmp_path: Path) -> None:
    raw: dict[str, Any] = config_dict(dict.fromkeys(ENDPOINTS, "http://127.0.0.1:9/v1"), tmp_path / "run",
                                      tmp_path / "data")
    raw["judge"]["api_key"] = KEY
    cfg = tmp_path / "arena.json"
    cfg.write_bytes(orjson.dumps(raw))
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert "api_key_env" in str(info.value)
    assert_clean("the error", f"{info.value!r} {info.value}")
    proc = subprocess.run([sys.executable, "-m", "arena_engine.cli", "--debug", "run", str(cfg)],
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 2 and b"Traceback" in proc.stderr  # --debug shows the traceback ...
    assert_clean("CLI stderr", proc.stderr)  # ... and still not the key
    assert not (tmp_path / "run").exists()
