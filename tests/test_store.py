"""RunStore: round trip, reuse across reopen, repair of damaged files, locking, fsync batching."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arena_engine.errors import CheckpointError
from arena_engine.store import RunStore, content_key
from arena_engine.store import index as index_module
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
GEN = "generations"


def gen_record(i: int) -> dict[str, Any]:
    return {"model": f"m{i % 3}", "query_id": f"q{i}", "answer": f"answer {i} " * 20, "attempts": 1}


def fill(run_dir: Path, n: int, kind: str = GEN, **kw: Any) -> list[bytes]:
    keys = [content_key({"q": i}) for i in range(n)]
    with RunStore(run_dir, **kw) as store:
        for i, key in enumerate(keys):
            store.put(kind, key, gen_record(i))
    return keys


def data_file(run_dir: Path, kind: str = GEN) -> Path:
    return run_dir / "checkpoints" / f"{kind}.jsonl"


def drop_sidecar(run_dir: Path, kind: str = GEN) -> None:
    data_file(run_dir, kind).with_suffix(".idx").unlink()


def store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "arena_engine.store" and r.levelno == logging.WARNING
    ]


# ---------------------------------------------------------------------------- keys


def test_content_key_is_canonical_and_stable_across_processes() -> None:
    obj = {
        "model": "m",
        "gen": {"temperature": 0.0, "top_p": 1},
        "messages": [{"role": "user", "content": "hé"}],
    }
    reordered = {
        "messages": [{"content": "hé", "role": "user"}],
        "gen": {"top_p": 1, "temperature": 0.0},
        "model": "m",
    }
    key = content_key(obj)
    assert len(key) == 16
    assert content_key(reordered) == key
    assert content_key({**obj, "model": "m2"}) != key
    code = (
        "import json, sys; from arena_engine.store import content_key; "
        "print(content_key(json.loads(sys.argv[1])).hex())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(obj)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip() == key.hex()


# ---------------------------------------------------------------------------- round trip and reuse


def test_round_trip_and_reuse_after_reopen(tmp_path: Path) -> None:
    keys = fill(tmp_path, 50)
    with RunStore(tmp_path) as store:
        assert store.count(GEN) == 50
        assert all(store.has(GEN, k) for k in keys)
        assert store.get(GEN, keys[7]) == gen_record(7)
        assert list(store.records(GEN)) == [gen_record(i) for i in range(50)]
        assert [k for k, _ in store.items(GEN)] == keys
        assert not store.has(GEN, content_key("absent"))
        assert store.get(GEN, content_key("absent")) is None
        assert store.count("judgments") == 0 and list(store.records("judgments")) == []
        # More work in a second session lands after the first.
        store.put("judgments", content_key("j"), {"verdict": "A>B"})
    with RunStore(tmp_path) as store:
        assert store.kinds() == ["generations", "judgments"]
        assert store.get("judgments", content_key("j")) == {"verdict": "A>B"}
        assert store.corrupt == 0 and store.torn == []


def test_put_of_a_stored_key_writes_nothing(tmp_path: Path) -> None:
    keys = fill(tmp_path, 5)
    size = data_file(tmp_path).stat().st_size
    with RunStore(tmp_path) as store:
        store.put(GEN, keys[2], {"different": True})
        assert store.get(GEN, keys[2]) == gen_record(2)
        new = content_key("new")
        store.put(GEN, new, {"x": 1})
        store.put(GEN, new, {"x": 2})
        assert store.get(GEN, new) == {"x": 1}
        assert store.count(GEN) == 6
    assert data_file(tmp_path).read_bytes().count(b"\n") == 6
    assert data_file(tmp_path).stat().st_size > size


def test_many_records_across_index_merges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "MERGE_AT", 7)
    keys = fill(tmp_path, 100)
    with RunStore(tmp_path) as store:
        for i in range(100, 150):
            store.put(GEN, content_key({"q": i}), gen_record(i))
        keys += [content_key({"q": i}) for i in range(100, 150)]
        assert store.count(GEN) == 150
        assert all(store.get(GEN, k) == gen_record(i) for i, k in enumerate(keys))
        assert [k for k, _ in store.items(GEN)] == keys
    with RunStore(tmp_path, full_scan=True) as store:
        assert [k for k, _ in store.items(GEN)] == keys


def test_untrusted_text_cannot_forge_a_line(tmp_path: Path) -> None:
    forged = '{"k":"' + "0" * 32 + '","c":"00000000","r":{}}'
    nasty = {
        "answer": f'</script><script>alert(1)</script>\n{forged}\n\r\u2028\u2029\x00\t"\\ 数据 😀 \U0010ffff',
        "nested": {"k": "0" * 32, "list": [forged, None, 1.5, -3, True]},
    }
    key = content_key("nasty")
    with RunStore(tmp_path) as store:
        store.put(GEN, key, nasty)
    assert data_file(tmp_path).read_bytes().count(b"\n") == 1
    with RunStore(tmp_path, full_scan=True) as store:
        assert store.count(GEN) == 1 and store.corrupt == 0
        assert store.get(GEN, key) == nasty
        assert not store.has(GEN, bytes(16))


def test_lone_surrogates_are_stored_as_replacement_characters(tmp_path: Path) -> None:
    key = content_key({"text": "bad \ud800 text"})
    assert key != content_key({"text": "bad \udc00 text"})
    with RunStore(tmp_path) as store:
        store.put(GEN, key, {"answer": "bad \ud800 text"})
        assert store.get(GEN, key) == {"answer": "bad \ufffd text"}


def no_fsync(fd: int) -> None:
    """Durability is not what these tests check; skipping fsync keeps them fast."""


# JSON has no NaN or infinity: orjson stores them as null, so they are left out here.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.dictionaries(st.text(), json_values, max_size=5), min_size=1, max_size=8))
def test_any_json_record_round_trips(
    tmp_path_factory: pytest.TempPathFactory, records: list[dict[str, Any]]
) -> None:
    run_dir = tmp_path_factory.mktemp("run")
    keys = [content_key([i, r]) for i, r in enumerate(records)]
    with RunStore(run_dir, fsync=no_fsync) as store:
        for key, rec in zip(keys, records, strict=True):
            store.put(GEN, key, rec)
        assert [store.get(GEN, k) for k in keys] == records
    with RunStore(run_dir, full_scan=True, fsync=no_fsync) as store:
        assert store.corrupt == 0
        assert list(store.records(GEN)) == records


# ---------------------------------------------------------------------------- damage repair


def test_torn_last_line_is_truncated_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = fill(tmp_path, 10)
    path = data_file(tmp_path)
    good_size = path.stat().st_size
    line = path.read_bytes().splitlines(keepends=True)[3]
    with open(path, "ab") as f:
        f.write(line[: len(line) // 2])  # a write cut short by a crash
    with caplog.at_level(logging.WARNING), RunStore(tmp_path) as store:
        assert path.stat().st_size == good_size
        assert [t.line for t in store.torn] == [11]
        assert store.count(GEN) == 10 and store.corrupt == 0
        store.put(GEN, content_key("after"), {"ok": True})
    (msg,) = store_warnings(caplog)
    assert f"{path}:11: torn last line" in msg and "truncated" in msg
    caplog.clear()
    with caplog.at_level(logging.WARNING), RunStore(tmp_path) as store:
        assert store.count(GEN) == 11 and store.get(GEN, content_key("after")) == {"ok": True}
        assert store.get(GEN, keys[9]) == gen_record(9)
    assert store_warnings(caplog) == []


def test_last_record_missing_only_its_newline_is_completed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = fill(tmp_path, 3)
    drop_sidecar(tmp_path)
    path = data_file(tmp_path)
    path.write_bytes(path.read_bytes()[:-1])
    with caplog.at_level(logging.WARNING), RunStore(tmp_path) as store:
        assert store.count(GEN) == 3 and store.get(GEN, keys[2]) == gen_record(2)
        assert store.torn[0].completed
    assert path.read_bytes().endswith(b"}\n")
    assert "lacked its newline" in store_warnings(caplog)[0]


def _flip_byte_in_line(path: Path, line_no: int, needle: bytes) -> None:
    data = bytearray(path.read_bytes())
    start = sum(len(x) for x in data.splitlines(keepends=True)[: line_no - 1])
    at = data.index(needle, start)
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("sidecar", ["dropped", "full_scan"])
def test_corrupt_middle_line_is_reported_with_file_line_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sidecar: str
) -> None:
    keys = fill(tmp_path, 6)
    path = data_file(tmp_path)
    _flip_byte_in_line(path, 3, b"answer")  # a damaged record: its key is still readable
    with open(path, "ab") as f:
        f.write(b"this is not a record\n")  # a line with no key at all (line 7)
    store = RunStore(tmp_path, full_scan=sidecar == "full_scan")
    if sidecar == "dropped":
        drop_sidecar(tmp_path)
    with caplog.at_level(logging.WARNING), store:
        assert store.corrupt == 2
        assert [(c.line, c.key) for c in store.corrupt_lines] == [(3, keys[2]), (7, None)]
        assert not store.has(GEN, keys[2]) and store.get(GEN, keys[2]) is None
        assert store.unreadable(GEN) == [keys[2]]
        assert store.count(GEN) == 5
        assert list(store.records(GEN)) == [gen_record(i) for i in (0, 1, 3, 4, 5)]
        warnings = store_warnings(caplog)
        assert f"{path}:3:" in warnings[0] and keys[2].hex() in warnings[0] and "sent again" in warnings[0]
        assert f"{path}:7:" in warnings[1]
        # Redoing the request stores it again; the damaged copy is then superseded.
        store.put(GEN, keys[2], gen_record(2))
        assert store.unreadable(GEN) == []
    for full_scan in (True, False):  # the sidecar remembers damaged lines too
        with caplog.at_level(logging.WARNING), RunStore(tmp_path, full_scan=full_scan) as store:
            assert store.count(GEN) == 6 and store.get(GEN, keys[2]) == gen_record(2)
            assert [(c.line, c.superseded) for c in store.corrupt_lines] == [(3, True), (7, False)]


def test_damage_under_the_sidecar_is_caught_on_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = fill(tmp_path, 6)
    _flip_byte_in_line(data_file(tmp_path), 2, b"answer")  # same length: the sidecar still lines up
    with caplog.at_level(logging.WARNING), RunStore(tmp_path) as store:
        assert store.corrupt == 0  # not scanned: the sidecar covers it
        assert store.get(GEN, keys[1]) is None
        assert store.corrupt == 1 and not store.has(GEN, keys[1]) and store.unreadable(GEN) == [keys[1]]
        assert f"{data_file(tmp_path)}:2:" in store_warnings(caplog)[0]
        assert [r["query_id"] for r in store.records(GEN)] == ["q0", "q2", "q3", "q4", "q5"]
        store.put(GEN, keys[1], gen_record(1))
        assert store.get(GEN, keys[1]) == gen_record(1) and store.count(GEN) == 6
    with RunStore(tmp_path) as store:
        assert store.get(GEN, keys[1]) == gen_record(1)


def test_record_glued_after_a_torn_write_is_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fill(tmp_path, 2)
    path = data_file(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    # A torn write that an older writer appended to without repair: half of line 2, then line 2 whole.
    path.write_bytes(lines[0] + lines[1][:40] + lines[1])
    drop_sidecar(tmp_path)
    with caplog.at_level(logging.WARNING), RunStore(tmp_path) as store:
        assert store.count(GEN) == 2 and store.get(GEN, content_key({"q": 1})) == gen_record(1)
        assert store.corrupt == 1 and store.corrupt_lines[0].line == 2
        assert "record is kept" in store_warnings(caplog)[0]


def test_repeated_records_keep_the_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fill(tmp_path, 3)
    path = data_file(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines, lines[1]]))
    drop_sidecar(tmp_path)
    with caplog.at_level(logging.WARNING), RunStore(tmp_path) as store:
        assert store.duplicates == 1 and store.count(GEN) == 3
        assert list(store.records(GEN)) == [gen_record(i) for i in range(3)]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_file", "shorter_data"])
def test_a_bad_sidecar_falls_back_to_scanning(tmp_path: Path, damage: str) -> None:
    keys = fill(tmp_path, 20)
    idx = data_file(tmp_path).with_suffix(".idx")
    if damage == "garbage":
        idx.write_bytes(os.urandom(idx.stat().st_size))
    elif damage == "truncated":
        idx.write_bytes(idx.read_bytes()[:-45])
    elif damage == "other_file":
        other = tmp_path / "other"
        fill(other, 20, kind=GEN)
        idx.write_bytes(data_file(other).with_suffix(".idx").read_bytes())
        data_file(other).unlink()
    else:  # the data file lost its end (e.g. restored from an older copy)
        lines = data_file(tmp_path).read_bytes().splitlines(keepends=True)
        data_file(tmp_path).write_bytes(b"".join(lines[:12]))
        keys = keys[:12]
    for _ in range(2):  # the second open uses the rebuilt sidecar
        with RunStore(tmp_path) as store:
            assert store.count(GEN) == len(keys) and store.corrupt == 0
            assert [k for k, _ in store.items(GEN)] == keys
            assert all(store.get(GEN, k) == gen_record(i) for i, k in enumerate(keys))


def test_records_written_after_the_last_sidecar_update_are_found(tmp_path: Path) -> None:
    """A process killed before its fsync thread ran leaves lines the sidecar does not cover."""
    fill(tmp_path, 5)
    code = (
        "import os, sys; from pathlib import Path; from arena_engine.store import RunStore, content_key\n"
        "s = RunStore(Path(sys.argv[1]), fsync_interval=3600, fsync_every=10**6).open()\n"
        "for i in range(5, 40): s.put('generations', content_key({'q': i}), {'i': i})\n"
        "os._exit(0)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    with RunStore(tmp_path) as store:
        assert store.count(GEN) == 40
        assert store.get(GEN, content_key({"q": 39})) == {"i": 39}


# ---------------------------------------------------------------------------- lock


HOLDER = """
import sys
from pathlib import Path
from arena_engine.store import RunStore
with RunStore(Path(sys.argv[1])) as store:
    print("ready", flush=True)
    sys.stdin.readline()
