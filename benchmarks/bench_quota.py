"""A whole `arena-engine run` against llmock's per-key quota, which the config does not tell the client.

    python benchmarks/bench_quota.py                         # issue 18's bar: rpm 600, 200 queries
    python benchmarks/bench_quota.py --first-try-429 --queries 50   # a 429 on every first try

llmock 0.2.2 (the `test` extra) runs with `--rpm R`: a bucket of R requests per minute per API key,
full at start, refilled continuously; every answer carries `x-ratelimit-limit/remaining/reset-*` and a
refused request gets a 429 with `retry-after-ms`. Each endpoint (baseline, 2 candidates, judge) has
its own key, so each has its own quota of R per minute. The judge's model is scripted to answer
`[[A=B]]`, so every verdict parses (and agrees across the two orders, as the judge gate wants).

With `--first-try-429` a small proxy in front of llmock answers the first attempt of every request
body with a 429 (`retry-after-ms: 60`, no quota headers) and forwards the retries.

Arrivals are counted at the server side: llmock's journal (`/_llmock/requests`), or the proxy's own
log with `--first-try-429`. Printed: exit code, wall time and its ratio to the quota's ideal time (the
busiest endpoint's requests / its per-second share), failed calls, 429s, the most arrivals at one
endpoint in any 1 s (sliding and per clock second) against 1.5x the per-second share, the most in any
6 s against 1.2x the paced count, llmock's verdict, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
JUDGE = "quota-judge"
BASELINE = "quota-base"
CANDIDATES = ("quota-cand-a", "quota-cand-b")
MODELS = (BASELINE, *CANDIDATES)
VERDICT_TEXT = "Both answers are equally complete and careful. My final verdict is: [[A=B]]"
FIRST_TRY_WAIT_MS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, body: Any = None, *, timeout: float = 30) -> Any:
    data = None if body is None else orjson.dumps(body)
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return orjson.loads(r.read())


@contextlib.contextmanager
def llmock_server(rpm: int) -> Iterator[str]:
    """`llmock serve --rpm RPM` on a free 127.0.0.1 port, the judge scripted to answer `[[A=B]]`;
    yields its base URL (http://127.0.0.1:PORT). Killed on exit."""
    last_error = ""
    for _ in range(3):  # the port is picked free, but another process may take it first
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmock.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--rpm", str(rpm), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                http_json(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        if proc.poll() is None and time.monotonic() < deadline:
            break
        proc.kill()
        _, err = proc.communicate()
        last_error = err.decode(errors="replace")[-2000:]
    else:
        raise RuntimeError(f"llmock did not start: {last_error}")
    try:
        http_json(f"{base}/_llmock/scenario", {"behaviors": [
            {"type": "reply", "text": VERDICT_TEXT, "times": None, "match": {"model": JUDGE}}]})
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@dataclass
class Arrival:
    at: float  # seconds, the server's clock
    model: str
    status: int


@dataclass
class FirstTry429Proxy:
    """Answers the first attempt of every request body with a 429 (`retry-after-ms`), forwards the
    rest to `upstream`, and logs every arrival. Runs its own event loop in a thread."""

    upstream: str
    port: int = 0
    arrivals: list[Arrival] = field(default_factory=list)
    _seen: set[bytes] = field(default_factory=set)

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        import aiohttp
        from aiohttp import web

        ready = threading.Event()
        loop = asyncio.new_event_loop()
        state: dict[str, Any] = {}

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            at = time.monotonic()
            try:
                model = str(orjson.loads(body).get("model"))
            except (orjson.JSONDecodeError, AttributeError):
                model = "?"
            digest = hashlib.sha256(body).digest()
            if digest not in self._seen:
                self._seen.add(digest)
                self.arrivals.append(Arrival(at, model, 429))
                return web.json_response(
                    {"error": {"message": "Rate limit reached (first try).", "type": "requests",
                               "code": "rate_limit_exceeded"}},
                    status=429, headers={"retry-after-ms": str(FIRST_TRY_WAIT_MS)})
            headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
            async with state["session"].post(self.upstream + request.path, data=body, headers=headers) as up:
                raw = await up.read()
                self.arrivals.append(Arrival(at, model, up.status))
                keep = {k: v for k, v in up.headers.items()
                        if k.lower().startswith(("x-ratelimit-", "retry-after", "content-type"))}
                return web.Response(body=raw, status=up.status, headers=keep)

        async def main() -> None:
            state["session"] = aiohttp.ClientSession()
            app = web.Application()
            app.router.add_post("/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
            state["stop"] = asyncio.Event()
            ready.set()
            await state["stop"].wait()
            await runner.cleanup()
            await state["session"].close()

        def serve() -> None:
            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        if not ready.wait(30):
            raise RuntimeError("the proxy did not start")
        try:
            yield f"http://127.0.0.1:{self.port}"
        finally:
            loop.call_soon_threadsafe(state["stop"].set)
            thread.join(10)


def write_config(tmp: Path, base: str, queries: int, concurrency: int, rpm: int | None = None) -> Path:
    """A dataset of `queries` queries and a TOML config: 3 models + judge at `base`, each with its own
    API key (llmock's quota is per key) and no rpm/tpm unless `rpm` is given: the client is not told
    the quota."""
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    with open(data / "qa.jsonl", "wb") as f:
        for i in range(queries):
            f.write(orjson.dumps({"query": f"Question {i}: explain topic number {i} in two sentences."}) + b"\n")
    lines = [
        "[run]", f'output_dir = "{tmp / "run"}"', "seed = 1", "",
        "[[datasets]]", 'name = "qa"', f'path = "{data}"', "",
    ]

    def endpoint(name: str) -> list[str]:
        return [f'name = "{name}"', f'model = "{name}"', f'api_url = "{base}/v1"',
                f'api_key_env = "{key_env(name)}"', f"concurrency = {concurrency}",
                *([f"rpm = {rpm}"] if rpm is not None else []), "generation = { max_tokens = 64 }", ""]

    for name in MODELS:
        lines += ["[[models]]", *endpoint(name)]
    lines += ["[arena]", f'baseline = "{BASELINE}"', "", "[judge]", *endpoint(JUDGE),
              "[rating]", "rounds = 50", ""]
    path = tmp / "quota.toml"
    path.write_text("\n".join(lines))
    return path


def key_env(name: str) -> str:
    return "QUOTA_KEY_" + name.replace("-", "_").upper()


def run_cli(config: Path, timeout: float) -> tuple[int, float, str]:
    """`arena-engine run CONFIG --quiet`: (exit code, seconds, output)."""
    env = os.environ | {key_env(n): f"sk-quota-{n}" for n in (*MODELS, JUDGE)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "arena_engine.cli", "run", str(config), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=timeout, check=False)
    return proc.returncode, time.monotonic() - t0, proc.stdout + proc.stderr


def llmock_arrivals(base: str) -> list[Arrival]:
    records = http_json(f"{base}/_llmock/requests")["requests"]
    return [Arrival(float(r["started_at"]), str(r.get("model")), int(r["status"])) for r in records
            if str(r.get("path", "")).endswith("/chat/completions")]


def max_in_window(times: Sequence[float], width: float) -> int:
    """The most arrivals in any window [t, t + width) (sliding: every window starting at an arrival)."""
    ts = sorted(times)
    return max((bisect.bisect_left(ts, t + width) - i for i, t in enumerate(ts)), default=0)


def max_per_clock_second(times: Sequence[float]) -> int:
    counts: dict[int, int] = defaultdict(int)
    for t in times:
        counts[int(t)] += 1
    return max(counts.values(), default=0)


@dataclass
class QuotaRun:
    exit_code: int
    seconds: float
    output: str
    rpm: int
    arrivals: list[Arrival]
    verdict: dict[str, Any]

    @property
    def share(self) -> float:
        """The quota's per-second share of one key."""
        return self.rpm / 60.0

    def by_model(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = defaultdict(list)
        for a in self.arrivals:
            out[a.model].append(a.at)
        return dict(out)

    def ideal_seconds(self) -> float:
        """The time the quota allows for the busiest endpoint's arrivals at its per-second share."""
        return max(len(ts) for ts in self.by_model().values()) / self.share

    def status_counts(self) -> dict[int, int]:
        counts: dict[int, int] = defaultdict(int)
        for a in self.arrivals:
            counts[a.status] += 1
        return dict(counts)

    def worst_second(self) -> int:
        return max(max_in_window(ts, 1.0) for ts in self.by_model().values())

    def worst_window(self, width: float) -> int:
        return max(max_in_window(ts, width) for ts in self.by_model().values())


def run_quota(rpm: int, queries: int, *, concurrency: int = 16, first_try_429: bool = False,
              timeout: float = 900, tmp: Path | None = None, rpm_in_config: bool = False) -> QuotaRun:
    """One whole `arena-engine run` against `llmock serve --rpm RPM` (through the first-try-429 proxy
    if asked); the arrivals are the server side's."""
    with contextlib.ExitStack() as stack:
        if tmp is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-quota-")))
        base = stack.enter_context(llmock_server(rpm))
        proxy = None
        if first_try_429:
            proxy = FirstTry429Proxy(base)
            target = stack.enter_context(proxy.running())
        else:
            target = base
        config = write_config(tmp, target, queries, concurrency, rpm if rpm_in_config else None)
        code, seconds, output = run_cli(config, timeout)
        arrivals = proxy.arrivals if proxy is not None else llmock_arrivals(base)
        verdict = http_json(f"{base}/_llmock/verdict")
    return QuotaRun(code, seconds, output, rpm, arrivals, verdict)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rpm", type=int, default=600, help="llmock's quota per API key (default 600)")
    ap.add_argument("--queries", type=int, default=200, help="queries (default 200: 600 answers, 800 judgments)")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrency per endpoint (default 16)")
    ap.add_argument("--first-try-429", action="store_true", help="a 429 on the first attempt of every request")
    ap.add_argument("--rpm-in-config", action="store_true", help="give the config the quota (rpm = --rpm)")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()
    run = run_quota(args.rpm, args.queries, concurrency=args.concurrency, first_try_429=args.first_try_429,
                    rpm_in_config=args.rpm_in_config)
    load1 = os.getloadavg()
    ideal = run.ideal_seconds()
    per_model = {m: len(ts) for m, ts in sorted(run.by_model().items())}
    v = run.verdict
    print(f"rpm {args.rpm} per key, {args.queries} queries, concurrency {args.concurrency}"
          f"{', 429 on every first try' if args.first_try_429 else ''}"
          f"{', rpm in the config' if args.rpm_in_config else ', the config gives no rpm'}")
    print(f"exit code {run.exit_code}; wall {run.seconds:.1f} s; ideal {ideal:.1f} s "
          f"(busiest endpoint at {run.share:g}/s); ratio {run.seconds / ideal:.3f}")
    print(f"arrivals per endpoint {per_model}; statuses {run.status_counts()}")
    print(f"worst 1 s (sliding) {run.worst_second()} vs bar {1.5 * run.share:g}; "
          f"worst clock second {max(max_per_clock_second(ts) for ts in run.by_model().values())}")
    print(f"worst 6 s {run.worst_window(6.0)} vs paced {6 * run.share:g} (bar {1.2 * 6 * run.share:g})")
    print(f"llmock verdict: passed={v['passed']} calls={v['calls']} attempts={v['attempts']} "
          f"errors={v['errors']} warnings={v['warnings']} {[f['code'] for f in v['findings']][:10]}")
    tail = [line for line in run.output.splitlines() if "fail" in line.lower() or "error" in line.lower()]
    if tail:
        print("run output (failures):", *tail[:10], sep="\n  ")
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
