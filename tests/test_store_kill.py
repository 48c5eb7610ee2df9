"""SIGKILL a real writer process at random moments; after each kill, reopen and check the folder.

The writer stores records 0..N-1 that are not stored yet and prints each index after ``put`` returns
(its acknowledgement). Kills land anywhere: during start-up and open (scan, repair, sidecar rewrite),
between writes, inside large writes. Twice the writer tears a line itself (writes half of it, then
SIGKILLs itself) so a torn tail is certain to occur. After every kill: every acknowledged record is
there with its content, no key is stored twice, the tail is whole; at the end the folder equals an
uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from arena_engine.store import RunStore, content_key
from arena_engine.store.frame import key_of

ROOT = Path(__file__).resolve().parents[1]
N = 3000
KILLS = 10
TEARS = {3, 7}  # rounds where the writer tears a line and kills itself
START_UP = {0, 5}  # rounds killed at a random time after start: importing, opening, repairing

WRITER = r"""
import os, random, signal, sys
from pathlib import Path
from arena_engine.store import RunStore, content_key
from arena_engine.store.frame import encode_record, frame

run_dir, n, tear_at = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def record(i):
    rng = random.Random(i)
    size = rng.choice([200, 2000, 20000, 200000])
    return {"i": i, "answer": ("résumé 数据 </script> " * (size // 20 + 1))[: rng.randint(size // 2, size)]}

with RunStore(run_dir, fsync_interval=0.01, fsync_every=50) as store:
    stored = 0
    for i in range(n):
        key = content_key({"q": i})
        if store.has("generations", key):
            continue
        if stored == tear_at:
            line = frame(key, encode_record(record(i)))
            fd = os.open(run_dir / "checkpoints" / "generations.jsonl", os.O_WRONLY | os.O_APPEND)
            os.write(fd, line[: len(line) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        store.put("generations", key, record(i))
        stored += 1
        os.write(1, b"%d\n" % i)
        if stored % 10 == 0:
            os.read(0, 1)  # keep the parent's view of the acks close to the writer's progress: it answers
os.write(1, b"done\n")
"""


def record(i: int) -> dict[str, Any]:
    rng = random.Random(i)
    size = rng.choice([200, 2000, 20000, 200000])
    return {"i": i, "answer": ("résumé 数据 </script> " * (size // 20 + 1))[: rng.randint(size // 2, size)]}


def run_writer(
    run_dir: Path, *, kill_at: int | None, delay: float = 0.0, tear_at: int = -1
) -> tuple[list[int], bool]:
    """Run the writer. ``kill_at=0``: SIGKILL it ``delay`` seconds after start (start-up, open, repair);
    ``kill_at=n``: SIGKILL it ``delay`` seconds after its n-th acknowledgement. Returns (acknowledged
    indexes, finished).

    After every tenth acknowledgement the writer waits for a byte on its stdin: with ``kill_at=n`` this
    sends one for each ten acknowledgements read, so at the kill the writer is at most ten records past
    what was read; otherwise it sends them all at once and the writer never waits."""
    acks: list[bytes] = []
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(run_dir), str(N), str(tear_at)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        if not kill_at:
            proc.stdin.write(b"." * (N // 10 + 1))
            proc.stdin.close()
        # the smallest pipe: the writer blocks on its acknowledgements after ~800 unread ones, so a test
        # process starved on a loaded machine cannot let it run to the end before the kill
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)
        if kill_at is not None:
            while len(acks) < kill_at and (line := proc.stdout.readline()):
                acks.append(line)
                if len(acks) % 10 == 0:
                    with contextlib.suppress(BrokenPipeError):  # it tore a line and killed itself
                        proc.stdin.write(b".")
                        proc.stdin.flush()
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        out = b"".join(acks).split() + proc.stdout.read().split()
        proc.wait(timeout=60)
    done = bool(out) and out[-1] == b"done"
    return [int(x) for x in out if x != b"done"], done


def raw_keys(run_dir: Path) -> Counter[bytes]:
    path = run_dir / "checkpoints" / "generations.jsonl"
    data = path.read_bytes() if path.exists() else b""  # a kill during start-up leaves no file yet
    assert data == b"" or data.endswith(b"\n"), "unrepaired tail"
    keys: Counter[bytes] = Counter()
    for line in data.splitlines(keepends=True):
        key = key_of(line)
        assert key is not None
        keys[key] += 1
    return keys


def check(run_dir: Path, acked: set[int]) -> int:
    with RunStore(run_dir) as store:
        stored = {rec["i"]: rec for rec in store.records("generations")}
        assert store.corrupt == 0
        missing = acked - stored.keys()
        assert not missing, f"acknowledged records lost: {sorted(missing)[:10]}"
        for i in acked:
            assert stored[i] == record(i)
        assert store.count("generations") == len(stored)
    dups = [k.hex() for k, c in raw_keys(run_dir).items() if c > 1]
    assert not dups, f"records stored twice: {dups[:5]}"
    return len(stored)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_acknowledged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(20240607)
    acked: set[int] = set()
    torn_seen = 0
    progress = []
    for round_ in range(KILLS):
        caplog.clear()
        if round_ in TEARS:
            got, done = run_writer(tmp_path, kill_at=None, tear_at=rng.randint(0, 30))
        elif round_ in START_UP:
            got, done = run_writer(tmp_path, kill_at=0, delay=rng.uniform(0.05, 0.6))
        else:
            got, done = run_writer(tmp_path, kill_at=rng.randint(1, 250), delay=rng.uniform(0, 0.003))
        assert not done, "the writer finished before it was killed; raise N"
        acked.update(got)
        with caplog.at_level(logging.WARNING):
            progress.append(check(tmp_path, acked))
        torn = [r.getMessage() for r in caplog.records if "torn last line" in r.getMessage()]
        if round_ in TEARS:
            assert torn, "the torn line was not reported"
        torn_seen += bool(torn)
    assert progress[-1] > 0, "no kill landed after the first write"
    assert torn_seen >= len(TEARS)

    got, done = run_writer(tmp_path, kill_at=None)
    assert done
    acked.update(got)
    assert check(tmp_path, acked) == N  # (a few were stored but killed before their ack: in flight)
    # The same content as an uninterrupted run, in a file with one line per key.
    keys = raw_keys(tmp_path)
    assert len(keys) == N and set(keys) == {content_key({"q": i}) for i in range(N)}
    with RunStore(tmp_path, full_scan=True) as store:
        assert store.corrupt == 0 and store.torn == []
        assert {rec["i"]: rec for rec in store.records("generations")} == {i: record(i) for i in range(N)}


def test_stored_lines_are_plain_jsonl(tmp_path: Path) -> None:
    """Each checkpoint line is a JSON object others can read (jq, pandas): {"k", "c", "r": record}."""
    with RunStore(tmp_path) as store:
        store.put("judgments", content_key("x"), {"verdict": "A>B", "text": "ok\n"})
    (line,) = (tmp_path / "checkpoints" / "judgments.jsonl").read_bytes().splitlines()
    obj = orjson.loads(line)
    assert obj["k"] == content_key("x").hex() and obj["r"] == {"verdict": "A>B", "text": "ok\n"}
