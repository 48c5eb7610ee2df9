"""What each CLI command does, as async functions over the library (the argument parsing is in cli.py)."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from .config import RunConfig, load_config
from .console import show_progress
from .errors import ArenaError, unwrap
from .from_store import results_of_folder
from .results import ArenaResults
from .run import Arena
from .runfolder import fresh_dir, load_run_config

if TYPE_CHECKING:
    from .batch.session import BatchSession
    from .leaderboard import Board

log = logging.getLogger(__name__)

T = TypeVar("T")
EXIT_OK, EXIT_FAILURES, EXIT_INTERRUPTED = 0, 1, 130


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; in-flight writes were finished and the run folder closed cleanly."""


async def _until_signal(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn``; on SIGINT/SIGTERM cancel it (cleanup runs shielded) and raise :class:`Interrupted`.

    The handlers stay installed until ``fn`` has finished cleaning up, and once interrupted the process
    ignores both signals on its way out: a repeated signal (an impatient Ctrl-C, a supervisor's second
    SIGTERM) never meets the default handler, which would end the process before the run folder is
    closed, with status -15 and no message. An :class:`ArenaError` of ``fn`` (a locked run folder, a bad
    dataset line) is raised as itself, not inside an exception group.
    """
    result: list[T] = []
    errors: list[Exception] = []
    interrupted = False
    body_scope = anyio.CancelScope()
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal interrupted
                async for _ in signals:
                    interrupted = True
                    body_scope.cancel()

            async def body() -> None:
                try:
                    with body_scope:
                        result.append(await fn())
                except Exception as exc:  # re-raised below, outside this task group's exception group
                    errors.append(exc)
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            tg.start_soon(body)
    if errors:
        raise unwrap(errors[0])
    if interrupted:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    if interrupted or not result:
        raise Interrupted()
    return result[0]


async def run_with_progress(config: RunConfig, *, quiet: bool, offline: bool = False,
                            retry_excluded: bool = False, progress: str = "auto") -> ArenaResults:
    if not offline:
        from .batch.session import uses_batches

        if uses_batches(config):  # endpoints in batch mode: the arena runs in passes between batches
            return await run_batched(
                config, lambda session: Arena(config, retry_excluded=retry_excluded, batch=session),
                lambda arena: show_progress(arena, quiet=quiet, mode=progress))
    async with Arena(config, offline=offline, retry_excluded=retry_excluded) as arena, anyio.create_task_group() as tg:
        tg.start_soon(lambda: show_progress(arena, quiet=quiet, mode=progress))
        results = await arena.run()
    return results


async def run_batched(config: RunConfig, open_arena: Callable[[BatchSession], Arena],
                      watch: Callable[[Arena], Coroutine[Any, Any, None]] | None = None) -> ArenaResults:
    """Run the arena in passes until a pass queues nothing (endpoints in batch mode; batch/session.py).

    Each pass sends the live requests whose inputs exist and queues the batch ones; between passes the
    due files are submitted and the batches in flight polled until one ends and its rows are in the
    checkpoints, which the next pass reads like live replies while the other batches keep running
    (``BatchSession.advance``). ``open_arena(session)`` returns the ``Arena`` of one pass; ``watch(arena)``
    (progress) runs beside each pass. Here, not in batch/, because it drives the pipeline, which stands
    above batch/."""
    from .batch.session import BatchSession

    session = BatchSession(config)
    while True:
        session.passes += 1
        async with open_arena(session) as arena:
            _give_back_memory()  # what opening the checkpoints left free
            if session.passes == 1:
                await session.settle(arena.store)  # chunks an earlier process left open
            if watch is not None:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch, arena)
                    results = await arena.run()
                    tg.cancel_scope.cancel()
            else:
                results = await arena.run()
            if session.idle:
                return results
            log.info("pass %d queued %d batch request(s)", session.passes, session.queued)
            await session.advance(arena.store)
        _give_back_memory()  # what the pass freed: its games, bodies and records


def _give_back_memory() -> None:
    """Return the C heap's free pages to the system between the passes of a batched run (glibc only).

    A pass frees most of what it built (a game per battle, request bodies, result rows), but glibc keeps
    freed small blocks in its heap, so each pass's peak added to the process's resident memory; this
    keeps a 200,000-request run under its 300 MB bar (benchmarks/bench_batch_memory.py)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
    if _LIBC and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


_LIBC: Any = None  # glibc, once looked up (False: not there)


def _judge_gate(boards: list[Board]) -> int:
    """Say on stderr what the judge's verdicts do not support (with or without --quiet: these are
    findings about the result, not progress); EXIT_FAILURES when the result is no usable ranking (a
    scope without a rated game, or an unsupported OVERALL ranking), else EXIT_OK."""
    from .leaderboard import gate_failures, reliability_warnings

    for line in reliability_warnings(boards):
        print(line, file=sys.stderr)
    failures = gate_failures(boards)
    for line in failures:
        print(f"arena-engine: {line}", file=sys.stderr)
    return EXIT_FAILURES if failures else EXIT_OK


def _finish(results: ArenaResults, quiet: bool) -> int:
    # the results' modules: imported after the run, so that none delays its first request
    from .report import write_reports
    from .report.tables import leaderboard_text

    paths = write_reports(results)
    print(leaderboard_text(results.boards))
    if not quiet:
        print("reports:", file=sys.stderr)
        for p in paths.values():
            print(f"  {p}", file=sys.stderr)
    if results.panel is not None:
        from .report.panel_report import panel_lines

        for line in panel_lines(results):
            print(line, file=sys.stderr)
    if results.stopping is not None:
        from .report.stop_report import stop_lines

        for line in stop_lines(results):
            print(line, file=sys.stderr)
    gate = _judge_gate(results.boards)
    from .report.json_report import batch_savings

    saved = batch_savings(results)
    if saved is not None:
        print(f"batch mode: cost {saved[0]:.4f} instead of {saved[1]:.4f} at live prices "
              f"(saved {saved[1] - saved[0]:.4f})", file=sys.stderr)
    for u in results.usage.values():
        if u.truncated:
            print(f"note: {u.truncated} of {u.records} answers of {u.name} were cut off by the completion budget "
                  "(finish_reason 'length'); raise max_tokens to let them finish", file=sys.stderr)
    if results.history.interrupted:
        print(f"note: {results.history.interrupted} earlier process(es) on this run folder ended without closing it; "
              "requests they had in flight were sent but not stored, so their cost is not known", file=sys.stderr)
    if results.failures:
        print(f"{results.failures} request(s) failed for good; rerun to retry them", file=sys.stderr)
    for line in results.failure_lines:
        print(f"  {line}", file=sys.stderr)
    if results.failures or results.failure_lines:  # failed, or not sent because an endpoint was down
        return EXIT_FAILURES
    return gate


async def demo(output: Path, queries: int, latency: float, seed: int, quiet: bool, progress: str = "auto") -> int:
    from .demo import demo_config, demo_sim_config, write_demo_dataset
    from .report.tables import report_table
    from .sim import SimServer

    data = write_demo_dataset(output / "data" / "general_qa", queries)

    async def body() -> ArenaResults:
        async with SimServer(demo_sim_config(seed=seed, latency=latency)) as sim:
            cfg = demo_config(sim.url, output, data, seed=seed)
            return await run_with_progress(cfg, quiet=quiet, progress=progress)

    try:
        results = await _until_signal(body)
    except Interrupted:
        print("arena-engine: interrupted; finished work is saved, rerun to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(report_table(results))
    print()
    return _finish(results, quiet)


async def run(config_path: Path, dry_run: bool, fresh: bool, quiet: bool, backend: str = "local",
              address: str | None = None, workers: int = 2, retry_excluded: bool = False,
              progress: str = "auto") -> int:
    cfg = load_config(config_path)
    if fresh:
        cfg = cfg.with_output_dir(fresh_dir(cfg.output_dir))
    if dry_run:
        from .plan import print_plan

        return await print_plan(cfg)
    if backend == "ray":
        from .batch.session import uses_batches
        from .distributed import run_on_ray

        if uses_batches(cfg):
            raise ArenaError("endpoints in mode = \"batch\" run on the local backend; rerun without --backend ray")

        async def body() -> ArenaResults:
            return await run_on_ray(cfg, address=address, workers=workers,
                                    progress=lambda watcher: show_progress(watcher, quiet=quiet, mode=progress))
    else:

        async def body() -> ArenaResults:
            return await run_with_progress(cfg, quiet=quiet, retry_excluded=retry_excluded, progress=progress)

    try:
        results = await _until_signal(body)
    except Interrupted:
        print("arena-engine: interrupted; finished work is saved, rerun to resume", file=sys.stderr)
        _say_batches_running(cfg)
        return EXIT_INTERRUPTED
    return _finish(results, quiet)


def _say_batches_running(cfg: RunConfig) -> None:
    """After an interruption: submitted batches keep running at the provider (and are paid); say so."""
    from .batch.ledger import FOLDER, LEDGER

    if not (cfg.output_dir / FOLDER / LEDGER).exists():
        return
    from .batch.ledger import Ledger

    open_ = [c for c in Ledger(cfg.output_dir).open_chunks() if c.batch_id is not None]
    if open_:
        print(f"arena-engine: {len(open_)} submitted batch(es) keep running at the provider (they are paid); "
              f"a rerun collects their results; `arena-engine batches {cfg.output_dir} --cancel` cancels them",
              file=sys.stderr)


async def report(run_dir: Path, rounds: int | None, write: bool, fmt: str = "text") -> int:
    from .report import write_reports
    from .report.formats import format_leaderboards

    cfg = load_run_config(run_dir)
    if rounds is not None:
        cfg = replace(cfg, rating=replace(cfg.rating, rounds=rounds))
    results = await anyio.to_thread.run_sync(results_of_folder, cfg)
    if results.missing:
        print(f"note: {results.missing} request(s) of this config were never answered; they are left out",
              file=sys.stderr)
    if write:
        paths = write_reports(results)
        for p in paths.values():
            print(p)
    else:
        print(format_leaderboards(results.boards, fmt), end="" if fmt != "text" else "\n")
    return _judge_gate(results.boards)


async def export(run_dir: Path, fmt: str, output: Path) -> int:
    """Write a run's games as a flat CSV, or in Arena-Hard-Auto's judgment format; no request is sent."""
    import orjson

    from .interop import arena_hard_rows, games_csv

    cfg = load_run_config(run_dir)
    results = await anyio.to_thread.run_sync(results_of_folder, cfg)
    try:
        if fmt == "games-csv":
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(games_csv(results.games), encoding="utf-8")
            print(output)
            return EXIT_OK
        folder = output / "model_judgment" / cfg.judge.name.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for model, rows in arena_hard_rows(results.games, baseline=cfg.baseline, judge=cfg.judge.name).items():
            path = folder / f"{model.replace('/', '_')}.jsonl"  # the rows keep the real name
            path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
            print(path)
    except OSError as exc:
        raise ArenaError(f"cannot write {output}: {exc.strerror or exc}") from None
    return EXIT_OK


def import_judgments(path: Path, source: str, baseline: str | None, fmt: str) -> int:
    """Rate judgments made by Arena-Hard-Auto or AlpacaEval; no request is sent."""
    from collections import Counter

    from .config import RatingConfig
    from .interop import ARENA_HARD_BASELINE, alpacaeval_games, arena_hard_games, models_of
    from .leaderboard import leaderboards
    from .report.formats import format_leaderboards

    if source == "arena-hard":
        base = baseline or ARENA_HARD_BASELINE
        games = arena_hard_games(path, baseline=base)
    else:
        games = alpacaeval_games(path)
        base = baseline or (Counter(g.opponent for g in games).most_common(1)[0][0] if games else "")
    if not games:
        raise ArenaError(f"{path}: no judgment between two different models found")
    names = models_of(games, base)
    if base not in {g.opponent for g in games} | {g.candidate for g in games}:
        raise ArenaError(f"{path}: the baseline {base!r} is in no game; name it with --baseline (models: "
                         f"{', '.join(n for n in names if n != base)})")
    boards = leaderboards(games, names, base, RatingConfig(), seed=0)
    print(format_leaderboards(boards, fmt), end="" if fmt != "text" else "\n")
    return _judge_gate(boards)


def sim(host: str, port: int, config: Path | None) -> int:
    from .demo import demo_sim_config
    from .sim import SimConfig, serve

    cfg = SimConfig.from_file(config) if config else demo_sim_config()

    def ready(url: str) -> None:
        print(url, flush=True)  # the first stdout line is the base URL (useful with --port 0)
        print(f"simulator on {url} (models: {', '.join(m.name for m in cfg.models)}); Ctrl-C stops",
              file=sys.stderr, flush=True)

    serve(cfg, host=host, port=port, ready=ready)
    return EXIT_OK


def import_evalscope(report_path: Path, dataset: Path | None = None, dataset_name: str | None = None) -> int:
    from collections import Counter

    from .datasets import iter_queries
    from .errors import ImportMismatchError
    from .evalscope_import import ImportIndex, load_evalscope_answers

    if dataset is None:
        answers = load_evalscope_answers(report_path)
        counts = Counter((a.model, a.dataset, a.subset) for a in answers)
        for (model, name, subset), n in sorted(counts.items()):
            print(f"{model}\t{name}\t{subset}\t{n} answers")
    else:  # check the rows against a dataset the way a run pairs them
        name = dataset_name or (dataset.parent.name if dataset.is_file() else dataset.name)
        answers = load_evalscope_answers(report_path, datasets=[name])
        index = ImportIndex.build(answers, iter_queries(dataset, dataset=name))
        counts = Counter((a.model, a.dataset, a.subset) for a in answers)
        unmatched = index.counts()
        for (model, name_, subset), n in sorted(counts.items()):
            print(f"{model}\t{name_}\t{subset}\t{n} answers\t{unmatched.get((name_, subset), 0)} match no query")
        for u in index.unmatched[:20]:
            print(u.message(), file=sys.stderr)
        if index.unmatched:
            raise ImportMismatchError(
                f"{len(index.unmatched)} of {index.rows} EvalScope row(s) match no query of {dataset} (listed above"
                f"{', the first 20' if len(index.unmatched) > 20 else ''}); a run would stop, or skip them with "
                "evalscope_mismatch = \"warn\"")
    print(f"{len(answers)} answers found; add `evalscope_report = \"{report_path}\"` to a [[models]] entry to battle them",
          file=sys.stderr)
    return EXIT_OK
