"""``RUN_DIR/results.snapshot``: a walk's tally saved, so ``report``, ``rate`` and a finished rerun skip
the walk (and the ROUGE/BLEU of every answer) when nothing it read has changed.

:func:`arena_engine.from_store.tally_from_store` walks every query's stored records; that walk and the
reference metrics are most of what ``report`` costs on a big run folder. When a walk is done its
:class:`~arena_engine.results.Tally` (games, usage, counts) and the sums of the reference metrics are
saved here with a **fingerprint** of everything they were computed from:

- the code: the snapshot's schema and the package version;
- the config's fields the walk reads (models and judges with their identities, model ids, params and
  prompts; the panel; mode, baseline, pairs, seed; the datasets' names, paths and subsets). Not the
  rating, the output folder, the endpoints' URLs, limits or timeouts: those do not change what the
  checkpoints hold for the run;
- every file the walk read: each checkpoint file (``checkpoints/*.jsonl``), each dataset file (and the
  list of a dataset folder's files), the human labels file: size, mtime and ctime in nanoseconds,
  inode and device. ``ctime`` cannot be set back by a program (``touch -d``, ``cp -p``), so an edit
  shows even when the size and mtime are restored. A file changed within :data:`RACY_NS` of the
  moment its state was taken could be changed again within the same timestamp tick unseen; such a file
  also gets a digest of its content, checked on every load.

A snapshot is used only when the fingerprint of the folder *now* equals the saved one; anything else
(a new record, an edited or replaced file, another config, another release) and the walk is done again
and the snapshot rewritten. The file carries a digest of its own body, so a damaged snapshot (a torn
write, a flipped bit, an edit) is ignored, never trusted: it is a cache, and at worst costs one walk.
It is written atomically (a temporary file, fsync, rename) by the process that holds the folder's lock.

Runs with adaptive stopping (``[arena.stop]``) or EvalScope imports are not snapshotted (their walk
also depends on state kept elsewhere); they always walk.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .config import RunConfig
from .game_columns import _CODES, KEY_BYTES, GameColumns
from .identity import judge_identity, model_identity
from .judge import DEFAULT_SYSTEM_PROMPT
from .results import MetricSums, Tally
from .usage import EndpointUsage
from .version import __version__

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "results.snapshot"
SCHEMA = 2  # 2: the games as columns (base64 of little-endian arrays), not a JSON list per field
MAGIC = b"arena-engine results snapshot 2\n"
#: a file whose mtime or ctime is this close to the moment its state was taken also gets a content digest
RACY_NS = 3_000_000_000
_CHECKPOINTS = "checkpoints"


# ------------------------------------------------------------------------------------ fingerprint


def eligible(cfg: RunConfig) -> bool:
    """Whether a walk of ``cfg`` may be snapshotted (see the module docstring)."""
    return not cfg.stop.active and all(m.evalscope_report is None for m in cfg.models)


def _config_part(cfg: RunConfig) -> dict[str, Any]:
    """The config's fields a walk reads (what it finds and how it counts it)."""
    models = [{"name": m.name, "identity": model_identity(cfg, m), "model": m.endpoint.model,
               "generation": dict(m.generation), "system_prompt": m.system_prompt,
               "combine": m.system_prompt_combine} for m in cfg.models]
    judges = [{"name": j.name, "identity": judge_identity(j), "model": j.endpoint.model,
               "generation": dict(j.generation), "system_prompt": j.system_prompt, "system": j.system_prompt or DEFAULT_SYSTEM_PROMPT,
               "template": j.template, "structured_output": j.structured_output} for j in cfg.panel_judges]
    datasets = [{"name": d.name, "path": str(d.path), "subsets": d.subsets, "allow_empty": d.allow_empty}
                for d in cfg.datasets]
    return {"models": models, "judges": judges, "datasets": datasets, "panel": repr(cfg.panel),
            "stop": repr(cfg.stop), "mode": cfg.mode, "baseline": cfg.baseline,
            "max_pairs": cfg.max_pairs_per_query, "seed": cfg.seed}


def _input_files(run_dir: Path, cfg: RunConfig) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """(every file a walk reads, by a stable name; the listing of each dataset folder)."""
    files: dict[str, Path] = {}
    listings: dict[str, list[str]] = {}
    ck = run_dir / _CHECKPOINTS
    if ck.is_dir():
        for p in sorted(ck.glob("*.jsonl")):
            files[f"{_CHECKPOINTS}/{p.name}"] = p
    for d in cfg.datasets:
        path = Path(d.path)
        if path.is_dir():
            found = sorted(p.name for p in path.glob("*.jsonl"))
            listings[str(path)] = found
            for name in found:
                files[str(path / name)] = path / name
        else:
            files[str(path)] = path
    if cfg.panel.human_labels is not None:
        files[str(cfg.panel.human_labels)] = Path(cfg.panel.human_labels)
    return files, listings