"""


def test_a_second_process_gets_a_clear_error(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as holder:
        assert holder.stdout is not None and holder.stdin is not None
        try:
            assert holder.stdout.readline().strip() == "ready"
            with pytest.raises(CheckpointError, match=f"in use by process {holder.pid};"):
                RunStore(tmp_path).open()
        finally:
            holder.stdin.write("\n")
            holder.stdin.flush()
            holder.wait(timeout=30)
    with RunStore(tmp_path) as store:  # free again once the holder exits
        assert store.count(GEN) == 0


def test_lock_is_per_open_store_even_in_one_process(tmp_path: Path) -> None:
    with RunStore(tmp_path), pytest.raises(CheckpointError, match=f"in use by process {os.getpid()}"):
        RunStore(tmp_path).open()
    with RunStore(tmp_path):
        pass


def test_a_closed_store_refuses_use(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    with pytest.raises(CheckpointError, match="not open"):
        store.has(GEN, bytes(16))
    with store:
        with pytest.raises(ValueError, match="kind"):
            store.put("Bad-Kind", bytes(16), {})
        with pytest.raises(ValueError, match="16-byte"):
            store.put(GEN, b"short", {})
    with pytest.raises(CheckpointError, match="not open"):
        store.put(GEN, bytes(16), {})


# ---------------------------------------------------------------------------- fsync batching


class FsyncRecorder:
    """An fsync that remembers which file (inode) each call synced, and from which thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        with self.lock:
            self.calls.append((os.fstat(fd).st_ino, threading.current_thread().name))
        os.fsync(fd)

    def on(self, path: Path) -> list[str]:
        """Threads that fsynced ``path``, in order."""
        ino = path.stat().st_ino
        with self.lock:
            return [thread for i, thread in self.calls if i == ino]


