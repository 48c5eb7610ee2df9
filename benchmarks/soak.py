"""Soak: arenas back to back for N minutes at 1,000+ requests/s through the simulator's fault mix.

The simulator runs in its own process (SimProcess): 5 ms latency, every fault mode at once (429 with
Retry-After, 500/502/503, resets, hangs cut by a 1 s read timeout, malformed bodies, empty choices,
garbage verdicts). This process runs the library's Arena, round after round, each round on its own
freshly generated queries (distinct request bodies) in its own run folder, as a long-lived service
would, until the time is up. RSS is sampled every second.

Why rounds: one arena keeps a small row per game (and per request latency) until it rates them at the
end, so within one arena memory grows with the results by design (about 0.3-0.5 kB per query). A leak
shows as growth from round to round, measured two ways, last round against the first round after
warm-up (round 1 includes numba's compiles); both must stay under the bar:

- settled: RSS after the round's objects are dropped and gc.collect() has run (what the process keeps
  between rounds: a leak grows it by what it keeps);
- median: the median of the round's RSS samples (1 s apart) while it runs.

The peak sample is printed too but is not the figure: one 1 s sample of a round that allocates and frees
tens of MB swings by +-20 MB from round to round with no change in live memory.

After each round the run folder's checkpoint files are read back line by line and compared with the
simulator's counters:

- lost: request bodies the simulator answered with a usable 200 (not one of its deliberately broken
  ones) at least once, whose record is not in the checkpoints (bar: 0);
- duplicated: keys stored twice in a checkpoint file, plus requests the simulator answered 200 again
  after a usable answer that the client had received (bar: 0 and 0);
- not received: 200s the simulator counted (it counts when its handler returns, before the client has
  read anything) for attempts the client then timed out on, so it sent the body again and paid for a
  second 200. Counted apart and shown, not judged: no record can exist for an answer the client never
  took, and the body's later answer is stored once. It is the number of duplicate 200s, at most the
  client's read timeouts on attempts the simulator finished (its watchdog's expirations minus the
  simulator's hangs, stalls and handlers cancelled by the client leaving).

Before that split, one such body showed on both lines ("lost 2, duplicated 0+2" in a loaded run was
two bodies answered twice): lost was every usable 200 minus the records. Those two came from the client
process not running for about a second: its read watchdog then timed out every attempt in flight on
waking, answers already in its socket included; the watchdog no longer counts time the loop did not
run (arena_engine.read_timeout), and three 1.5 s SIGSTOPs of this process in a round now cost nothing.
- every game ends decided or excluded with a reason; requests that failed for good have a failure record.

Per-body Retry-After violations are counted too; the endpoint-wide counter is not (three clients share
one simulator, and a 429 told to one client says nothing to the others).

    python benchmarks/soak.py [--minutes 10] [--queries-per-round 12000] [--concurrency 128]
"""

from __future__ import annotations

import argparse
import gc
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson

from arena_engine.config import config_from_dict
from arena_engine.pipeline import Arena, ArenaResults
from arena_engine.sim import Faults, Latency, SimConfig, SimModel
from arena_engine.sim.process import SimProcess
from arena_engine.store.frame import parse_line

MODELS = (("soak-base", 0.0), ("soak-cand", 0.7))
JUDGE = "soak-judge"
FAULTS = Faults(
    rate_429=0.02, retry_after="both", retry_after_s=0.02,
    rate_500=0.005, rate_502=0.005, rate_503=0.01,
    rate_reset=0.005, rate_hang=0.002, hang_seconds=30.0,
    rate_malformed=0.005, rate_no_choices=0.001,
    rate_bad_verdict=0.02,
)
RSS_BAR = 0.10


def rss_mb() -> float:
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    """RSS every ``interval`` seconds, tagged with the round running at the time."""

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__(daemon=True, name="rss sampler")
        self.interval = interval
        self.round = 0
        self.samples: list[tuple[float, int, float]] = []
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.samples.append((time.monotonic() - self._t0, self.round, rss_mb()))

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def peak(self, round_no: int) -> float:
        return max((r for _, n, r in self.samples if n == round_no), default=float("nan"))

    def median(self, round_no: int) -> float:
        values = [r for _, n, r in self.samples if n == round_no]
        return statistics.median(values) if values else float("nan")


