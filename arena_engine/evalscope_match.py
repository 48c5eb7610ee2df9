"""Pairing imported answers with a dataset's queries by content (:class:`ImportIndex`; see
`evalscope_import` for the rules), and saying which rows pair with none and why."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from arena_engine.errors import ImportMismatchError
from arena_engine.evalscope_rows import Context, ImportedAnswer

if TYPE_CHECKING:
    from arena_engine.datasets import Query

__all__ = ["ImportIndex", "MismatchMode", "Unmatched", "normalise", "query_context"]

log = logging.getLogger("arena_engine.evalscope_import")  # the name users filter the import's warnings by

MismatchMode = Literal["error", "warn"]


def normalise(text: str) -> str:
    """The form texts are compared in: NFC, runs of whitespace made one space, ends stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _norm_context(context: Context | None) -> Context | None:
    return None if context is None else tuple((role, normalise(text)) for role, text in context)


def query_context(query: Query) -> Context:
    """(role, text) of a query's messages before its last user message (its system prompt, earlier turns)."""
    messages = [(str(m.get("role", "")), str(m.get("content", ""))) for m in query.messages]
    last_user = max((i for i, (role, _) in enumerate(messages) if role == "user"), default=len(messages))
    return tuple(messages[:last_user])


@dataclass(frozen=True, slots=True)
class _Seen:
    """What pairing remembers of one dataset query (never its messages: memory stays O(rows))."""

    position: int
    id: str
    line: int
    context: Context
    question: str


@dataclass(frozen=True, slots=True)
class Unmatched:
    """An imported row that answers no query of the dataset, and why."""

    row: ImportedAnswer
    reason: str
    """What the dataset holds instead, in words (the question at the row's index, a differing context)."""

    def message(self) -> str:
        r = self.row
        return (f"{r.source}:{r.line}: question: {_short(r.question)} (EvalScope {r.dataset}/{r.subset} "
                f"index {r.index}) matches no query of dataset {r.dataset!r} subset {r.subset!r}; {self.reason}")


class ImportIndex:
    """Imported answers paired with the queries they answer, by content (see the module docstring).

    ``ImportIndex.build(answers, queries)`` reads the queries once (every query of the arena's datasets,
    in file order) and keeps only what the rows need; :meth:`find` gives a query its answer (or None:
    the query is missing), :attr:`unmatched` lists the rows that answer nothing, :meth:`check` reports them.
    """

    __slots__ = ("_matched", "rows", "unmatched")

    def __init__(self, matched: dict[tuple[str, str, str], ImportedAnswer], unmatched: Sequence[Unmatched],
                 rows: int) -> None:
        self._matched = matched
        self.unmatched: tuple[Unmatched, ...] = tuple(unmatched)
        self.rows = rows
        """Imported rows of the subsets the queries come from (rows of other subsets are not counted)."""

    def __len__(self) -> int:
        return len(self._matched)

    def find(self, query: Query) -> ImportedAnswer | None:
        """The imported answer to ``query``, or None if no row answers it."""
        return self._matched.get((query.dataset, query.subset, query.id))

    def by_query(self) -> dict[tuple[str, str, str], ImportedAnswer]:
        """(dataset, subset, query id) -> the answer paired with that query."""
        return dict(self._matched)

    def counts(self) -> dict[tuple[str, str], int]:
        """Unmatched rows per (dataset, subset)."""
        out: dict[tuple[str, str], int] = {}
        for u in self.unmatched:
            key = (u.row.dataset, u.row.subset)
            out[key] = out.get(key, 0) + 1
        return out

    def check(self, mode: MismatchMode = "error", *, model: str = "") -> None:
        """Raise :class:`ImportMismatchError` on the first unmatched row (mode "error"), or log one
        warning with the counts per dataset and subset (mode "warn"; those rows are not used)."""
        if not self.unmatched:
            return
        who = f"model {model!r}: " if model else ""
        n = len(self.unmatched)
        if mode == "error":
            more = f" ({n - 1} more unmatched row(s))" if n > 1 else ""
            raise ImportMismatchError(
                f"{who}{self.unmatched[0].message()}{more}. The EvalScope run answered other questions than "
                "this dataset holds; point the model at the right run, or set evalscope_mismatch = \"warn\" "
                "in its [[models]] table to skip such rows")
        per = ", ".join(f"{d}/{s}: {c}" for (d, s), c in sorted(self.counts().items()))
        log.warning("%s%d of %d imported EvalScope row(s) match no query and are skipped (%s); first: %s",
                    who, n, self.rows, per, self.unmatched[0].message())

    @classmethod
    def build(cls, answers: Iterable[ImportedAnswer], queries: Iterable[Query]) -> ImportIndex:
        """Pair ``answers`` with ``queries`` (every query of the arena's datasets: the positions count)."""
        by_text: dict[tuple[str, str, str], list[ImportedAnswer]] = {}
        at_index: dict[tuple[str, str, int], ImportedAnswer] = {}
        for a in answers:
            by_text.setdefault((a.dataset, a.subset, normalise(a.question)), []).append(a)
            at_index[(a.dataset, a.subset, a.index)] = a
        waiting: dict[tuple[str, str, str], list[_Seen]] = {}
        dataset_at: dict[tuple[str, str, int], _Seen] = {}
        positions: dict[tuple[str, str], int] = {}
        for q in queries:
            scope = (q.dataset, q.subset)
            position = positions.get(scope, 0)
            positions[scope] = position + 1
            text = (q.dataset, q.subset, normalise(q.question))
            at = (q.dataset, q.subset, position)
            if text in by_text or at in at_index:
                seen = _Seen(position, q.id, q.line, _norm_context(query_context(q)) or (), q.question)
                if text in by_text:
                    waiting.setdefault(text, []).append(seen)
                if at in at_index:
                    dataset_at[at] = seen

        matched: dict[tuple[str, str, str], ImportedAnswer] = {}
        unmatched: list[Unmatched] = []
        rows = 0
        for text, group in by_text.items():
            dataset, subset = text[0], text[1]
            if (dataset, subset) not in positions:
                continue  # a subset the arena does not run
            rows += len(group)
            seen_list = waiting.get(text, [])
            taken = _pair(group, seen_list)
            for q_seen, row in taken.items():
                matched[(dataset, subset, q_seen.id)] = row
            used = {id(r) for r in taken.values()}
            for row in group:
                if id(row) not in used:
                    reason = _why(row, seen_list, dataset_at.get((dataset, subset, row.index)))
                    unmatched.append(Unmatched(row, reason))
        unmatched.sort(key=lambda u: (u.row.source, u.row.line))
        return cls(matched, unmatched, rows)


