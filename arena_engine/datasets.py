"""Streaming reader of dataset folders: one subset per JSONL file, one query per line.

A dataset is a folder of ``*.jsonl`` files; each file is a subset named by its stem
(``qa/arena.jsonl`` is dataset ``qa``, subset ``arena``). Each non-blank line is a JSON object:

- ``query`` (alias ``question``): the user's question, a non-empty string; or
- ``messages``: a full chat, a list of ``{"role": ..., "content": ...}`` objects
  (roles ``system``, ``user``, ``assistant``) ending with a ``user`` message;
- ``response`` (alias ``answer``): optional reference answer, a non-empty string;
- ``system``: optional system prompt, a non-empty string (put first in the messages);
- ``id``: optional, a string or an integer, unique within the subset. Without it the id is the
  0-based index of the record among the file's records (blank lines are not counted, so inserting
  a blank line never renumbers the queries; this is also EvalScope's sample ``index``).

Other fields are ignored. Files are read line by line and never loaded whole. A UTF-8 BOM and
CRLF line ends are accepted; blank lines are skipped, and line numbers in errors stay the file's
true 1-based line numbers. Every problem raises :class:`DatasetError` as ``file:line: field: problem``.

A subset file without a single query, or a dataset folder without a subset file, is a
:class:`DatasetError` naming the dataset, the subset and the path: a run over it would end with an
empty or partial leaderboard and exit code 0, as if it had measured something. With
``allow_empty=True`` (``allow_empty = true`` in the config's ``[[datasets]]`` table) it is skipped
with a warning instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from arena_engine.errors import DatasetError

__all__ = ["Query", "iter_queries", "list_subsets"]

ROLES = frozenset({"system", "user", "assistant"})
_BOM = b"\xef\xbb\xbf"
_ALLOW = "set allow_empty = true in its [[datasets]] table to skip it with a warning"

log = logging.getLogger(__name__)
_warned: set[str] = set()  # each empty subset is warned about once per process, not once per pass


@dataclass(frozen=True, slots=True)
class Query:
    """One query of one subset, ready to send to a model."""

    dataset: str
    subset: str
    id: str
    """The record's ``id`` as a string, or the 0-based record index as a string."""
    messages: tuple[Mapping[str, str], ...]
    """Chat messages to send: an optional system message first, then the user message
    (or the record's own ``messages``, with ``system`` prepended if given)."""
    question: str
    """Text shown to people and judges: ``query``, or the last user message of ``messages``."""
    reference: str | None
    """The reference answer (``response`` / ``answer``), if the record has one."""
    line: int
    """1-based line of the record in its file."""


def _subset_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix != ".jsonl":
            raise DatasetError(f"{path}: a dataset is a folder of .jsonl files (or one .jsonl file)")
        return [path]
    if not path.is_dir():
        raise DatasetError(f"{path}: dataset folder not found")
    return sorted((p for p in path.glob("*.jsonl") if p.is_file()), key=lambda p: p.stem)


def _empty(message: str, allow_empty: bool) -> None:
    if not allow_empty:
        raise DatasetError(f"{message}; add queries, or {_ALLOW}")
    if message not in _warned:
        _warned.add(message)
        log.warning("%s; skipped (allow_empty = true)", message)


def list_subsets(path: Path) -> list[str]:
    """Subset names of the dataset folder ``path``: the stems of its ``*.jsonl`` files, sorted.

    ``path`` may also be a single ``.jsonl`` file (a dataset with one subset).
    """
    files = _subset_files(Path(path))
    if not files:
        raise DatasetError(f"{path}: no .jsonl files in the dataset folder (one file per subset)")
    return [p.stem for p in files]


def iter_queries(
    path: Path,
    *,
    dataset: str | None = None,
    subsets: Sequence[str] | None = None,
    allow_empty: bool = False,
) -> Iterator[Query]:
    """Yield the queries of the dataset folder ``path``, subset by subset, lazily.

    ``dataset`` defaults to the folder's name. ``subsets`` selects and orders subsets (default:
    all, sorted by name); naming a subset that has no file raises :class:`DatasetError`.
    Records are validated as they are read, so an error may surface after earlier queries.
    A subset without queries (or a folder without subset files, or an empty ``subsets``) raises
    :class:`DatasetError` once its file is read to the end; with ``allow_empty`` it is skipped and
    logged as a warning (once per process).
    """
    path = Path(path)
    files = _subset_files(path)
    if dataset is None:
        dataset = path.parent.name if path.is_file() else path.name
    if not files:
        _empty(f"dataset {dataset!r}: {path} has no .jsonl files (one file per subset)", allow_empty)
        return
    if subsets is not None:
        if isinstance(subsets, str):
            raise TypeError("subsets must be a sequence of names, not a string")
        by_name = {p.stem: p for p in files}
        missing = [s for s in subsets if s not in by_name]
        if missing:
            raise DatasetError(
                f"dataset {dataset!r}: {path}: subset(s) {', '.join(map(repr, missing))} not found; "
                f"available: {', '.join(sorted(by_name))}"
            )
        if not subsets:
            _empty(f"dataset {dataset!r}: {path}: the list of subsets is empty", allow_empty)
        files = [by_name[s] for s in dict.fromkeys(subsets)]
    for file in files:
        n = 0
        for query in _iter_file(file, dataset, file.stem):
            n += 1
            yield query
        if n == 0:
            _empty(f"dataset {dataset!r}, subset {file.stem!r}: {file} holds no queries", allow_empty)


