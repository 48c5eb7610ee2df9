"""The `arena-engine` command: a thin layer over the library.

Exit codes: 0 success; 1 the run finished but some requests failed for good (see the report), or the
judge's verdicts do not support the OVERALL ranking, or a scope rated no game (docs/rating.md);
2 a user error (bad config, dataset, arguments, missing API key, run folder in use); 130 interrupted
(finished work is saved; rerun to resume).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio

from .errors import ArenaError, unwrap
from .version import __version__

EXIT_OK, EXIT_FAILURES, EXIT_USER, EXIT_INTERRUPTED = 0, 1, 2, 130

EPILOG = """\
exit codes: 0 success; 1 finished, but some requests failed for good (listed in the report), or the
judge's verdicts do not support the OVERALL ranking, or a scope rated no game (see the warnings);
2 user error (config, dataset, arguments, missing API key, run folder in use); 130 interrupted
(everything finished is saved: rerun the same command to resume).
API keys are read from the environment variables that the config names with 'api_key_env'."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="arena-engine",
        description="Run LLM arena evaluations: candidates answer the same queries, a judge compares each "
        "answer with the baseline's in both orders, and the verdicts become win rates with confidence intervals "
        "that treat the query as the unit (docs/rating.md), Bradley-Terry/Elo ratings, leaderboards and reports.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"arena-engine {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=description, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks and debug logs")
        return sp

    d = add("demo", "run the built-in demo on a simulated endpoint",
            "Start a simulated OpenAI-compatible endpoint on 127.0.0.1, write a sample dataset, and run a whole "
            "arena on it: three simulated models answer, a simulated judge compares two candidates with the "
            "baseline in both orders, and the leaderboard and reports are written under --output. Rerunning "
            "on the same folder resumes.")
    d.add_argument("--output", type=Path, default=Path("outputs/demo"), help="folder for the dataset, run and "
                   "reports (default: outputs/demo)")
    d.add_argument("--queries", type=int, default=100, help="queries per subset (default: 100)")
    d.add_argument("--latency", type=float, default=0.01, help="simulated median latency in seconds (default: 0.01)")
    d.add_argument("--seed", type=int, default=0, help="seed of the simulator and the bootstrap (default: 0)")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.add_argument("--progress", choices=("auto", "rich", "plain", "none"), default="auto",
                   help="auto: live lines on a terminal, plain otherwise (default); rich: live lines; plain: a block of lines every 5 s while counts change; none: nothing (as --quiet)")

    r = add("run", "run (or resume) an arena from a config file",
            "Run the arena described by CONFIG (TOML or JSON). Rerunning the same config resumes: finished "
            "generations and judgments are reused, only the rest is sent.")
    r.add_argument("config", type=Path, help="the run config (.toml or .json)")
    r.add_argument("--dry-run", action="store_true", help="print the plan and send nothing: requests per endpoint, how many the run folder already holds, what is still to send and its cost, and each model's identity")
    r.add_argument("--fresh", action="store_true", help="start over in a new folder beside output_dir")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--progress", choices=("auto", "rich", "plain", "none"), default="auto",
                   help="auto: live lines on a terminal, plain otherwise (default); rich: live lines; plain: a block of lines every 5 s while counts change; none: nothing (as --quiet)")
    r.add_argument("--retry-excluded", action="store_true",
                   help="ask the judge again for the verdicts it answered unparseably (excluded games); the old "
                        "answers stay in the checkpoints, the new ones are used (local backend)")
    r.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: spread the queries over a Ray cluster's workers, "
                        "sharing each endpoint's rate limits (needs: pip install 'arena-engine[ray]')")
    r.add_argument("--address", help="with --backend ray: the cluster to join (e.g. ray://head:10001 or host:6379); "
                                     "default: start a local cluster")
    r.add_argument("--workers", type=int, default=2, help="with --backend ray: worker tasks (default: 2)")

    s = add("sim", "run the simulated OpenAI-compatible endpoint standalone",
            "Serve the simulator (models with latent quality, a judge, latency, fault injection, "
            "a server-side rate limit, counters at GET /sim/stats) until interrupted.")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (0 = any free port; default: 8000)")
    s.add_argument("--config", type=Path, help="simulator config (TOML or JSON); default: the demo's models")

    for name, what in (("report", "rebuild every report"), ("rate", "recompute the ratings and print the leaderboard")):
        sp = add(name, f"{what} of a run folder from its checkpoints, sending no request",
                 f"{what[0].upper() + what[1:]} of RUN_DIR from its checkpoints; no request is sent.")
        sp.add_argument("run_dir", type=Path, help="a run folder (the config's output_dir)")
        sp.add_argument("--rounds", type=int, help="bootstrap rounds, for interval = \"bootstrap\" and method = \"elo-online\" (default: the run's config)")
        if name == "rate":
            sp.add_argument("--format", choices=("text", "json", "csv", "markdown"), default="text",
                            help="text: leaderboard.txt's layout (default); json, csv, markdown: one row per "
                                 "model and scope with the win rate, the rating (Elo scale) and their intervals")

    i = add("import-evalscope", "list the answers of an EvalScope run's model",
            "Read one model's answers from an EvalScope run (a reports/<model> folder) and print what was "
            "found per dataset and subset. To battle them, point a model entry's 'evalscope_report' at the "
            "same folder in the config. With --dataset, also pair the answers with that dataset's queries "
            "by question text, as a run does, and list the rows that match no query (exit 2 if any).")
    i.add_argument("report_path", type=Path, help="an EvalScope outputs/<ts>/reports/<model> folder")
    i.add_argument("--dataset", type=Path, metavar="PATH",
                   help="a dataset folder (or .jsonl file) to check the answers against")
    i.add_argument("--dataset-name", metavar="NAME",
                   help="the dataset's name in the EvalScope run (default: the folder's name)")
    ij = add("import-judgments", "rate another tool's judgments (Arena-Hard-Auto, AlpacaEval), sending no request",
             "Read the judgments another tool made and print the leaderboards they give, rated as arena-engine "
             "rates its own games (both orders, strong verdicts 3 times, ties half; win rates and ratings with "
             "intervals). No request is sent. arena-hard: a model_judgment/<judge>/ folder or one of its "
             "<model>.jsonl files; alpacaeval: an annotations.json.")
    ij.add_argument("path", type=Path, help="the judgments: a folder or file (see above)")
    ij.add_argument("--from", dest="source", choices=("arena-hard", "alpacaeval"), required=True,
                    help="the tool that wrote them")
    ij.add_argument("--baseline", help="the baseline model (arena-hard: default gpt-4-0314, the judgments do not "
                                      "name it; alpacaeval: default the most common generator_1)")
    ij.add_argument("--format", choices=("text", "json", "csv", "markdown"), default="text",
                    help="output format, as for 'rate' (default: text)")
    ex = add("export", "write a run's judgments for other tools: a flat CSV of games, or Arena-Hard's format",
             "Write RUN_DIR's judged games, sending no request. games-csv: one row per game (dataset, subset, "
             "query_id, candidate, opponent, candidate_is_a, outcome -2..2 from the candidate's side, reason), "
             "for pandas. arena-hard: model_judgment/<judge>/<model>.jsonl files in Arena-Hard-Auto's format "
             "(battles against the baseline), which 'import-judgments --from arena-hard' reads back.")
    ex.add_argument("run_dir", type=Path, help="a run folder (the config's output_dir)")
    ex.add_argument("--format", choices=("games-csv", "arena-hard"), default="games-csv",
                    help="games-csv (default) or arena-hard")
    ex.add_argument("--output", type=Path, required=True,
                    help="games-csv: the CSV file to write; arena-hard: the folder to write model_judgment/ in")
    bt = add("batches", "list a run folder's provider batches and their status; --cancel cancels them",
             "List the batches of RUN_DIR's endpoints in mode = \"batch\" (docs/config.md): one line per input "
             "file (chunk) with its endpoint, request count, batch id and status, asked of the provider. Batches "
             "keep running at the provider after an interruption (they are paid); a rerun collects them. "
             "--cancel cancels every batch still running; a later run queues their unanswered requests again.")
    bt.add_argument("run_dir", type=Path, help="a run folder (the config's output_dir)")
    bt.add_argument("--cancel", action="store_true", help="cancel every batch that is still running")
    return p


