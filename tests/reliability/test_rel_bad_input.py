"""Bad input, fuzzed: dataset lines, config files and checkpoint lines.

Every bad input must end in a clear error that names the file (and the line, or the config key): an
ArenaError from the library, and from the CLI exit status 2 with one line on stderr and no traceback.
None of it may damage the finished run folder it is pointed at: its files are compared byte for byte
before and after (a damaged checkpoint line is the exception by design: the store skips it with a
warning naming file:line, keeps every valid record, and only a torn last line is cut off).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reliability_support import (
    ENDPOINTS,
    assert_one_line_error,
    clean_sim,
    config_dict,
    dataset,
    file_digests,
    read_checkpoints,
    run_cli,
    to_toml,
)

from arena_engine.config import load_config
from arena_engine.datasets import iter_queries
from arena_engine.errors import ArenaError, ConfigError, DatasetError
from arena_engine.pipeline import Arena
from arena_engine.sim import SimServer
from arena_engine.store import RunStore
from arena_engine.store.frame import BODY_AT, frame, parse_line

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Finished:
    """A finished run: its dataset, its config file (TOML) and its run folder."""

    root: Path
    data: Path
    config: Path
    run_dir: Path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    root = tmp_path_factory.mktemp("finished")
    data = dataset(root, 8)
    run_dir = root / "run"

    async def main() -> str:
        async with SimServer(clean_sim()) as sim:
            raw = config_dict(dict.fromkeys(ENDPOINTS, sim.url), run_dir, data)
            config = root / "arena.toml"
            config.write_text(to_toml(raw))
            async with Arena(load_config(config)) as arena:
                results = await arena.run()
            assert results.failures == 0
            return sim.url

    anyio.run(main)
    assert tomllib.loads((root / "arena.toml").read_text())  # the writer above makes valid TOML
    return Finished(root, data, root / "arena.toml", run_dir)


@contextlib.contextmanager
def _unchanged(folder: Path) -> Iterator[None]:
    before = file_digests(folder)
    yield
    after = file_digests(folder)
    assert after == before, f"files changed: {sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))}"


# ----------------------------------------------------------------------------------- dataset lines

_text = st.text(max_size=20)
_scalar = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | _text
_json = st.recursive(_scalar, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_text, kids, max_size=3),
                     max_leaves=8)
_message = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["system", "user", "assistant", "bot", 1]),
                                               "content": _scalar | st.lists(_scalar, max_size=2)})
_record = st.fixed_dictionaries({}, optional={
    "query": _scalar, "question": _scalar, "response": _scalar, "answer": _scalar, "system": _scalar,
    "id": st.integers(-3, 40) | _scalar, "messages": st.lists(_message, max_size=3) | _scalar,
    "extra": _json,
})


def _dump(value: Any) -> bytes:
    """JSON bytes, unlike orjson also for integers past 64 bits (and Infinity, which is no JSON)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