@dataclass
class Round:
    number: int
    queries: int
    seconds: float
    requests: int
    records: int
    lost: int
    duplicated_keys: int
    duplicate_200: int  # answered 200 again although the client had taken the earlier answer
    not_received: int  # duplicate 200s after the client timed out on the earlier one (not judged)
    retry_after_violations: int
    games: int
    request_seconds: float  # first to last request the simulator saw
    cpu_us: float  # this process's CPU per request
    excluded: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    rss_settled: float = float("nan")  # MB after the round's objects are gone and gc.collect() ran


def write_round_dataset(folder: Path, round_no: int, n: int) -> None:
    """Distinct questions per round (so each round's request bodies are new to the simulator)."""
    folder.mkdir(parents=True)
    half = n // 2
    (folder / "arena.jsonl").write_bytes(b"".join(
        orjson.dumps({"query": f"Round {round_no}, question {i}: how would you approach topic {i % 97}?"}) + b"\n"
        for i in range(half)))
    (folder / "example.jsonl").write_bytes(b"".join(
        orjson.dumps({"query": f"Round {round_no}, fact {i}?", "response": f"Fact {i} is {i * 7}."}) + b"\n"
        for i in range(n - half)))


@dataclass
class Readback:
    """What the checkpoint files hold, counted line by line (no record is kept)."""

    generations: int = 0
    verdicts: int = 0  # judgments with a verdict
    failures: int = 0
    failures_without_reason: int = 0
    duplicated_keys: int = 0


def read_checkpoints(run_dir: Path) -> Readback:
    """Stream the run folder's checkpoint files; count records, keys stored twice and bare failures."""
    out = Readback()
    for path in sorted((run_dir / "checkpoints").glob("*.jsonl")):
        kind = path.stem
        keys: set[bytes] = set()
        with path.open("rb") as fh:
            for raw in fh:
                parsed = parse_line(raw)
                if parsed is None:
                    raise SystemExit(f"soak: damaged checkpoint line in {path}")
                key, body = parsed
                if key in keys:
                    out.duplicated_keys += 1
                keys.add(key)
                if kind == "generations":
                    out.generations += 1
                elif kind == "judgments":
                    out.verdicts += orjson.loads(body).get("verdict") is not None
                elif kind == "failures":
                    out.failures += 1
                    out.failures_without_reason += not orjson.loads(body).get("error")
    return out


def split_duplicate_200(stats: dict[str, Any], client_timeouts: int) -> tuple[int, int]:
    """(duplicate 200s the client had received, duplicate 200s after a client timeout on the earlier
    answer). A read timeout on an attempt the simulator did not hang, stall or see abandoned mid-handler
    is one whose answer the simulator finished: at most that many duplicates are "not received"."""
    status = stats["status"]
    unfinished = sum(int(status.get(k, 0)) for k in ("hang_abandoned", "stall_abandoned", "client_gone"))
    dup = int(stats["duplicate_200"])
    not_received = min(dup, max(0, client_timeouts - unfinished))
    return dup - not_received, not_received


def check_round(results: ArenaResults, back: Readback, queries: int) -> tuple[int, Counter[str]]:
    """Every game once, decided or excluded with a reason; returns (games, excluded reasons)."""
    keys = Counter((g.dataset, g.subset, g.query_id, g.candidate, g.candidate_is_a) for g in results.games)
    if len(keys) != 2 * queries or max(keys.values()) != 1:
        raise SystemExit(f"soak: {len(results.games)} games for {queries} queries ({len(keys)} distinct)")
    excluded: Counter[str] = Counter()
    for g in results.games:
        if g.outcome is None:
            if not g.reason:
                raise SystemExit(f"soak: game excluded without a reason: {g}")
            excluded[g.reason.split(":", 1)[0]] += 1
    if back.failures_without_reason:
        raise SystemExit(f"soak: {back.failures_without_reason} failure records without their reason")
    return len(results.games), excluded