class _Terminated(KeyboardInterrupt):
    """SIGTERM before a run installs its own handling: ends the command like Ctrl-C (exit 130).

    A subclass on purpose: when a bare KeyboardInterrupt passes through exec() of a string (dataclasses
    build their methods that way), CPython notes it as unhandled and, under `python -m`, ends the process
    by SIGINT at exit (-2) even though main() handled it. It checks the exact type, so a subclass is
    handled like Ctrl-C everywhere and exits with main()'s status."""


_sigterm_seen = False


def _note_sigterm(signum: int, frame: object) -> None:
    """SIGTERM while the modules import: noted, and acted on once they have. Raising in the middle of an
    import is not safe: library code that cleans up with a bare `except:` can swallow it (the run then
    went on to finish, now and then)."""
    global _sigterm_seen
    _sigterm_seen = True


def _terminate(signum: int, frame: object) -> None:
    """SIGINT or SIGTERM outside a run's own handling (before it starts, or in the instant after it hands
    the signals back): the command ends like Ctrl-C, and from here on both signals are ignored. A repeated
    signal must never meet a default handler on the way out: CPython puts SIG_DFL back as it finalizes,
    and a supervisor's second SIGTERM then ended the process with -15 after it had closed the folder."""
    ignore_signals()
    raise _Terminated


