"""Shared pieces of the reliability suite: the fault mix, run configs, simulators, checkpoint readers.

The arena under test has a baseline and one candidate, judged in both orders. For the fault tests each
endpoint (baseline, candidate, judge) gets its own simulator process: the simulator counts
``endpoint_retry_after_violations`` over everything it receives, and a 429 told to one client says
nothing to another, so one simulator per client is what makes that counter meaningful.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from arena_engine.client import Endpoint
from arena_engine.config import RunConfig, config_from_dict
from arena_engine.demo import write_demo_dataset
from arena_engine.sim import Faults, Latency, SimConfig, SimModel, make_app
from arena_engine.sim.process import SimProcess
from arena_engine.sim.server import SIM_KEY
from arena_engine.store.frame import parse_line

BASE, CAND, JUDGE = "base", "cand", "judge"
ENDPOINTS = (BASE, CAND, JUDGE)
SEED = 11
# Requests on the wire when a 429 leaves the server may arrive after it: the simulator forgives arrivals
# up to this long after the 429 (on this shared 2-core machine a request sent before the 429 existed can
# take tens of ms to reach the server's handler); every Retry-After is well above it.
GRACE = 0.25
RETRY_AFTER_S = 1.0

# Every fault mode at once. The random 429s send Retry-After in a different form per endpoint (seconds,
# milliseconds, none at all); the server-side rate limit always sends both headers with the exact wait.
FAULTS = Faults(
    rate_429=0.06,
    retry_after_s=RETRY_AFTER_S,
    rate_500=0.03,
    rate_502=0.03,
    rate_503=0.03,
    rate_reset=0.03,
    rate_hang=0.02,
    hang_seconds=30.0,
    rate_malformed=0.03,
    rate_no_choices=0.03,
    rate_bad_verdict=0.2,
)
RETRY_AFTER_FORM = {BASE: "seconds", CAND: "ms", JUDGE: "none"}
# Requests per minute each simulator allows over any 1-second window (so 20, 20, 50 per second), enforced
# with 429 + the exact wait; the client is given no limit, so the server's binds.
RPM_LIMIT = {BASE: 1200.0, CAND: 1200.0, JUDGE: 3000.0}
RPM_WINDOW_S = 1.0

ALL_FAULTS = {"429", "rpm_429", "500", "502", "503", "reset", "hang", "malformed", "no_choices", "bad_verdict"}


def sim_models() -> tuple[SimModel, ...]:
    return (SimModel(BASE, quality=0.0), SimModel(CAND, quality=0.8), SimModel(JUDGE, judge=True))


def clean_sim() -> SimConfig:
    """The fault-free simulator: the same models, seed and judge as the faulty ones."""
    return SimConfig(models=sim_models(), seed=SEED, latency=Latency("fixed", 0.002))


def faulty_sim(endpoint: str) -> SimConfig:
    return replace(
        clean_sim(),
        latency=Latency("lognormal", 0.005, 0.5),
        faults=replace(FAULTS, retry_after=RETRY_AFTER_FORM[endpoint]),  # type: ignore[arg-type]
        rpm_limit=RPM_LIMIT[endpoint],
        rpm_window_s=RPM_WINDOW_S,
        violation_grace_s=GRACE,
    )


@contextlib.contextmanager
def fault_sims() -> Iterator[dict[str, SimProcess]]:
    """One faulty simulator process per endpoint, started side by side."""
    procs = {name: SimProcess(faulty_sim(name)) for name in ENDPOINTS}
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(len(procs)) as pool:
        futures = {name: pool.submit(p.__enter__) for name, p in procs.items()}
        for name, fut in futures.items():
            fut.result()
            stack.callback(procs[name].__exit__, None, None, None)
        yield procs


def dataset(root: Path, per_subset: int) -> Path:
    """The demo dataset: subsets `arena` (no references) and `example` (with references)."""
    return write_demo_dataset(root / "data" / "general_qa", per_subset)


def config_dict(urls: dict[str, str], run_dir: Path, data: Path, *, api_key_env: str | None = None,
                read_timeout: float = 1.0, max_attempts: int = 10, concurrency: int = 16,
                rounds: int = 100) -> dict[str, Any]:
    """A run config in the file format: one URL per endpoint, short timeouts so hangs end quickly."""

    def endpoint(name: str) -> dict[str, Any]:
        # simulators listen on new ports after a restart: pin the identity so resumed runs reuse answers
        ep: dict[str, Any] = {"api_url": urls[name], "model": name, "identity": name, "concurrency": concurrency,
                              "max_attempts": max_attempts, "retry_max_time": 60.0, "connect_timeout": 5.0,
                              "read_timeout": read_timeout, "timeout": 3 * read_timeout}
        if api_key_env:
            ep["api_key_env"] = api_key_env
        return ep

    return {
        "run": {"output_dir": str(run_dir), "seed": 3, "fsync_interval": 0.05},
        "datasets": [{"name": "general_qa", "path": str(data)}],
        "models": [{"name": name, **endpoint(name), "generation": {"temperature": 0.0, "max_tokens": 256}}
                   for name in (BASE, CAND)],
        "arena": {"baseline": BASE},
        "judge": {"name": JUDGE, **endpoint(JUDGE), "parse_retries": 2},
        "rating": {"rounds": rounds},
    }


def _toml(value: Any) -> str:
    """A TOML inline value (enough for config_dict's output)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def to_toml(data: dict[str, Any]) -> str:
    """A TOML document: tables and arrays of tables for dicts and lists of dicts, inline values else."""
    head, tables = [], []
    for k, v in data.items():
        if isinstance(v, dict):
            tables += [f"[{_toml(k)}]", *(f"{_toml(kk)} = {_toml(vv)}" for kk, vv in v.items()), ""]
        elif isinstance(v, list) and v and all(isinstance(i, dict) for i in v):
            for item in v:
                tables += [f"[[{_toml(k)}]]", *(f"{_toml(kk)} = {_toml(vv)}" for kk, vv in item.items()), ""]
        else:
            head.append(f"{_toml(k)} = {_toml(v)}")
    return "\n".join([*head, "", *tables])


# The default backoff (0.5 s doubling up to 60 s) lets one unlucky request that met six faults in a row
# sleep half a minute; the tests keep every attempt and the same policy shape, with a faster clock.
FAST_BACKOFF = {"base_delay": 0.05, "max_delay": 1.0}


def fast_backoff(cfg: RunConfig) -> RunConfig:
    def ep(e: Endpoint) -> Endpoint:
        return replace(e, retry=replace(e.retry, **FAST_BACKOFF))

    return replace(cfg, models=tuple(replace(m, endpoint=ep(m.endpoint)) for m in cfg.models),
                   judge=replace(cfg.judge, endpoint=ep(cfg.judge.endpoint)))


def run_config(urls: dict[str, str], run_dir: Path, data: Path, **kw: Any) -> RunConfig:
    return fast_backoff(config_from_dict(config_dict(urls, run_dir, data, **kw), source="<reliability>"))


def write_config(path: Path, urls: dict[str, str], run_dir: Path, data: Path, **kw: Any) -> Path:
    path.write_bytes(orjson.dumps(config_dict(urls, run_dir, data, **kw), option=orjson.OPT_INDENT_2))
    return path


# ------------------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoints:
    """The records of one run folder, read line by line from the files (not through the store)."""

    lines: dict[str, list[tuple[bytes, dict[str, Any]]]]
    bad_lines: dict[str, int]

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [r for _, r in self.lines.get(kind, [])]

    def by_key(self, kind: str) -> dict[bytes, dict[str, Any]]:
        return dict(self.lines.get(kind, []))

    def duplicated_keys(self) -> dict[str, int]:
        """Kind -> number of keys stored more than once."""
        out = {}
        for kind, items in self.lines.items():
            counts = Counter(k for k, _ in items)
            out[kind] = sum(1 for c in counts.values() if c > 1)
        return out


def read_checkpoints(run_dir: Path) -> Checkpoints:
    lines: dict[str, list[tuple[bytes, dict[str, Any]]]] = {}
    bad: dict[str, int] = {}
    folder = run_dir / "checkpoints"
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        items = lines.setdefault(path.stem, [])
        with path.open("rb") as fh:
            for raw in fh:
                parsed = parse_line(raw) if raw.endswith(b"\n") else None
                if parsed is None:
                    bad[path.stem] = bad.get(path.stem, 0) + 1
                    continue
                key, body = parsed
                items.append((key, orjson.loads(body)))
    return Checkpoints(lines, bad)


def checkpoint_count(run_dir: Path) -> int:
    """Complete lines in the run folder's checkpoint files (cheap enough to poll)."""
    total = 0
    folder = run_dir / "checkpoints"
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(folder):
            if name.endswith(".jsonl"):
                with contextlib.suppress(FileNotFoundError), open(folder / name, "rb") as fh:
                    total += fh.read().count(b"\n")
    return total


def verdicts(ck: Checkpoints) -> dict[bytes, str]:
    """Judgment content key -> verdict label, for the judgments that hold one."""
    return {k: r["verdict"] for k, r in ck.lines.get("judgments", []) if r.get("verdict") is not None}


def answers(ck: Checkpoints) -> dict[bytes, str]:
    return {k: r["answer"] for k, r in ck.lines.get("generations", [])}


def usable_200(stats: dict[str, Any]) -> int:
    """200 answers the simulator meant as answers (not its malformed bodies, empty choices, garbage)."""
    broken = sum(stats["faults"].get(k, 0) for k in ("malformed", "no_choices", "bad_verdict"))
    return int(stats["status"].get("200", 0)) - broken


def file_digests(folder: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under ``folder`` (small run folders only)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def threaded_sim(config: SimConfig) -> Iterator[tuple[str, Callable[[], dict[str, Any]]]]:
    """The simulator on its own event loop in a thread: for code that runs its own loop in this process
    (``cli.main``) or in a child process. Yields the base URL and a function returning the stats."""
    app = make_app(config)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def stats() -> dict[str, Any]:
        return asyncio.run_coroutine_threadsafe(_snapshot(app), loop).result(10)

    try:
        yield url, stats
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


async def _snapshot(app: web.Application) -> dict[str, Any]:
    return app[SIM_KEY].stats.snapshot()


def run_cli(*args: str) -> tuple[int, str, str]:
    """``cli.main`` in this process (the CLI's own code path without an interpreter start): (status,
    stdout, stderr)."""
    from arena_engine import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """Exit status 2 and exactly one line on stderr, 'arena-engine: error: ...', holding each needle."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("arena-engine: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a third-party server to take)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as r:
        data: dict[str, Any] = orjson.loads(r.read())
    return data
