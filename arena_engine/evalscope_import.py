"""Read one model's answers from an EvalScope run, so they battle without being generated again.

EvalScope (1.x) lays out one inference run as::

    outputs/<ts>/predictions/<model>/<dataset>_<subset>.jsonl   one row per answered sample
    outputs/<ts>/reviews/<model>/<dataset>_<subset>.jsonl       the same rows + target + sample_score
    outputs/<ts>/reports/<model>/<dataset>.json                 the scores per metric and subset

The arena's "report path" is ``reports/<model>``; the answers are in the matching ``reviews/<model>``
(EvalScope's own arena swaps ``reports`` for ``reviews`` in the path). We read the review file of
each ``<dataset>_<subset>`` and fill in from the prediction file the rows it lacks (a run stopped
between inference and review has predictions only). Rows are keyed by ``index`` (the sample's
0-based position in the subset, which is also our default query id); in a review row written with
repeats (``sample_score.generation_index`` present) the key is ``sample_score.group_id`` and only
generation 0 is kept.

From each row: answer = the last assistant message of ``messages`` after its last user message
(string content, or the text parts of a content list; reasoning parts are left out), else
``model_output.choices[0].message``, else ``sample_score.score.prediction``; question = the last user
message (or ``input`` in older review rows); context = the messages before that user message (a system
prompt, earlier turns; unknown when an older row's ``input`` is a plain string); reference = ``target``
(a string or a list whose first entry is used; empty = none); file and line = where the row was read;
tokens = ``model_output.usage.input_tokens`` / ``output_tokens``; latency = the answer's
``perf_metrics.latency``, else ``model_output.time``.

File names join dataset and subset with ``_``, which is ambiguous when names contain ``_``
(``general_qa_long_form``). We resolve a stem, in order, by:
1. the (dataset, subset) pairs listed in ``reports/<model>/*.json`` (EvalScope's arena uses exactly
   these pairs);
2. the ``datasets`` hint: the longest hinted dataset name that is a prefix followed by ``_``;
3. dataset names known from the reports of the run's other models and EvalScope's custom dataset
   names (``general_qa``, ``general_mcq``, ``general_arena``): the first ``_`` whose left part is
   one of them;
4. else the first ``_``.

Problems raise :class:`DatasetError` naming ``file:line: field: problem``.

Pairing answers with a dataset's queries (:class:`ImportIndex`) goes by content, not by position: a
row answers the query of the same dataset and subset whose question text and context (system prompt,
earlier messages) are equal to the row's, compared after Unicode NFC normalisation with every run of
whitespace made one space and the ends stripped (case and wording are kept). The row index only breaks
ties between rows and queries with the same text: a row whose index is the query's position in the
subset first, then the rest in index order. A row of a subset the arena runs that pairs with no query
is a mismatch: :meth:`ImportIndex.check` raises :class:`ImportMismatchError` naming the row's file and
line, its question and the dataset's question at the same index, or (``mismatch="warn"``) logs one
warning with the counts per dataset and subset and the row is skipped.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from arena_engine.errors import DatasetError, ImportMismatchError

if TYPE_CHECKING:
    from arena_engine.datasets import Query

__all__ = ["ImportIndex", "ImportedAnswer", "MismatchMode", "Unmatched", "load_evalscope_answers"]

log = logging.getLogger(__name__)

MismatchMode = Literal["error", "warn"]
Context = tuple[tuple[str, str], ...]

REPORTS, REVIEWS, PREDICTIONS = "reports", "reviews", "predictions"
KNOWN_DATASETS: tuple[str, ...] = ("general_qa", "general_mcq", "general_arena")
"""EvalScope's custom-dataset benchmark names, used to split ``<dataset>_<subset>`` stems."""
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class ImportedAnswer:
    """One answer of one model to one sample of an EvalScope run."""

    model: str
    """The ``<model>`` folder name of the EvalScope run."""
    dataset: str
    subset: str
    index: int
    """EvalScope's 0-based sample index in the subset (our default query id when records have no ``id``)."""
    question: str
    answer: str
    reference: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency: float | None
    context: Context | None = ()
    """(role, text) of the messages before the question: system prompt, earlier turns; () for a bare
    question, None when the row does not say (an older row whose ``input`` is a plain string)."""
    source: str = field(default="", compare=False)
    """The file the row was read from (where it was read is not part of the answer: not compared)."""
    line: int = field(default=0, compare=False)
    """The row's 1-based line in ``source``."""