def fsync_thread_parked(store: RunStore) -> bool:
    """The store's fsync thread waits on its condition and has not been notified since it went back to
    waiting: it has seen every record put so far and decided (for now) not to fsync."""
    cond = store._cond
    with cond:
        return bool(cond._waiters)  # type: ignore[attr-defined]  # notify() takes a waiter off this deque


def test_fsync_is_batched_by_count_off_the_callers_thread(tmp_path: Path) -> None:
    rec = FsyncRecorder()
    with RunStore(tmp_path, fsync_interval=3600, fsync_every=10, fsync=rec) as store:
        path = data_file(tmp_path)
        for round_ in range(1, 3):
            for i in range(9):
                store.put(GEN, content_key([round_, i]), {"i": i})
            # no fsync may start: 9 pending < 10, and the interval is an hour
            wait_until(lambda: fsync_thread_parked(store), 10, "the fsync thread to wait again")
            assert store.pending_fsync == 9 and len(rec.on(path)) == round_ - 1
            store.put(GEN, content_key([round_, 9]), {"i": 9})  # the 10th pending record
            wait_until(lambda: store.pending_fsync == 0, 10, "the pending records to be fsynced")
            syncs = rec.on(path)
            assert len(syncs) == round_ and all(t.startswith("fsync ") for t in syncs)
        store.put(GEN, content_key("last"), {})
        store.sync()
        assert store.pending_fsync == 0 and len(rec.on(path)) == 3
        assert rec.on(path)[-1] == threading.current_thread().name