def file_digest(path: Path) -> str:
    """A 16-byte blake2b of a file's content (read in 1 MiB pieces), as hex."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(run_dir: Path, cfg: RunConfig, *, digests: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What a walk of ``cfg`` over ``run_dir`` reads, now. ``digests``: when checking a saved
    fingerprint, the files it holds digests of (those are digested again); otherwise the files changed
    within :data:`RACY_NS` of now are digested."""
    files, listings = _input_files(run_dir, cfg)
    now = time.time_ns()
    stats: dict[str, list[int] | None] = {}
    digested: dict[str, str] = {}
    for name, path in files.items():
        try:
            st = os.stat(path)
        except OSError:
            stats[name] = None
            continue
        stats[name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
        racy = max(st.st_mtime_ns, st.st_ctime_ns) > now - RACY_NS
        if (name in digests) if digests is not None else racy:
            try:
                digested[name] = file_digest(path)
            except OSError:
                digested[name] = ""
    return {"schema": SCHEMA, "version": __version__, "config": _config_part(cfg), "files": stats,
            "listings": listings, "digests": digested}


def inputs_digest(print_: Mapping[str, Any]) -> str:
    """A digest naming the inputs of a fingerprint (the content digests of racy files aside: they check
    the files, they do not name them)."""
    named = {k: v for k, v in print_.items() if k != "digests"}
    return hashlib.blake2b(orjson.dumps(named, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


class ItemsDigest:
    """An order-free digest of reference items (model, dataset, subset, answer, reference): two equal
    digests mean the same answers were scored, so their metric sums may be reused, without keeping the
    answers (a run streams them)."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0

    def add(self, item: tuple[str, str, str, str, str]) -> None:
        h = hashlib.blake2b(digest_size=16)
        for part in item:
            data = part.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
        self.n += 1
        self.total = (self.total + int.from_bytes(h.digest(), "little")) % (1 << 128)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ItemsDigest) and (self.n, self.total) == (other.n, other.total)

    __hash__ = None  # type: ignore[assignment]


# ------------------------------------------------------------------------------------ encoding

_USAGE_FIELDS = tuple(f.name for f in dataclasses.fields(EndpointUsage) if f.name not in ("name", "latencies"))


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _unb64(text: str, dtype: str, n: int) -> np.ndarray:
    out = np.frombuffer(base64.b64decode(text, validate=True), dtype=dtype)
    if len(out) != n:
        raise ValueError("games columns of different lengths")
    return out


def _encode(tally: Tally, sums: Mapping[tuple[str, str, str], MetricSums]) -> dict[str, Any]:
    # as assemble sorts them (stable: sorting again keeps the order); columns, never a list per game
    g = GameColumns.of(tally.games).sorted_by_game_order()
    columns: dict[str, Any] = {c: _b64(getattr(g, c).astype("<i4")) for c in _CODES}
    columns["candidate_is_a"] = _b64(g.candidate_is_a.astype(np.uint8))
    columns["outcome"] = _b64(g.outcome.astype(np.int8))
    if g.judgment_key.dtype == object:
        columns["judgment_key"] = g.judgment_key.tolist()
    else:  # fixed 32 bytes each, one ASCII string; the rows without a key listed apart
        columns["judgment_key"] = g.judgment_key.astype(f"S{KEY_BYTES}").tobytes().decode("ascii")
        columns["no_key"] = np.flatnonzero(g.judgment_key == b"").tolist()
    usage = [[role, u.name, [getattr(u, f) for f in _USAGE_FIELDS], u.latencies.tolist()]
             for role, u in tally.usage.items()]
    return {
        "strings": list(g.strings), "n": len(g), "games": columns, "usage": usage, "failures": tally.failures,
        "missing": tally.missing, "queries": [[d, sub, n] for (d, sub), n in tally.queries.items()],
        "failure_lines": list(tally.failure_lines),
        "metric_sums": [[*k, v.n, list(v.sums.items())] for k, v in sums.items()],
    }


def _decode(body: Mapping[str, Any], started: float) -> Tally:
    strings = body["strings"]
    if not all(isinstance(x, str) for x in strings):
        raise ValueError("a string of the table is not a string")
    n = int(body["n"])
    c = body["games"]
    is_a = _unb64(c["candidate_is_a"], "u1", n)
    if n and int(is_a.max()) > 1:
        raise ValueError("candidate_is_a is not a bool")
    raw_keys = c["judgment_key"]
    keys: np.ndarray
    if isinstance(raw_keys, str):
        keys = np.frombuffer(raw_keys.encode("ascii"), dtype=f"S{KEY_BYTES}").copy()
        if len(keys) != n:
            raise ValueError("judgment keys do not fit the games")
        none = np.asarray(c["no_key"], dtype=np.int64)
        if len(none) and (int(none.min()) < 0 or int(none.max()) >= n):
            raise ValueError("a row without a key is out of range")
        keys[none] = b""
    else:
        if len(raw_keys) != n or not all(k is None or isinstance(k, str) for k in raw_keys):
            raise ValueError("judgment keys do not fit the games")
        keys = np.empty(n, dtype=object)
        keys[:] = raw_keys
    games = GameColumns(strings, **{x: _unb64(c[x], "<i4", n).astype(np.int32) for x in _CODES},
                        candidate_is_a=is_a.astype(np.bool_), outcome=_unb64(c["outcome"], "i1", n).astype(np.int8),
                        judgment_key=keys)
    usage: dict[str, EndpointUsage] = {}
    for role, name, values, latencies in body["usage"]:
        u = EndpointUsage(str(name), **dict(zip(_USAGE_FIELDS, values, strict=True)))
        u.latencies.fromlist([float(x) for x in latencies])
        usage[str(role)] = u
    sums = {(str(m), str(d), str(sub)): MetricSums(int(n), {str(k): float(v) for k, v in items})
            for m, d, sub, n, items in body["metric_sums"]}
    return Tally(games, usage, int(body["failures"]), int(body["missing"]), [],
                 {(str(d), str(sub)): int(n) for d, sub, n in body["queries"]}, started,
                 failure_lines=[str(x) for x in body["failure_lines"]], metric_sums=sums)


# ------------------------------------------------------------------------------------ file


def write_sealed(path: Path, magic: bytes, body: bytes) -> bool:
    """Write ``magic``, a digest of ``body`` and ``body`` to ``path`` atomically (tmp, fsync, rename);
    False when the disk refused (the file is a cache: nothing depends on it being there)."""
    data = magic + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b"\n" + body
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:  # a full or read-only disk: the next report does the work again
        log.info("%s not written: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    return True


def read_sealed(path: Path, magic: bytes) -> memoryview | None:
    """The body :func:`write_sealed` wrote to ``path``; None when absent, of another kind or damaged."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    head = len(magic) + 33
    if not raw.startswith(magic) or len(raw) < head or raw[head - 1:head] != b"\n":
        log.info("%s: not a file of this kind; ignored", path)
        return None
    body = memoryview(raw)[head:]
    if hashlib.blake2b(body, digest_size=16).hexdigest().encode() != raw[len(magic):head - 1]:
        log.info("%s: damaged (its digest does not match); ignored", path)
        return None
    return body


def save(run_dir: Path, cfg: RunConfig, tally: Tally, sums: Mapping[tuple[str, str, str], MetricSums],
         print_: Mapping[str, Any]) -> bool:
    """Write the snapshot of ``tally`` (and its metric ``sums``) whose inputs had fingerprint ``print_``
    (taken after the walk); False when it could not be written (the folder works without it)."""
    body = orjson.dumps({"fingerprint": print_, "tally": _encode(tally, sums)})
    return write_sealed(Path(run_dir) / SNAPSHOT_FILE, MAGIC, body)


def load(run_dir: Path, cfg: RunConfig, started: float) -> Tally | None:
    """The saved tally when the snapshot is whole and its fingerprint is that of the folder now, else None."""
    path = Path(run_dir) / SNAPSHOT_FILE
    body = read_sealed(path, MAGIC)
    if body is None:
        return None
    try:
        doc = orjson.loads(body)
        saved = doc["fingerprint"]
        now = orjson.loads(orjson.dumps(fingerprint(run_dir, cfg, digests=saved.get("digests") or {})))
        if now != saved:
            log.info("%s: the run folder, its datasets or its config changed since; walking again", path)
            return None
        tally = _decode(doc["tally"], started)
        tally.inputs = inputs_digest(saved)
        return tally
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError, AttributeError,
            binascii.Error) as exc:
        log.info("%s: unreadable (%s); ignored", path, exc)
        return None