def _iter_file(file: Path, dataset: str, subset: str) -> Iterator[Query]:
    seen: dict[str, int] = {}
    index = 0
    try:
        fh = file.open("rb")
    except OSError as exc:
        raise DatasetError(f"{file}: cannot open: {exc.strerror or exc}") from exc
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if not raw.strip():
                continue
            query = _parse_record(raw, file, lineno, dataset, subset, index)
            first = seen.get(query.id)
            if first is not None:
                raise DatasetError(
                    f"{file}:{lineno}: id: duplicate id {query.id!r} (first used on line {first})"
                )
            seen[query.id] = lineno
            index += 1
            yield query


def _parse_record(raw: bytes, file: Path, lineno: int, dataset: str, subset: str, index: int) -> Query:
    where = f"{file}:{lineno}"
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DatasetError(f"{where}: json: invalid JSON ({exc})") from None
    if not isinstance(rec, dict):
        raise DatasetError(f"{where}: record: expected a JSON object, got {_kind(rec)}")

    query = _aliased_text(rec, "query", "question", where)
    reference = _aliased_text(rec, "response", "answer", where)
    system = _text(rec, "system", where) if "system" in rec else None

    if "id" in rec:
        rid = rec["id"]
        if isinstance(rid, bool) or not isinstance(rid, str | int):
            raise DatasetError(f"{where}: id: expected a string or an integer, got {_kind(rid)}")
        qid = str(rid)
        if not qid.strip():
            raise DatasetError(f"{where}: id: empty id")
    else:
        qid = str(index)

    messages: list[dict[str, str]]
    if "messages" in rec:
        messages = _messages(rec["messages"], where)
        if system is not None:
            if messages[0]["role"] == "system":
                raise DatasetError(
                    f"{where}: system: given both as a field and as the first message; keep one"
                )
            messages.insert(0, {"role": "system", "content": system})
        question = query if query is not None else messages[-1]["content"]
    elif query is not None:
        messages = [{"role": "user", "content": query}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        question = query
    else:
        raise DatasetError(f"{where}: query: missing; a record needs `query` (or `question`) or `messages`")

    return Query(
        dataset=dataset,
        subset=subset,
        id=qid,
        messages=tuple(messages),
        question=question,
        reference=reference,
        line=lineno,
    )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _text(rec: Mapping[str, Any], field: str, where: str) -> str:
    value = rec[field]
    if not isinstance(value, str):
        raise DatasetError(f"{where}: {field}: expected a string, got {_kind(value)}")
    if not value.strip():
        raise DatasetError(f"{where}: {field}: empty text")
    return value


def _aliased_text(rec: Mapping[str, Any], name: str, alias: str, where: str) -> str | None:
    value = _text(rec, name, where) if name in rec else None
    other = _text(rec, alias, where) if alias in rec else None
    if value is not None and other is not None and value != other:
        raise DatasetError(f"{where}: {alias}: `{name}` and `{alias}` both given and differ; keep one")
    return value if value is not None else other


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise DatasetError(f"{where}: messages: expected a list of messages, got {_kind(value)}")
    if not value:
        raise DatasetError(f"{where}: messages: empty list")
    out: list[dict[str, str]] = []
    for i, msg in enumerate(value):
        field = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise DatasetError(f"{where}: {field}: expected an object, got {_kind(msg)}")
        role = msg.get("role")
        if not isinstance(role, str):
            raise DatasetError(f"{where}: {field}.role: expected a string, got {_kind(role)}")
        if role not in ROLES:
            raise DatasetError(
                f"{where}: {field}.role: unknown role {role!r} (expected system, user or assistant)"
            )
        if role == "system" and i != 0:
            raise DatasetError(f"{where}: {field}.role: a system message may only come first")
        content = msg.get("content")
        if not isinstance(content, str):
            raise DatasetError(f"{where}: {field}.content: expected a string, got {_kind(content)}")
        if not content.strip():
            raise DatasetError(f"{where}: {field}.content: empty text")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise DatasetError(
            f"{where}: messages: the last message must be the user's (role 'user'), got {out[-1]['role']!r}"
        )
    return out