def test_fsync_happens_within_the_interval(tmp_path: Path) -> None:
    rec = FsyncRecorder()
    with RunStore(tmp_path, fsync_interval=0.05, fsync_every=10**6, fsync=rec) as store:
        t = time.monotonic()
        store.put(GEN, content_key(1), {"i": 1})
        wait_until(lambda: store.pending_fsync == 0, 10, "the pending records to be fsynced")
        assert time.monotonic() - t >= 0.04
        assert len(rec.on(data_file(tmp_path))) == 1


def test_close_fsyncs_what_is_pending(tmp_path: Path) -> None:
    rec = FsyncRecorder()
    store = RunStore(tmp_path, fsync_interval=3600, fsync_every=10**6, fsync=rec).open()
    store.put(GEN, content_key(1), {"i": 1})
    path = data_file(tmp_path)
    assert rec.on(path) == []
    store.close()
    assert len(rec.on(path)) == 1 and store.pending_fsync == 0


def test_fsync_failure_surfaces_as_checkpoint_error(tmp_path: Path) -> None:
    failing = threading.Event()
    failed = threading.Event()

    def flaky(fd: int) -> None:
        if failing.is_set():
            failed.set()
            raise OSError(5, "Input/output error")
        os.fsync(fd)

    store = RunStore(tmp_path, fsync_interval=0, fsync_every=1, fsync=flaky).open()
    store.put(GEN, content_key(1), {"i": 1})
    failing.set()  # the disk goes bad
    store.put(GEN, content_key(2), {"i": 2})
    assert failed.wait(10)
    for _ in range(2):  # it stays raised: the run must stop
        with pytest.raises(CheckpointError, match="Input/output error"):
            store.put(GEN, content_key(3), {"i": 3})
    failing.clear()
    with pytest.raises(CheckpointError, match="Input/output error"):
        store.close()
    with RunStore(tmp_path) as store:  # closed (lock released) all the same
        assert store.count(GEN) == 2  # both writes reached the OS; only their fsync failed