def load_evalscope_answers(
    report_path: Path,
    *,
    datasets: Sequence[str] | None = None,
    model: str | None = None,
) -> list[ImportedAnswer]:
    """All answers of one model of an EvalScope run, sorted by dataset, subset and index.

    ``report_path`` is the run's ``reports/<model>`` folder (``reviews/<model>`` or
    ``predictions/<model>`` work too), or the run folder itself with ``model`` naming the model
    (optional when the run has one model). ``datasets`` keeps only those datasets (each must be
    found) and helps split file names when the run has no report JSON.
    """
    run_dir, model_name = _locate(Path(report_path), model)
    if isinstance(datasets, str):
        raise TypeError("datasets must be a sequence of names, not a string")
    hint = tuple(datasets) if datasets is not None else ()
    files = _subset_files(run_dir, model_name)
    if not files:
        raise DatasetError(
            f"{run_dir}: no {REVIEWS}/{model_name}/*.jsonl nor {PREDICTIONS}/{model_name}/*.jsonl files; "
            "is this an EvalScope output folder?"
        )
    pairs = _report_pairs(run_dir / REPORTS / model_name)
    known = _known_datasets(run_dir)
    answers: list[ImportedAnswer] = []
    found: set[str] = set()
    for stem in sorted(files):
        dataset, subset = _split_stem(stem, pairs, hint, known)
        if hint and dataset not in hint:
            continue
        found.add(dataset)
        review, prediction = files[stem]
        rows: dict[int, ImportedAnswer] = {}
        if review is not None:
            rows = _read_rows(review, model_name, dataset, subset)
        if prediction is not None:
            for key, row in _read_rows(prediction, model_name, dataset, subset).items():
                rows.setdefault(key, row)
        answers.extend(rows[k] for k in sorted(rows))
    missing = [d for d in hint if d not in found]
    if missing:
        raise DatasetError(
            f"{run_dir}: model {model_name!r} has no answers for dataset(s) {', '.join(map(repr, missing))}"
        )
    answers.sort(key=lambda a: (a.dataset, a.subset, a.index))
    return answers


def _locate(path: Path, model: str | None) -> tuple[Path, str]:
    """(run folder, model folder name) from a reports/<model> path or a run folder."""
    if not path.is_dir():
        raise DatasetError(f"{path}: not found (expected an EvalScope reports/<model> folder or run folder)")
    if path.parent.name in (REPORTS, REVIEWS, PREDICTIONS):
        if model is not None and model != path.name:
            raise DatasetError(f"{path}: is the folder of model {path.name!r}, not {model!r}")
        return path.parent.parent, path.name
    kinds = [path / k for k in (REPORTS, REVIEWS, PREDICTIONS) if (path / k).is_dir()]
    if not kinds:
        raise DatasetError(
            f"{path}: neither an EvalScope reports/<model> folder nor a run folder "
            f"(with {REPORTS}/, {REVIEWS}/ or {PREDICTIONS}/ inside)"
        )
    models = sorted({m.name for k in kinds for m in k.iterdir() if m.is_dir()})
    if model is not None:
        if model not in models:
            raise DatasetError(
                f"{path}: no model {model!r} in this run; models: {', '.join(models) or 'none'}"
            )
        return path, model
    if len(models) != 1:
        raise DatasetError(
            f"{path}: the run has {len(models)} models ({', '.join(models) or 'none'}); name one "
            "or pass its reports/<model> folder"
        )
    return path, models[0]


def _subset_files(run_dir: Path, model: str) -> dict[str, tuple[Path | None, Path | None]]:
    """stem -> (review file, prediction file), either may be missing."""
    out: dict[str, tuple[Path | None, Path | None]] = {}
    for slot, kind in enumerate((REVIEWS, PREDICTIONS)):
        folder = run_dir / kind / model
        if not folder.is_dir():
            continue
        for f in folder.glob("*.jsonl"):
            if f.is_file():
                pair = list(out.get(f.stem, (None, None)))
                pair[slot] = f
                out[f.stem] = (pair[0], pair[1])
    return out