async def run_round(url: str, root: Path, round_no: int, queries: int, concurrency: int) -> tuple[ArenaResults, int]:
    """The round's results and its clients' read timeouts (attempts the read watchdog cut)."""
    data = root / f"data-{round_no}" / "soak"
    write_round_dataset(data, round_no, queries)

    def endpoint(name: str) -> dict[str, Any]:
        return {"name": name, "model": name, "api_url": url, "concurrency": concurrency, "max_attempts": 8,
                "read_timeout": 1.0, "timeout": 5.0, "retry_max_time": 120.0}

    cfg = config_from_dict({
        "run": {"output_dir": str(root / f"run-{round_no}"), "seed": round_no, "fsync_interval": 1.0},
        "datasets": [{"name": "soak", "path": str(data)}],
        "models": [{**endpoint(m), "generation": {"temperature": 0.0, "max_tokens": 32}} for m, _ in MODELS],
        "judge": endpoint(JUDGE),
        "rating": {"rounds": 200},
    }, source="<soak>")
    async with Arena(cfg) as arena:
        results = await arena.run()
        # private: the per-client watchdog counter is not part of the library's API
        timeouts = sum(c._watchdog.expired for c in arena.clients.values())
    return results, timeouts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="start rounds until this much time has passed")
    ap.add_argument("--queries-per-round", type=int, default=12000)
    ap.add_argument("--concurrency", type=int, default=128, help="per endpoint")
    ap.add_argument("--latency", type=float, default=0.005, help="simulated latency in seconds")
    a = ap.parse_args()
    logging.getLogger("arena_engine").setLevel(logging.ERROR)  # one warning per failed request is noise here

    backend: dict[str, Any] = {}
    try:
        import uvloop  # noqa: F401

        backend = {"use_uvloop": True}
    except ImportError:
        pass
    sim_cfg = SimConfig(
        models=tuple(SimModel(m, quality=q) for m, q in MODELS) + (SimModel(JUDGE, judge=True),),
        seed=5, latency=Latency("fixed", a.latency), faults=FAULTS,
    )
    sampler = RssSampler()
    rounds: list[Round] = []
    deadline = time.monotonic() + 60 * a.minutes
    print(f"soak: {a.minutes:g} min, {a.queries_per_round} queries/round, concurrency {a.concurrency}/endpoint, "
          f"latency {a.latency * 1000:g} ms, loop {'uvloop' if backend else 'asyncio'}; RSS at start {rss_mb():.0f} MB",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="arena-soak-") as tmp, SimProcess(sim_cfg) as sim:
        root = Path(tmp)
        sampler.start()
        n = 0
        t_start = time.monotonic()
        while n == 0 or time.monotonic() < deadline:
            n += 1
            sampler.round = n
            sim.reset_stats()  # per-round counters; also frees the simulator's per-body table
            t0, cpu0 = time.monotonic(), time.process_time()
            results, timeouts = anyio.run(run_round, sim.url, root, n, a.queries_per_round, a.concurrency,
                                backend_options=backend)
            seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
            stats = sim.stats()
            window = max(stats["last_request"].values()) - min(stats["first_request"].values())
            back = read_checkpoints(root / f"run-{n}")
            games, excluded = check_round(results, back, a.queries_per_round)
            stored = back.generations + back.verdicts
            dup_200, not_received = split_duplicate_200(stats, timeouts)
            r = Round(n, a.queries_per_round, seconds, stats["requests"], stored, stats["answered_bodies"] - stored,
                      back.duplicated_keys, dup_200, not_received, stats["retry_after_violations"], games, window,
                      1e6 * cpu / max(1, stats["requests"]), excluded, back.failures, stats["faults"])
            rounds.append(r)
            del results
            shutil.rmtree(root / f"run-{n}")
            shutil.rmtree(root / f"data-{n}")
            gc.collect()
            r.rss_settled = rss_mb()
            print(f"round {n}: {r.requests / window:,.0f} req/s while sending ({r.requests:,} requests in "
                  f"{window:.1f} s; round {seconds:.1f} s), client CPU {r.cpu_us:.0f} us/request, "
                  f"{r.records:,} records, lost {r.lost}, duplicated {r.duplicated_keys}+{r.duplicate_200}, "
                  f"200s not received {r.not_received}, "
                  f"failed {r.failures}, excluded {dict(r.excluded)}, RSS settled {r.rss_settled:.0f} MB, "
                  f"median {sampler.median(n):.0f} MB, peak {sampler.peak(n):.0f} MB",
                  flush=True)
        total_s = time.monotonic() - t_start
    sampler.stop()

    requests = sum(r.requests for r in rounds)
    records = sum(r.records for r in rounds)
    lost = sum(r.lost for r in rounds)
    duplicated = sum(r.duplicated_keys + r.duplicate_200 for r in rounds)
    not_received = sum(r.not_received for r in rounds)
    violations = sum(r.retry_after_violations for r in rounds)
    faults: Counter[str] = Counter()
    for r in rounds:
        faults.update(r.faults)
    warm = 2 if len(rounds) >= 3 else 1
    last = len(rounds)
    settled_warm, settled_end = rounds[warm - 1].rss_settled, rounds[-1].rss_settled
    median_warm, median_end = sampler.median(warm), sampler.median(last)
    peak_warm, peak_end = sampler.peak(warm), sampler.peak(last)
    growth_settled = settled_end / settled_warm - 1
    growth_median = median_end / median_warm - 1
    growth = max(growth_settled, growth_median)
    print()
    print(f"duration:                {total_s / 60:.1f} min, {len(rounds)} rounds of {a.queries_per_round} queries")
    sending = sum(r.request_seconds for r in rounds)
    rate = requests / sending
    print(f"throughput:              {rate:,.0f} requests/s at the server while sending ({requests:,} incl. "
          f"retries in {sending:.0f} s); {requests / total_s:,.0f}/s and {records / total_s:,.0f} records/s "
          "over the whole time (with rating, checks and dataset writing between rounds)")
    print(f"client CPU per request:  {sum(r.cpu_us * r.requests for r in rounds) / requests:.0f} us "
          "(this process; the simulator's process is separate)")
    print(f"faults injected:         {dict(sorted(faults.items()))}")
    print(f"RSS settled (after gc):  {settled_warm:.0f} MB (round {warm}) -> {settled_end:.0f} MB (round {last}), "
          f"{100 * growth_settled:+.1f}%")
    print(f"RSS median in round:     {median_warm:.0f} MB (round {warm}) -> {median_end:.0f} MB (round {last}), "
          f"{100 * growth_median:+.1f}%")
    print(f"RSS peak sample:         {peak_warm:.0f} MB (round {warm}) -> {peak_end:.0f} MB (round {last}), "
          f"{100 * (peak_end / peak_warm - 1):+.1f}%  (one sample; shown, not judged)")
    print(f"RSS growth:              {100 * growth:+.1f}%, the larger of settled and median  "
          f"(bar: < {100 * RSS_BAR:.0f}%)")
    print("RSS settled per round (MB): " + " ".join(f"{r.rss_settled:.0f}" for r in rounds))
    print(f"lost records:            {lost}  (bar: 0)")
    print(f"duplicated records:      {duplicated}  (bar: 0)")
    print(f"200s not received:       {not_received}  (the client timed out on them and paid for the body again; "
          "shown, not judged)")
    print(f"Retry-After violations:  {violations} (per request body)")
    print("RSS samples (s, round, MB): " + " ".join(f"{t:.0f}/{n}/{m:.0f}" for t, n, m in sampler.samples[::10]))
    ok = rate >= 1000 and growth < RSS_BAR and lost == 0 and duplicated == 0 and violations == 0
    print("soak:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
