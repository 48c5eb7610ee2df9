"""Where an EvalScope run keeps one model's files, and how a file name splits into dataset and subset
(see `evalscope_import` for the layout and the order the split tries)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from arena_engine.errors import DatasetError

__all__ = ["BOM", "KNOWN_DATASETS", "PREDICTIONS", "REPORTS", "REVIEWS", "known_datasets", "locate",
           "report_pairs", "split_stem", "subset_files"]

REPORTS, REVIEWS, PREDICTIONS = "reports", "reviews", "predictions"
KNOWN_DATASETS: tuple[str, ...] = ("general_qa", "general_mcq", "general_arena")
"""EvalScope's custom-dataset benchmark names, used to split ``<dataset>_<subset>`` stems."""
BOM = b"\xef\xbb\xbf"


def locate(path: Path, model: str | None) -> tuple[Path, str]:
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


def subset_files(run_dir: Path, model: str) -> dict[str, tuple[Path | None, Path | None]]:
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
        return orjson.loads(path.read_bytes().removeprefix(BOM))
    except orjson.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def report_pairs(report_dir: Path) -> set[tuple[str, str]]:
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


def known_datasets(run_dir: Path) -> set[str]:
    """Dataset names from the report JSON files of every model of the run, plus EvalScope's own."""
    known = set(KNOWN_DATASETS)
    reports = run_dir / REPORTS
    if reports.is_dir():
        for model_dir in reports.iterdir():
            if model_dir.is_dir():
                known.update(d for d, _ in report_pairs(model_dir))
    return known


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def split_stem(
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