def ignore_signals() -> None:
    """Ignore SIGINT and SIGTERM for the rest of the process (an interrupted command on its way out)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def _on_sigterm(handler: Callable[[int, object], None], *, sigint: bool = False) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        if sigint:
            signal.signal(signal.SIGINT, handler)


def main(argv: Sequence[str] | None = None) -> int:
    global _sigterm_seen
    _sigterm_seen = False
    before = _handlers()
    _on_sigterm(_note_sigterm)
    try:
        return _main(argv)
    finally:
        if _handlers() != (signal.SIG_IGN, signal.SIG_IGN):  # an interrupted command ignores both to the end
            _restore(before)


def _handlers() -> tuple[object, object] | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


def _restore(handlers: tuple[object, object] | None) -> None:
    """Put back what an embedding process (a test, a notebook) had before main() ran."""
    if handlers is not None:
        for sig, handler in zip((signal.SIGINT, signal.SIGTERM), handlers, strict=True):
            if handler is not None:
                signal.signal(sig, handler)  # type: ignore[arg-type]


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        try:
            return _dispatch(args)
        except ExceptionGroup as group:  # a task group's wrapping (e.g. `report` on a bad dataset line)
            raise unwrap(group) from None
    except ArenaError as exc:
        if debug:
            traceback.print_exc()
        print(f"arena-engine: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        ignore_signals()
        print("arena-engine: interrupted; finished work is saved, rerun to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def _dispatch(args: argparse.Namespace) -> int:
    from . import commands
    from .run import loop_options

    _on_sigterm(_terminate, sigint=True)  # imports done: a SIGTERM now interrupts at once (until a run takes over)
    if _sigterm_seen:
        raise _Terminated

    def run(fn: Callable[..., Awaitable[int]], *fn_args: object) -> int:
        return anyio.run(fn, *fn_args, backend_options=loop_options())

    if args.command == "demo":
        if args.queries < 1:
            raise ArenaError("--queries must be at least 1")
        return run(commands.demo, args.output, args.queries, args.latency, args.seed, args.quiet,
                   "none" if args.quiet else args.progress)
    if args.command == "run":
        if args.backend == "local" and (args.address is not None or args.workers != 2):
            raise ArenaError("--address and --workers need --backend ray")
        if args.backend == "ray" and args.retry_excluded:
            raise ArenaError("--retry-excluded runs on the local backend only; rerun without --backend ray")
        return run(commands.run, args.config, args.dry_run, args.fresh, args.quiet, args.backend, args.address,
                   args.workers, args.retry_excluded, "none" if args.quiet else args.progress)
    if args.command == "sim":
        return commands.sim(args.host, args.port, args.config)
    if args.command in ("report", "rate"):
        return run(commands.report, args.run_dir, args.rounds, args.command == "report",
                   getattr(args, "format", "text"))
    if args.command == "export":
        return run(commands.export, args.run_dir, args.format, args.output)
    if args.command == "batches":
        from .batch.listing import show_batches

        return run(show_batches, args.run_dir, args.cancel)
    if args.command == "import-judgments":
        return commands.import_judgments(args.path, args.source, args.baseline, args.format)
    if args.command == "import-evalscope":
        return commands.import_evalscope(args.report_path, args.dataset, args.dataset_name)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
