"""Helpers for the kill, signal and cancellation tests.

The CLI runs in a real subprocess against the simulator in another process
(:class:`arena_engine.sim.process.SimProcess`). Checkpoint files are read here with a reader of their
own (frame, crc32, duplicate keys, torn tail), not with ``arena_engine.store``, so a bug in the store
cannot hide itself from the tests.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from arena_engine.sim import Latency, SimConfig, SimModel
from tests.waiting import wait_until as wait_until  # the kill and signal tests import it from here

REPO = Path(__file__).resolve().parents[1]
MODELS = (("base", 0.0), ("strong", 1.0), ("weak", -1.0))
JUDGE = "sim-judge"
MODEL_CONCURRENCY = 8
JUDGE_CONCURRENCY = 16
# Requests that can be sent and not yet stored at any instant: each endpoint's limiter admits at most its
# concurrency, and a result is stored with no await between the response and the write.
MAX_IN_FLIGHT = len(MODELS) * MODEL_CONCURRENCY + JUDGE_CONCURRENCY
INTERRUPTED_MESSAGE = "arena-engine: interrupted; finished work is saved, rerun to resume"


def sim_config(seed: int = 7, latency: float = 0.03) -> SimConfig:
    """Three candidates and a judge, lognormal latency (median ``latency`` s), no faults."""
    models = tuple(SimModel(n, quality=q) for n, q in MODELS) + (SimModel(JUDGE, judge=True),)
    return SimConfig(models=models, seed=seed, latency=Latency("lognormal", latency, 0.5))


def expected_records(queries: int) -> tuple[int, int]:
    """(generations, judgments) of a finished baseline-mode run over ``queries`` queries."""
    candidates = len(MODELS) - 1
    return len(MODELS) * queries, 2 * candidates * queries


def write_run_config(path: Path, api_url: str, run_dir: Path, data: Path, *, rounds: int = 200) -> Path:
    """A TOML run config, as a user would write it, pointing at the simulator."""
    s = json.dumps  # TOML basic strings accept JSON string escapes
    lines = [
        "[run]", f"output_dir = {s(str(run_dir))}", "seed = 1", "",
        "[[datasets]]", 'name = "general_qa"', f"path = {s(str(data))}", "",
    ]
    for name, _ in MODELS:
        lines += [
            "[[models]]", f"name = {s(name)}", f"api_url = {s(api_url)}", f"identity = {s(name)}",
            f"concurrency = {MODEL_CONCURRENCY}", "max_attempts = 8",
            "[models.generation]", "temperature = 0.0", "max_tokens = 256", "",
        ]
    lines += [
        "[arena]", f"baseline = {s(MODELS[0][0])}", "",
        "[judge]", f"name = {s(JUDGE)}", f"api_url = {s(api_url)}", f"identity = {s(JUDGE)}",
        f"concurrency = {JUDGE_CONCURRENCY}",
        "max_attempts = 8", "",
        "[rating]", f"rounds = {rounds}", "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def cli(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """Start ``arena-engine ARGS`` with stdout/stderr going to ``log``.out / ``log``.err."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with open(log.with_suffix(".out"), "wb") as out, open(log.with_suffix(".err"), "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "arena_engine.cli", *args], stdout=out, stderr=err,
                                cwd=log.parent, env=env)


def stop(*procs: subprocess.Popen[bytes] | None) -> None:
    """Kill whatever of ``procs`` is still running (cleanup after a failed assertion)."""
    for p in procs:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()


def output(log: Path) -> tuple[str, str]:
    return log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text()


@dataclass
class Checkpoint:
    """One checkpoint file as found on disk."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # key hex -> first record
    key_counts: Counter[str] = field(default_factory=Counter)
    bad_lines: list[int] = field(default_factory=list)  # 1-based numbers of lines that are not valid records
    torn_tail: bytes = b""  # bytes after the last newline

    @property
    def duplicates(self) -> dict[str, int]:
        return {k: n for k, n in self.key_counts.items() if n > 1}

    def clean(self) -> bool:
        return not self.bad_lines and not self.torn_tail and not self.duplicates


def read_checkpoint(path: Path) -> Checkpoint:
    """Parse ``{"k":KEY,"c":CRC32,"r":RECORD}`` lines, checking each line's checksum."""
    ck = Checkpoint()
    if not path.exists():
        return ck
    raw = path.read_bytes()
    cut = raw.rfind(b"\n") + 1
    ck.torn_tail = raw[cut:]
    for n, line in enumerate(raw[:cut].split(b"\n")[:-1], start=1):
        head, sep, rest = line.partition(b',"r":')
        try:
            frame = orjson.loads(line)
            key, crc, record = frame["k"], int(frame["c"], 16), frame["r"]
            ok = bool(sep) and head.startswith(b'{"k":"') and zlib.crc32(rest[:-1]) == crc and isinstance(record, dict)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            ck.bad_lines.append(n)
            continue
        ck.key_counts[key] += 1
        ck.records.setdefault(key, record)
    return ck


def read_run(run_dir: Path) -> dict[str, Checkpoint]:
    folder = run_dir / "checkpoints"
    return {kind: read_checkpoint(folder / f"{kind}.jsonl") for kind in ("generations", "judgments", "failures")}


def results_of(run: dict[str, Checkpoint]) -> tuple[dict[str, str], dict[str, str | None]]:
    """What a run produced, by content key: the answer of each generation and the verdict of each judgment."""
    answers = {k: r["answer"] for k, r in run["generations"].records.items()}
    verdicts = {k: r["verdict"] for k, r in run["judgments"].records.items()}
    return answers, verdicts


def stored(run: dict[str, Checkpoint]) -> int:
    return len(run["generations"].records) + len(run["judgments"].records)


def lock_is_free(run_dir: Path) -> bool:
    """True if no process holds the run folder's lock (tries the same flock the store takes)."""
    fd = os.open(run_dir / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def answered_200(stats: dict[str, Any]) -> int:
    return int(stats["status"].get("200", 0))
