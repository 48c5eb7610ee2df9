"""SIGKILL in batch mode at the three points where a crash could pay twice, three times each.

The run (all models and a two-judge cascade in ``mode = "batch"``) has three batch phases: the answers,
the first judge's verdicts, and the second judge's verdicts on the battles the first left open. In each
phase the CLI is killed with SIGKILL (1) during the upload of the input files (the simulator has
stored a file but not yet replied), (2) between upload and create (the simulator has created the batch
but not yet replied), (3) while it polls. Each rerun reconciles with the server by the chunk's tag
(file name, batch metadata). Then a last rerun finishes. The server must have seen no key in two
batches, no key answered twice, exactly one file and one batch per chunk of the ledger; the records
equal those of an uninterrupted live run of the same config on a simulator of the same seed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from arena_helpers import dataset
from interrupt_helpers import cli, output, read_run, results_of, stop, wait_until

from arena_engine.sim import Latency, SimConfig, SimModel
from arena_engine.sim.process import SimProcess

QUERIES_PER_SUBSET = 10
RUN_TIMEOUT = 90.0
MODELS = (("base", 0.0), ("strong", 1.0), ("weak", -1.0))
JUDGES = ("judge-1", "judge-2")


def sim(**kw: float) -> SimConfig:
    models = tuple(SimModel(n, quality=q) for n, q in MODELS) + tuple(SimModel(j, judge=True) for j in JUDGES)
    return SimConfig(models=models, seed=5, latency=Latency("fixed", 0.0), **kw)  # type: ignore[arg-type]


def write_config(path: Path, url: str, run_dir: Path, data: Path, *, batch: bool, protocol: str = "openai") -> Path:
    s = json.dumps
    mode = ['mode = "batch"', f"batch = {{ poll_interval = 0.05, max_requests = 25, protocol = {s(protocol)} }}"] \
        if batch else []
    judging = ["generation = { temperature = 0.0, max_tokens = 1024 }"] if protocol == "anthropic" else []
    lines = ["[run]", f"output_dir = {s(str(run_dir))}", "seed = 1", "",
             "[[datasets]]", 'name = "general_qa"', f"path = {s(str(data))}", ""]
    for name, _ in MODELS:
        lines += ["[[models]]", f"name = {s(name)}", f"api_url = {s(url)}", f"identity = {s(name)}", *mode,
                  "generation = { temperature = 0.0, max_tokens = 256 }", ""]
    for j in JUDGES:
        lines += ["[[judges]]", f"name = {s(j)}", f"api_url = {s(url)}", f"identity = {s(j)}", *mode, *judging, ""]
    lines += ["[panel]", f"cascade = {s(list(JUDGES))}", "", "[arena]", 'baseline = "base"', "",
              "[rating]", "rounds = 50", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def events(run_dir: Path) -> list[dict[str, object]]:
    path = run_dir / "batches" / "ledger.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


@pytest.mark.slow
def test_sigkill_during_upload_before_create_and_while_polling_never_pays_twice(tmp_path: Path) -> None:
    data = dataset(tmp_path, QUERIES_PER_SUBSET)
    run_dir, ref_dir = tmp_path / "killed", tmp_path / "live"
    kills: list[tuple[str, int, float]] = []
    slow = {"batch_upload_delay_s": 0.6, "batch_create_delay_s": 0.6, "batch_seconds": 1.2}
    with SimProcess(sim(**slow)) as server, SimProcess(sim()) as ref_server:
        config = write_config(tmp_path / "batch.toml", server.url, run_dir, data, batch=True)
        ref = cli("run", str(write_config(tmp_path / "live.toml", ref_server.url, ref_dir, data, batch=False)),
                  "--quiet", log=tmp_path / "live")
        proc = None
        try:
            for phase in range(3):
                for point in ("upload", "create", "poll"):
                    before = len(events(run_dir))
                    at_start = server.stats()["batches"]
                    log = tmp_path / f"kill-{phase}-{point}"
                    proc = cli("run", str(config), "--quiet", log=log)
                    want = {"upload": "intent", "create": "uploaded", "poll": "created"}[point]

                    def due(want: str = want, before: int = before, proc: subprocess.Popen[bytes] = proc) -> bool:
                        new = events(run_dir)[before:]
                        return any(e["event"] == want for e in new) or proc.poll() is not None

                    wait_until(due, RUN_TIMEOUT, f"phase {phase}: {want}", interval=0.01)
                    assert proc.poll() is None, f"phase {phase} {point}: the run ended first: {output(log)}"
                    # kill inside the server's reply delay (upload: a file has landed, create: a batch exists)
                    # or in the poll loop (the server has answered a poll; the first comes right after the
                    # create, and a batch made by a killed process may be over by then: no second one)
                    counter = {"upload": "files", "create": "created", "poll": "polls"}[point]
                    wait_until(lambda: server.stats()["batches"][counter] > at_start[counter]  # noqa: B023
                               or proc.poll() is not None,  # noqa: B023
                               10, f"phase {phase}: the server to count one more of its {counter}")
                    proc.send_signal(signal.SIGKILL)
                    assert proc.wait(timeout=30) == -signal.SIGKILL
                    after = events(run_dir)[before:]
                    kills.append((point, len(after), server.stats()["batches"]["created"]))
                    if point == "create":  # the batch exists at the server; the ledger has not recorded it
                        assert server.stats()["batches"]["created"] > sum(
                            1 for e in events(run_dir) if e["event"] == "created")
            log = tmp_path / "final"
            proc = cli("run", str(config), "--quiet", log=log)
            assert proc.wait(timeout=RUN_TIMEOUT) == 0, output(log)
            assert "Traceback" not in output(log)[1]
            assert ref.wait(timeout=RUN_TIMEOUT) == 0, output(tmp_path / "live")
            stats = server.stats()
        finally:
            stop(ref, proc)
    ledger = events(run_dir)
    chunks = [e for e in ledger if e["event"] == "intent"]
    b = stats["batches"]
    print(f"\n9 SIGKILLs: {kills}\nserver: {b}; chunks in the ledger: {len(chunks)}")
    assert b["keys_in_two_batches"] == 0, "a key was submitted in two batches"
    assert b["answered_twice"] == 0, "a key was answered twice"
    assert b["created"] == len(chunks) and b["files"] == len(chunks), "a batch or file was made twice"
    assert stats["requests"] == 0  # nothing went live
    killed, live = read_run(run_dir), read_run(ref_dir)
    assert killed["generations"].clean() and killed["judgments"].clean()
    assert results_of(killed) == results_of(live)
    assert {e.get("chunk") for e in ledger if e["event"] == "done"} == {e["chunk"] for e in chunks}


@pytest.mark.slow
def test_sigkill_during_a_message_batch_create_and_while_polling_never_creates_twice(tmp_path: Path) -> None:
    """Anthropic's protocol: no upload, and a batch carries no tag; a rerun after a kill during a create
    (the simulator has created the batch, its reply is not sent) finds it by the ledger's ``creating``
    time and the request count."""
    data = dataset(tmp_path, QUERIES_PER_SUBSET)
    run_dir, ref_dir = tmp_path / "killed", tmp_path / "live"
    kills: list[tuple[str, int]] = []
    with SimProcess(sim(batch_create_delay_s=0.6, batch_seconds=1.2)) as server, SimProcess(sim()) as ref_server:
        config = write_config(tmp_path / "batch.toml", server.url, run_dir, data, batch=True, protocol="anthropic")
        ref = cli("run", str(write_config(tmp_path / "live.toml", ref_server.url, ref_dir, data, batch=False,
                                          protocol="anthropic")), "--quiet", log=tmp_path / "live")
        proc = None
        try:
            for phase in range(3):
                for point in ("create", "poll"):
                    before = len(events(run_dir))
                    at_start = server.stats()["batches"]
                    log = tmp_path / f"kill-{phase}-{point}"
                    proc = cli("run", str(config), "--quiet", log=log)
                    want = {"create": "creating", "poll": "created"}[point]

                    def due(want: str = want, before: int = before, proc: subprocess.Popen[bytes] = proc) -> bool:
                        new = events(run_dir)[before:]
                        return any(e["event"] == want for e in new) or proc.poll() is not None

                    wait_until(due, RUN_TIMEOUT, f"phase {phase}: {want}", interval=0.01)
                    assert proc.poll() is None, f"phase {phase} {point}: the run ended first: {output(log)}"
                    # create: inside the server's reply delay (the batch exists, unrecorded); poll: the
                    # server has answered a poll
                    counter = {"create": "created", "poll": "polls"}[point]
                    wait_until(lambda: server.stats()["batches"][counter] > at_start[counter]  # noqa: B023
                               or proc.poll() is not None,  # noqa: B023
                               10, f"phase {phase}: the server to count one more of its {counter}")
                    proc.send_signal(signal.SIGKILL)
                    assert proc.wait(timeout=30) == -signal.SIGKILL
                    kills.append((point, server.stats()["batches"]["created"]))
                    if point == "create":
                        assert server.stats()["batches"]["created"] > sum(
                            1 for e in events(run_dir) if e["event"] == "created")
            log = tmp_path / "final"
            proc = cli("run", str(config), "--quiet", log=log)
            assert proc.wait(timeout=RUN_TIMEOUT) == 0, output(log)
            assert "Traceback" not in output(log)[1]
            assert ref.wait(timeout=RUN_TIMEOUT) == 0, output(tmp_path / "live")
            stats = server.stats()
        finally:
            stop(ref, proc)
    ledger = events(run_dir)
    chunks = [e for e in ledger if e["event"] == "intent"]
    b = stats["batches"]
    print(f"\n6 SIGKILLs: {kills}\nserver: {b}; chunks in the ledger: {len(chunks)}")
    assert b["keys_in_two_batches"] == 0, "a key was submitted in two batches"
    assert b["answered_twice"] == 0, "a key was answered twice"
    assert b["created"] == len(chunks) and b["files"] == 0, "a batch was created twice"
    assert stats["requests"] == 0
    killed, live = read_run(run_dir), read_run(ref_dir)
    assert killed["generations"].clean() and killed["judgments"].clean()
    assert results_of(killed) == results_of(live)
    assert {e.get("chunk") for e in ledger if e["event"] == "done"} == {e["chunk"] for e in chunks}


def test_ctrl_c_leaves_batches_running_and_batches_lists_and_cancels_them(tmp_path: Path) -> None:
    data = dataset(tmp_path, 3)
    run_dir = tmp_path / "run"
    with SimProcess(sim(batch_seconds=30.0)) as server:
        config = write_config(tmp_path / "batch.toml", server.url, run_dir, data, batch=True)
        log = tmp_path / "interrupted"
        proc = cli("run", str(config), "--quiet", log=log)
        try:
            # one batch per model (three queries make one chunk each), all recorded
            wait_until(lambda: sum(e["event"] == "created" for e in events(run_dir)) == 3, RUN_TIMEOUT,
                       "the three batches")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 130, output(log)
        finally:
            stop(proc)
        err = output(log)[1]
        assert "submitted batch(es) keep running at the provider (they are paid)" in err, err
        listing = subprocess.run([sys.executable, "-m", "arena_engine.cli", "batches", str(run_dir)],
                                 capture_output=True, text=True, timeout=60)
        assert listing.returncode == 0, listing.stderr
        lines = listing.stdout.splitlines()
        assert lines[0].split()[:4] == ["chunk", "endpoint", "requests", "batch"]
        assert sum(" in_progress" in line or " validating" in line for line in lines[1:]) == 3, listing.stdout
        assert {"base", "strong", "weak"} <= {line.split()[1] for line in lines[1:]}
        cancel = subprocess.run([sys.executable, "-m", "arena_engine.cli", "batches", str(run_dir), "--cancel"],
                                capture_output=True, text=True, timeout=60)
        assert cancel.returncode == 0 and "cancelled 3 batch(es)" in cancel.stderr, cancel.stderr
        assert sum(" cancelled" in line for line in cancel.stdout.splitlines()[1:]) == 3, cancel.stdout