def _load_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes().removeprefix(_BOM))
    except orjson.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _report_pairs(report_dir: Path) -> set[tuple[str, str]]:
    """(dataset, subset) pairs named in the model's report JSON files (EvalScope's Report model)."""
    pairs: set[tuple[str, str]] = set()
    if not report_dir.is_dir():
        return pairs
    for f in sorted(report_dir.glob("*.json")):
        report = _load_json(f)
        if not isinstance(report, dict):
            raise DatasetError(f"{f}: report: expected a JSON object")
        dataset = report.get("dataset_name")
        if not isinstance(dataset, str) or not dataset:
            raise DatasetError(f"{f}: dataset_name: expected a non-empty string")
        for metric in _list(report.get("metrics")):
            for category in _list(metric.get("categories") if isinstance(metric, dict) else None):
                for subset in _list(category.get("subsets") if isinstance(category, dict) else None):
                    name = subset.get("name") if isinstance(subset, dict) else None
                    if isinstance(name, str) and name:
                        pairs.add((dataset, name))
    return pairs


def _known_datasets(run_dir: Path) -> set[str]:
    """Dataset names from the report JSON files of every model of the run, plus EvalScope's own."""
    known = set(KNOWN_DATASETS)
    reports = run_dir / REPORTS
    if reports.is_dir():
        for model_dir in reports.iterdir():
            if model_dir.is_dir():
                known.update(d for d, _ in _report_pairs(model_dir))
    return known


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _split_stem(
    stem: str, pairs: set[tuple[str, str]], hint: Sequence[str], known: set[str]
) -> tuple[str, str]:
    for dataset, subset in sorted(pairs):  # sorted: deterministic if two pairs make the same stem
        if stem == f"{dataset}_{subset}":
            return dataset, subset
    prefixed = [d for d in hint if stem.startswith(d + "_") and len(stem) > len(d) + 1]
    if prefixed:
        dataset = max(prefixed, key=len)
        return dataset, stem[len(dataset) + 1 :]
    cut = [i for i, ch in enumerate(stem) if ch == "_" and 0 < i < len(stem) - 1]
    for i in cut:
        if stem[:i] in known:
            return stem[:i], stem[i + 1 :]
    if cut:
        return stem[: cut[0]], stem[cut[0] + 1 :]
    return stem, "default"


def _read_rows(path: Path, model: str, dataset: str, subset: str) -> dict[int, ImportedAnswer]:
    rows: dict[int, ImportedAnswer] = {}
    first_line: dict[int, int] = {}
    for lineno, rec in _iter_jsonl(path):
        where = f"{path}:{lineno}"
        key = _row_key(rec, where)
        if key is None:
            continue  # a repeat (generation_index > 0)
        if key in first_line:
            raise DatasetError(f"{where}: index: duplicate index {key} (first on line {first_line[key]})")
        first_line[key] = lineno
        rows[key] = _answer(rec, where, model, dataset, subset, key, str(path), lineno)
    return rows


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1:
                raw = raw.removeprefix(_BOM)
            if not raw.strip():
                continue
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: json: invalid JSON ({exc})") from None
            if not isinstance(rec, dict):
                raise DatasetError(f"{path}:{lineno}: row: expected a JSON object")
            yield lineno, rec


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _row_key(rec: Mapping[str, Any], where: str) -> int | None:
    score = rec.get("sample_score")
    if isinstance(score, dict) and "generation_index" in score:
        gen = score["generation_index"]
        if not _int(gen):
            raise DatasetError(f"{where}: sample_score.generation_index: expected an integer")
        if gen != 0:
            return None
        group = score.get("group_id")
        if isinstance(group, int) and not isinstance(group, bool) and group >= 0:
            return group
    if "index" not in rec:
        raise DatasetError(f"{where}: index: missing (every EvalScope row has its sample index)")
    index = rec["index"]
    if not _int(index) or index < 0:
        raise DatasetError(f"{where}: index: expected a non-negative integer, got {index!r}")
    return int(index)