_garbage = st.binary(max_size=80).map(lambda b: b.replace(b"\n", b""))
LINE = st.one_of(
    _record.map(_dump),
    _json.map(_dump),
    _garbage,
    _record.map(lambda r: _dump(r)[: max(1, len(_dump(r)) // 2)]),  # cut short
    _record.map(lambda r: b"\xef\xbb\xbf" + _dump(r)),  # a BOM that is not at the file's start
)


def _insert(path: Path, at: int, line: bytes) -> int:
    """Insert ``line`` before line ``at`` (0-based); returns its 1-based line number."""
    lines = path.read_bytes().splitlines(keepends=True)
    at = min(at, len(lines))
    lines.insert(at, line + b"\n")
    path.write_bytes(b"".join(lines))
    return at + 1


@FUZZ
@given(line=LINE, at=st.integers(0, 9), subset=st.sampled_from(["arena", "example"]))
def test_a_bad_dataset_line_is_one_clear_error_and_leaves_the_run_folder_alone(
    finished: Finished, line: bytes, at: int, subset: str
) -> None:
    path = finished.data / f"{subset}.jsonl"
    original = path.read_bytes()
    try:
        lineno = _insert(path, at, line)
        try:
            n = sum(1 for _ in iter_queries(finished.data))
        except DatasetError as exc:
            msg = str(exc)
            assert f"{path}:" in msg
            assert f"{path}:{lineno}:" in msg or f"line {lineno})" in msg, msg
        else:
            assume(False)  # the line happened to be a valid (or blank) record: nothing to check
            assert n >= 16
        # the CLI on the finished run folder: one line naming the file and line, and nothing touched
        with _unchanged(finished.run_dir):
            code, _, err = run_cli("run", str(finished.config), "--quiet")
            assert_one_line_error(code, err, f"{path}:")
            code, _, err = run_cli("report", str(finished.run_dir))
            assert_one_line_error(code, err, f"{path}:")
    finally:
        path.write_bytes(original)


# ----------------------------------------------------------------------------------- config files

def _valid_config(finished: Finished) -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads(finished.config.read_text())
    return data


_PATHS = [
    ("run", "output_dir"), ("run", "seed"), ("run", "mode"), ("run", "fsync_interval"), ("run", "queries_in_flight"),
    ("datasets", 0, "path"), ("datasets", 0, "name"), ("datasets", 0, "subsets"),
    ("models", 0, "name"), ("models", 0, "api_url"), ("models", 0, "concurrency"), ("models", 1, "rpm"),
    ("models", 1, "generation"), ("models", 1, "read_timeout"), ("models", 0, "max_attempts"),
    ("models", 1, "api_key_env"), ("arena", "baseline"), ("judge", "name"), ("judge", "template"),
    ("judge", "parse_retries"), ("judge", "structured_output"), ("rating", "ci"), ("rating", "rounds"),
    ("rating", "method"), ("models",), ("datasets",), ("judge",), ("run",),
]
_value = st.one_of(_scalar, st.lists(_scalar, max_size=2), st.dictionaries(_text, _scalar, max_size=2),
                   st.sampled_from([0, -1, 1e308, 2**63, "", "bt", "elo", "http://x", "{question}"]))


@st.composite
def _mutated(draw: st.DrawFn, base: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The valid config with one change: a key removed, set to another value, or added; and the key."""
    data = orjson.loads(orjson.dumps(base))
    path = draw(st.sampled_from(_PATHS))
    parent: Any = data
    for p in path[:-1]:
        parent = parent[p]
    key = path[-1]
    how = draw(st.sampled_from(["drop", "set", "add"]))
    if how == "drop" and key in parent:
        del parent[key]
    elif how == "set" or key not in parent:
        parent[key] = draw(_value)
    elif how == "add" and key in parent:
        target = parent[key] if isinstance(parent[key], dict) else parent
        key = draw(st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12))
        target[key] = draw(_value)
    return data, str(key)


@FUZZ
@given(data=st.data(), fmt=st.sampled_from(["toml", "json"]))
def test_a_bad_config_is_one_clear_error_naming_file_and_key(finished: Finished, data: st.DataObject,
                                                             fmt: str) -> None:
    mutated, key = data.draw(_mutated(_valid_config(finished)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"arena.{fmt}"
        if fmt == "json":
            path.write_bytes(_dump(mutated))
        else:
            try:
                path.write_text(to_toml(mutated))
            except TypeError:  # None has no TOML form
                assume(False)
        try:
            load_config(path)
        except ConfigError as exc:
            msg = str(exc)
            assert str(path) in msg, msg
            # it names the key, or (a renamed model) the key that now points nowhere, or a TOML line
            assert repr(key)[1:-1] in msg or "'arena.baseline'" in msg or " line " in msg, (key, msg)
        else:
            assume(False)  # the change was valid
        with _unchanged(finished.run_dir):
            code, _, err = run_cli("run", str(path), "--quiet")
            assert_one_line_error(code, err, str(path))


@FUZZ
@given(cut=st.integers(0, 2000), junk=st.binary(min_size=1, max_size=12))
def test_a_damaged_config_file_is_one_clear_error(finished: Finished, cut: int, junk: bytes) -> None:
    """Config bytes cut short and spliced with junk (invalid TOML/JSON, bad UTF-8, half a table)."""
    raw = finished.config.read_bytes()
    cut = min(cut, len(raw))
    with tempfile.TemporaryDirectory() as tmp:
        for suffix, body in ((".toml", raw), (".json", orjson.dumps(_valid_config(finished)))):
            path = Path(tmp) / f"arena{suffix}"
            path.write_bytes(body[:cut] + junk + body[cut:])
            try:
                load_config(path)
            except ConfigError as exc:
                assert str(path) in str(exc), str(exc)
            else:
                continue
            with _unchanged(finished.run_dir):
                code, _, err = run_cli("run", str(path), "--quiet")
                assert_one_line_error(code, err, str(path))


# -------------------------------------------------------------------------------- checkpoint lines

def _flipped(record: dict[str, Any], i: int) -> bytes:
    """A whole frame whose record bytes were changed after the checksum was taken."""
    line = bytearray(frame(b"\x03" * 16, _dump(record))[:-1])
    j = BODY_AT + i % (len(line) - BODY_AT - 1)
    line[j] = ord("x") if line[j] != ord("x") else ord("y")
    return bytes(line)


_ck_line = st.one_of(
    _garbage.filter(lambda b: b != b""),
    st.just(b""),  # a blank line
    st.builds(lambda r: frame(b"\x01" * 16, _dump(r))[:-1], _record),  # a valid record of another key
    st.builds(lambda r, n: frame(b"\x02" * 16, _dump(r))[:n], _record, st.integers(1, 60)),  # cut short
    st.builds(_flipped, _record, st.integers(0, 10_000)),  # bad checksum
)


def _valid(line: bytes) -> bool:
    return parse_line(line + b"\n") is not None


@FUZZ
@given(line=_ck_line, at=st.integers(0, 40), kind=st.sampled_from(["generations", "judgments"]),
       tail=st.booleans())
def test_a_damaged_checkpoint_line_is_reported_with_file_and_line_and_nothing_valid_is_lost(
    finished: Finished, line: bytes, at: int, kind: str, tail: bool
) -> None:
    original = read_checkpoints(finished.run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        shutil.copytree(finished.run_dir, run_dir)
        path = run_dir / "checkpoints" / f"{kind}.jsonl"
        before = path.read_bytes()
        if tail:  # the last line torn by a crash: no newline
            path.write_bytes(before + line)
            lineno = before.count(b"\n") + 1
        else:
            lineno = _insert(path, at, line)
        handler = _Collect()
        logging.getLogger("arena_engine").addHandler(handler)
        try:
            with RunStore(run_dir) as store:
                for kind_, items in original.lines.items():
                    for k, r in items:
                        assert store.get(kind_, k) == r, "a valid record was lost"
                assert store.count(kind) == len(original.lines[kind]) + _valid(line)
            # rebuilding the reports from this folder works, and the log says which line was bad
            code, _, err = run_cli("report", str(run_dir))
        finally:
            logging.getLogger("arena_engine").removeHandler(handler)
        assert code == 0, err
        assert "Traceback" not in err
        if line.strip() and not _valid(line):
            assert any(f"{path}:{lineno}" in m for m in handler.messages), (lineno, handler.messages)
        # every line of the file before the damage is still there, in order
        after = path.read_bytes().splitlines(keepends=True)
        kept = iter(after)
        assert all(any(ln == a for a in kept) for ln in before.splitlines(keepends=True))


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# ------------------------------------------------------------------------------- the real command


def test_the_real_command_prints_one_line_without_traceback_for_bad_input(finished: Finished, tmp_path: Path) -> None:
    """The same promises through `python -m arena_engine.cli` (a fresh interpreter, real exit status)."""
    bad_dataset = tmp_path / "data"
    shutil.copytree(finished.data, bad_dataset)
    (bad_dataset / "arena.jsonl").write_bytes(b'{"query": "fine"}\n{"query": ["not", "text"]}\n')
    raw = tomllib.loads(finished.config.read_text())
    raw["datasets"][0]["path"] = str(bad_dataset)
    raw["run"]["output_dir"] = str(tmp_path / "run")
    cfg = tmp_path / "bad_dataset.toml"
    cfg.write_text(to_toml(raw))
    bad_config = tmp_path / "bad_config.toml"
    raw = tomllib.loads(finished.config.read_text())
    raw["models"][0]["concurrency"] = "many"
    bad_config.write_text(to_toml(raw))
    with _unchanged(finished.run_dir):
        for args, needle in (
            (["run", str(cfg), "--quiet"], f"{bad_dataset / 'arena.jsonl'}:2: query"),
            (["run", str(bad_config)], f"{bad_config}: 'models[0].concurrency' must be an integer"),
        ):
            proc = subprocess.run([sys.executable, "-m", "arena_engine.cli", *args], capture_output=True,
                                  text=True, timeout=120, check=False)
            assert_one_line_error(proc.returncode, proc.stderr, needle)
    # the library raises the same errors as ArenaError subclasses
    with pytest.raises(ArenaError):
        load_config(bad_config)
