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

From each row: answer = the last assistant message of ``messages`` (string content, or the text
parts of a content list; reasoning parts are left out), else ``model_output.choices[0].message``,
else ``sample_score.score.prediction``; question = the last user message (or ``input`` in older
review rows); reference = ``target`` (a string or a list whose first entry is used; empty = none);
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
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from arena_engine.errors import DatasetError

__all__ = ["ImportedAnswer", "load_evalscope_answers"]

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
        rows[key] = _answer(rec, where, model, dataset, subset, key)
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
    rec: Mapping[str, Any], where: str, model: str, dataset: str, subset: str, key: int
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

    user = _last(messages, "user")
    if user is not None:
        question = _text(user[1].get("content"), where, f"messages[{user[0]}].content")
    elif "input" in rec:
        raw = rec["input"]
        user_in = _last(raw, "user") if isinstance(raw, list) else None
        question = _text(user_in[1].get("content") if user_in else raw, where, "input")
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
    )
