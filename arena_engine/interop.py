"""Judgments made by other tools, rated here without sending a request.

- Arena-Hard-Auto: ``model_judgment/<judge>/<model>.jsonl``, one row per question
  ``{"question_id", "model", "judge", "games": [game 1, game 2]}``, each game
  ``{"user_prompt", "judgment", "score"}`` with ``score`` one of ``A>>B``, ``A>B``, ``A=B``, ``B>A``,
  ``B>>A`` (or null: no verdict). Game 1 shows the baseline as A and the model as B; game 2 the other
  way round (Arena-Hard-Auto's ``show_result.py``). The baseline is not in the rows: it is the
  ``baseline_model`` of Arena-Hard's config (``gpt-4-0314`` by default).
- AlpacaEval: ``annotations.json``, a list of ``{"instruction", "output_1", "generator_1", "output_2",
  "generator_2", "preference"}`` where ``preference`` is 1 (output_1 preferred), 2 (output_2), 1.5
  (a tie; AlpacaEval 2's weighted preferences in between are read as the nearer side, 1.5 as a tie)
  or null. Output 1 is shown first; its generator is the baseline.

Each row becomes :class:`~arena_engine.battles.Game` s, rated like a run's own (a strong verdict counts
``strong_weight`` times, 3 as in Arena-Hard; a tie half a win each). Questions are matched by content:
AlpacaEval's by the instruction text, Arena-Hard's by ``question_id``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from .battles import ExclusionReason, Game
from .errors import DatasetError

ARENA_HARD_BASELINE = "gpt-4-0314"
_FROM_A = {"A>>B": 2, "A>B": 1, "A=B": 0, "B>A": -1, "B>>A": -2}  # outcome for the answer shown as A


def _jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{n}: not valid JSON: {exc}") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{n}: a row must be a JSON object")
        yield n, row


def arena_hard_games(path: str | Path, *, baseline: str = ARENA_HARD_BASELINE, bench: str = "arena-hard") -> list[Game]:
    """The games of an Arena-Hard-Auto judgment file, or of every ``*.jsonl`` in a judge's folder."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise DatasetError(f"{path}: no *.jsonl judgment file in this folder")
    games: list[Game] = []
    for f in files:
        for n, row in _jsonl(f):
            where = f"{f}:{n}"
            model, qid, rounds = row.get("model"), row.get("question_id"), row.get("games")
            if not isinstance(model, str) or not model:
                raise DatasetError(f"{where}: model: must be a non-empty string")
            if not isinstance(qid, str | int) or isinstance(qid, bool):
                raise DatasetError(f"{where}: question_id: must be a string or an integer")
            if not isinstance(rounds, list) or len(rounds) != 2 or not all(isinstance(g, dict) for g in rounds):
                raise DatasetError(f"{where}: games: must be a list of the two games")
            if model == baseline:
                continue  # the baseline against itself carries no information
            for i, game in enumerate(rounds):
                score = game.get("score")
                if score is not None and score not in _FROM_A:
                    raise DatasetError(f"{where}: games[{i}].score: must be one of {list(_FROM_A)} or null, got {score!r}")
                candidate_is_a = i == 1  # game 1: the baseline is A; game 2: the model is A
                outcome = None if score is None else (_FROM_A[score] if candidate_is_a else -_FROM_A[score])
                games.append(Game(bench, "judgments", str(qid), model, baseline, candidate_is_a, outcome,
                                  None if score is not None else ExclusionReason.NO_IMPORTED_VERDICT.value))
    return games


def _query_id(text: str) -> str:
    return hashlib.blake2b(" ".join(text.split()).encode(), digest_size=8).hexdigest()


def alpacaeval_games(path: str | Path, *, dataset: str = "alpaca_eval") -> list[Game]:
    """The games of an AlpacaEval ``annotations.json`` (generator_1 is the baseline, shown first)."""
    path = Path(path)
    try:
        rows = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(rows, list):
        raise DatasetError(f"{path}: must be a JSON list of annotations")
    games: list[Game] = []
    for i, row in enumerate(rows):
        where = f"{path}: [{i}]"
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: must be an object")
        for key in ("instruction", "generator_1", "generator_2"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise DatasetError(f"{where}.{key}: must be a non-empty string")
        pref = row.get("preference")
        if pref is not None and (isinstance(pref, bool) or not isinstance(pref, int | float) or not 1 <= pref <= 2):
            raise DatasetError(f"{where}.preference: must be a number from 1 to 2 or null, got {pref!r}")
        if row["generator_1"] == row["generator_2"]:
            continue
        outcome = None if pref is None else (1 if pref > 1.5 else -1 if pref < 1.5 else 0)  # generator_2's side
        games.append(Game(dataset, "annotations", _query_id(row["instruction"]), row["generator_2"], row["generator_1"],
                          False, outcome, None if pref is not None else ExclusionReason.NO_IMPORTED_PREFERENCE.value))
    return games


def models_of(games: Sequence[Game], baseline: str) -> list[str]:
    """The baseline first, then every other model in first-seen order."""
    names = dict.fromkeys([baseline])
    for g in games:
        names.setdefault(g.candidate)
        names.setdefault(g.opponent)
    return list(names)


_LABEL_FROM_A = {v: k for k, v in _FROM_A.items()}

GAME_COLUMNS = ("dataset", "subset", "query_id", "candidate", "opponent", "candidate_is_a", "outcome", "reason")


def games_csv(games: Sequence[Game]) -> str:
    """One row per game (``outcome`` from the candidate's side, -2..2, empty when excluded), for pandas."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(GAME_COLUMNS)
    for g in games:
        w.writerow([g.dataset, g.subset, g.query_id, g.candidate, g.opponent, int(g.candidate_is_a),
                    "" if g.outcome is None else g.outcome, g.reason or ""])
    return buf.getvalue()


def arena_hard_rows(games: Sequence[Game], *, baseline: str, judge: str) -> dict[str, list[dict[str, Any]]]:
    """Our games in Arena-Hard-Auto's judgment format, per model: {model: rows of <model>.jsonl}.

    Only battles against the baseline (Arena-Hard judges every model against one); each row has both
    games, game 1 with the baseline as A. ``score`` is the label from A's view (null when the game has
    no verdict); ``judgment`` and ``user_prompt`` are left empty (Arena-Hard's scores need only
    ``score``). The question id is ``<dataset>/<subset>/<query id>``.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    out: dict[str, list[dict[str, Any]]] = {}
    for g in games:
        if g.opponent != baseline:
            continue
        qid = f"{g.dataset}/{g.subset}/{g.query_id}"
        row = rows.get((g.candidate, qid))
        if row is None:
            row = rows[(g.candidate, qid)] = {"question_id": qid, "model": g.candidate, "judge": judge,
                                              "games": [{"user_prompt": "", "judgment": "", "score": None}
                                                        for _ in range(2)]}
            out.setdefault(g.candidate, []).append(row)
        # game 1: the baseline is A (the candidate is B); game 2: the candidate is A
        from_a = None if g.outcome is None else (g.outcome if g.candidate_is_a else -g.outcome)
        row["games"][1 if g.candidate_is_a else 0]["score"] = None if from_a is None else _LABEL_FROM_A[from_a]
    return out