def _text(content: Any, where: str, field: str) -> str:
    """Text of a message content: a string, or the text parts of an EvalScope/OpenAI content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise DatasetError(f"{where}: {field}: a text part without a string 'text'")
                parts.append(text)
        return "".join(parts)
    raise DatasetError(f"{where}: {field}: expected a string or a list of content parts")


def _last(messages: list[Any], role: str) -> tuple[int, Mapping[str, Any]] | None:
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        if isinstance(msg, dict) and msg.get("role") == role:
            return i, msg
    return None


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _answer(
    rec: Mapping[str, Any], where: str, model: str, dataset: str, subset: str, key: int, source: str, line: int
) -> ImportedAnswer:
    messages = rec.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise DatasetError(f"{where}: messages: expected a list")
    messages = messages or []
    output = _dict(rec.get("model_output"))
    choices = output.get("choices")
    first_choice = _dict(choices[0]) if isinstance(choices, list) and choices else {}
    sample_score = _dict(rec.get("sample_score"))

    answer_msg: Mapping[str, Any] | None = None
    found = _last(messages, "assistant")
    user = _last(messages, "user")
    if found is not None and user is not None and found[0] < user[0]:
        found = None  # an earlier turn of the chat, not the answer to its last question
    if found is not None:
        answer_msg = found[1]
        answer = _text(answer_msg.get("content"), where, f"messages[{found[0]}].content")
    elif "message" in first_choice:
        answer_msg = _dict(first_choice["message"])
        answer = _text(answer_msg.get("content"), where, "model_output.choices[0].message.content")
    elif isinstance(_dict(sample_score.get("score")).get("prediction"), str):
        answer = sample_score["score"]["prediction"]
    else:
        raise DatasetError(f"{where}: messages: no assistant message and no model_output or prediction")

    context: Context | None
    if user is not None:
        question = _text(user[1].get("content"), where, f"messages[{user[0]}].content")
        context = _context(messages[: user[0]], where, "messages")
    elif "input" in rec:
        raw = rec["input"]
        user_in = _last(raw, "user") if isinstance(raw, list) else None
        question = _text(user_in[1].get("content") if user_in else raw, where, "input")
        context = _context(raw[: user_in[0]], where, "input") if user_in else None
    else:
        raise DatasetError(f"{where}: messages: no user message (and no input)")

    reference: str | None = None
    if "target" in rec:
        target = rec["target"]
        if isinstance(target, list):
            target = next((t for t in target if isinstance(t, str) and t.strip()), None)
        elif target is not None and not isinstance(target, str):
            raise DatasetError(f"{where}: target: expected a string or a list of strings")
        reference = target if target and target.strip() else None

    usage = _dict(output.get("usage"))
    prompt_tokens = usage.get("input_tokens", usage.get("prompt_tokens"))
    completion_tokens = usage.get("output_tokens", usage.get("completion_tokens"))
    for name, value in (("input_tokens", prompt_tokens), ("output_tokens", completion_tokens)):
        if value is not None and (not _int(value) or value < 0):
            raise DatasetError(f"{where}: model_output.usage.{name}: expected a non-negative integer")

    latency = _dict(answer_msg.get("perf_metrics") if answer_msg else None).get("latency")
    if latency is None:
        latency = _dict(output.get("perf_metrics")).get("latency", output.get("time"))
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, int | float)):
        raise DatasetError(f"{where}: perf_metrics.latency: expected a number of seconds")

    return ImportedAnswer(
        model=model,
        dataset=dataset,
        subset=subset,
        index=key,
        question=question,
        answer=answer,
        reference=reference,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency=float(latency) if latency is not None else None,
        context=context,
        source=source,
        line=line,
    )


def _context(messages: list[Any], where: str, field_name: str) -> Context:
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise DatasetError(f"{where}: {field_name}[{i}]: expected a message with a string 'role'")
        content = msg.get("content")
        text = "" if content is None else _text(content, where, f"{field_name}[{i}].content")
        out.append((msg["role"], text))
    return tuple(out)


# ------------------------------------------------------------------------------ pairing by content


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
