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

Where things are: finding the files and splitting their names (`evalscope_files`), reading a row
(`evalscope_rows`), pairing rows with queries (`evalscope_match`); this module puts them together.

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

from collections.abc import Sequence
from pathlib import Path

from arena_engine.errors import DatasetError
from arena_engine.evalscope_files import (
    PREDICTIONS,
    REPORTS,
    REVIEWS,
    known_datasets,
    locate,
    report_pairs,
    split_stem,
    subset_files,
)
from arena_engine.evalscope_match import ImportIndex, MismatchMode, Unmatched
from arena_engine.evalscope_rows import ImportedAnswer, read_rows

__all__ = ["ImportIndex", "ImportedAnswer", "MismatchMode", "Unmatched", "load_evalscope_answers"]


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
    run_dir, model_name = locate(Path(report_path), model)
    if isinstance(datasets, str):
        raise TypeError("datasets must be a sequence of names, not a string")
    hint = tuple(datasets) if datasets is not None else ()
    files = subset_files(run_dir, model_name)
    if not files:
        raise DatasetError(
            f"{run_dir}: no {REVIEWS}/{model_name}/*.jsonl nor {PREDICTIONS}/{model_name}/*.jsonl files; "
            "is this an EvalScope output folder?"
        )
    pairs = report_pairs(run_dir / REPORTS / model_name)
    known = known_datasets(run_dir)
    answers: list[ImportedAnswer] = []
    found: set[str] = set()
    for stem in sorted(files):
        dataset, subset = split_stem(stem, pairs, hint, known)
        if hint and dataset not in hint:
            continue
        found.add(dataset)
        review, prediction = files[stem]
        rows: dict[int, ImportedAnswer] = {}
        if review is not None:
            rows = read_rows(review, model_name, dataset, subset)
        if prediction is not None:
            for key, row in read_rows(prediction, model_name, dataset, subset).items():
                rows.setdefault(key, row)
        answers.extend(rows[k] for k in sorted(rows))
    missing = [d for d in hint if d not in found]
    if missing:
        raise DatasetError(
            f"{run_dir}: model {model_name!r} has no answers for dataset(s) {', '.join(map(repr, missing))}"
        )
    answers.sort(key=lambda a: (a.dataset, a.subset, a.index))
    return answers