def _pair(rows: list[ImportedAnswer], queries: list[_Seen]) -> dict[_Seen, ImportedAnswer]:
    """Pair rows and queries of one question text: same context (a row without one fits any query);
    first a row whose index is the query's position, then the rest in index order."""
    if not queries:
        return {}
    groups: dict[Context | None, dict[int, ImportedAnswer]] = {}
    for row in sorted(rows, key=lambda r: r.index):
        groups.setdefault(_norm_context(row.context), {})[row.index] = row
    out: dict[_Seen, ImportedAnswer] = {}
    left: list[_Seen] = []
    for q in queries:
        for ctx in (q.context, None):
            group = groups.get(ctx, {})
            if q.position in group:
                out[q] = group.pop(q.position)
                break
        else:
            left.append(q)
    for q in left:
        for ctx in (q.context, None):
            rest = groups.get(ctx)
            if rest:
                out[q] = rest.pop(next(iter(rest)))  # the lowest index left (filled in index order)
                break
    return out


def _why(row: ImportedAnswer, same_text: list[_Seen], at_index: _Seen | None) -> str:
    if not same_text:
        reason = "no query has this question"
    else:
        ctx = _norm_context(row.context)
        if ctx is not None and not any(q.context == ctx for q in same_text):
            q = same_text[0]
            reason = (f"query {q.id!r} (line {q.line}) has this question, but its system prompt / earlier "
                      f"messages are {_quote_context(q.context)}, the row's are {_quote_context(ctx)}")
        else:
            reason = (f"each of the {len(same_text)} query(ies) with this question already has an answer "
                      "(the EvalScope run has more rows with this text than the dataset)")
    if at_index is not None:
        reason += f"; the dataset's question at index {row.index} (id {at_index.id!r}, line {at_index.line}) is " \
                  f"{_short(at_index.question)}"
    else:
        reason += f"; the dataset has no query at index {row.index}"
    return reason


def _short(text: str, limit: int = 160) -> str:
    """A text quoted for a message: repr (control characters escaped), cut at ``limit`` characters."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _quote_context(context: Context) -> str:
    return "[" + ", ".join(f"{role}: {_short(text, 80)}" for role, text in context) + "]" if context else "none"
