"""``report.html``: the whole report as one self-contained page, with a battle browser.

The page is a static template (``report_template.html`` + ``report.css`` + ``report.js`` beside this
module) and one JSON document embedded in a ``<script type="application/json">`` tag. The script
builds every table, the SVG plots and the battle browser from that JSON with DOM calls that set
``textContent`` only, so model and judge text (untrusted) never becomes markup. The JSON itself is
made inert inside HTML by :func:`embed_json` (``<``, ``>``, ``&``, U+2028 and U+2029 escaped), and a
Content-Security-Policy lets only the page's own script (by its hash) run and forbids any request.

The battle view also shows the query's reference answer (read from the dataset files, when they are
still where the config says) and both answers' ROUGE/BLEU against it (``ref``, ``mc``, ``mo``).

Battle data is compact so 100k battles stay browsable: every distinct string (question, answer,
reasoning, model name, ...) is stored once in a string table, and the battles are columns of small
integers that index it (a baseline answer shared by two candidates is stored once).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from array import array
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from importlib import resources
from typing import Any, overload

import numpy as np
import orjson

from ..battles import Battle, excluded_games
from ..datasets import iter_queries
from ..errors import ArenaError
from ..identity import GENERATIONS, JUDGMENTS
from ..judge import Verdict
from ..metrics import METRIC_NAMES, sample_metrics_batch
from ..results import ArenaResults
from ..store import RunStore
from .json_report import report_dict
from .parts import INLINE_BATTLES, PART_BATTLES, iter_split, part_script

__all__ = ["BATTLE_COLUMNS", "DATA_SCHEMA", "NO_OUTCOME", "battle_data", "browser_files", "embed_json", "page_data",
           "render_html", "report_files", "report_html"]

DATA_SCHEMA = 1
NO_OUTCOME = 9  # outcome column value of a game that has no verdict (excluded or never judged)
NONE = -1  # string column value of a text that is not available
BATTLE_COLUMNS: tuple[str, ...] = (
    "sub",  # index into "subsets" ([dataset, subset] pairs)
    "cand", "opp",  # indexes into "models"
    "qid", "q",  # query id, question
    "ac", "ao",  # the candidate's answer, the opponent's answer
    "s",  # sample score x 4 (0..4: 0 = strong loss, 2 = tie, 4 = strong win) or -1 when excluded
    "o1", "o2",  # each game's outcome from the candidate's side (-2..2), NO_OUTCOME when it has none
    "r1", "r2",  # each game's judge reasoning (the raw judge output when it held no verdict)
    "x1", "x2",  # why each game is excluded, -1 when it is not
    "ref",  # the query's reference answer (the dataset's `response`), -1 when it has none
    "mc", "mo",  # indexes into "ref_scores": the candidate's / opponent's answer scored against the reference
)
_TEXT_COLUMNS = ("q", "ac", "ao", "r1", "r2")

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_JSON_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def embed_json(obj: Any) -> str:
    """JSON that is safe as the content of a ``<script>`` element.

    Escaping ``<`` makes ``</script>`` and ``<!--`` impossible inside the element; ``>`` and ``&``
    are escaped too so the text is inert in any HTML context, and U+2028/U+2029 so it is also valid
    as JavaScript source. ``JSON.parse`` reads the escapes back to the original characters.
    """
    text = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()
    for char, escape in _JSON_ESCAPES:
        text = text.replace(char, escape)  # one C-speed pass per character: faster than str.translate
    return text


class _Strings:
    """A table of distinct strings; ``add`` returns a string's index (-1 for None)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.items: list[str] = []

    def add(self, s: str | None) -> int:
        if s is None:
            return NONE
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.items)
            self.items.append(s)
        return i


# What the checkpoints say about one game: question, candidate's answer, opponent's answer, judge's text.
_GameTexts = tuple[str | None, str | None, str | None, str | None]


class _TextSource:
    """The texts of a run's battles, read from its checkpoints in one pass over each file (sequential
    reads beat one random read per record); only the records the battles point at are kept."""

    def __init__(self, store: RunStore, battles: Iterable[Battle]) -> None:
        self.store = store
        # keys as bytes, not hex (half the memory of a big run's tables); _key gives None for what no
        # record's key.hex() could be, so every lookup finds what the hex lookup found
        wanted = {_key(k) for b in battles for k in b.keys if k} - {None}
        # judgment key -> (candidate-as-A generation key, as-B generation key, the judge's text)
        self.judgments: dict[bytes, tuple[bytes | None, bytes | None, str | None]] = {}
        for key, rec in store.items(JUDGMENTS):
            if key in wanted:
                text = rec.get("reasoning") if rec.get("verdict") is not None else rec.get("raw")
                self.judgments[key] = (_key(rec.get("a_key")), _key(rec.get("b_key")), _str(text))
        wanted = {k for a, b, _ in self.judgments.values() for k in (a, b) if k}
        self.generations: dict[bytes, tuple[str | None, str | None]] = {}  # key -> (question, answer)
        for key, rec in store.items(GENERATIONS):
            if key in wanted:
                self.generations[key] = (_str(rec.get("question")), _str(rec.get("answer")))
        self._by_query: dict[tuple[str, str, str, str], dict[str, Any]] | None = None

    def game(self, judgment_key: str | None, candidate_is_a: bool) -> _GameTexts | None:
        k = _key(judgment_key)
        j = self.judgments.get(k) if k else None
        if j is None:
            return None
        a = self.generations.get(j[0]) if j[0] else None
        b = self.generations.get(j[1]) if j[1] else None
        cand, opp = (a, b) if candidate_is_a else (b, a)
        question = cand[0] if cand is not None else None
        if question is None and opp is not None:
            question = opp[0]
        return question, cand[1] if cand else None, opp[1] if opp else None, j[2]

    def latest_answer(self, model: str, dataset: str, subset: str, query_id: str) -> dict[str, Any] | None:
        """A model's answer found by query, for battles that never reached the judge (one scan, on demand)."""
        if self._by_query is None:
            self._by_query = {}
            for rec in self.store.records(GENERATIONS):
                k = (str(rec.get("model")), str(rec.get("dataset")), str(rec.get("subset")), str(rec.get("query_id")))
                self._by_query[k] = rec  # file order: the latest record of a query wins
        return self._by_query.get((model, dataset, subset, query_id))


def _key(x: object) -> bytes | None:
    """A record key's bytes from its hex (None for anything ``bytes.hex`` would not have written)."""
    if not isinstance(x, str) or not x:
        return None
    try:
        b = bytes.fromhex(x)
    except ValueError:
        return None
    return b if b.hex() == x else None


def _str(x: object) -> str | None:
    return x if isinstance(x, str) else None


def _answer(rec: dict[str, Any] | None) -> str | None:
    return None if rec is None else _str(rec.get("answer"))


def battle_data(results: ArenaResults, store: RunStore | None = None, *, arrays: bool = False) -> dict[str, Any]:
    """The battle browser's data: a string table, models, subsets and one integer column per field.

    Texts come from ``store`` (an open :class:`RunStore` of the run folder); without it the battles
    are listed with their verdicts but without questions, answers or reasoning. ``arrays``: the columns
    and ``text_ids`` as integer arrays, not lists (8 bytes a value instead of a Python int's ~36).
    """
    strings = _Strings()
    add = strings.add
    models: dict[str, int] = {}
    subsets: dict[tuple[str, str], int] = {}
    cols: dict[str, Any] = {c: array("q") if arrays else [] for c in BATTLE_COLUMNS}
    (c_sub, c_cand, c_opp, c_qid, c_q, c_ac, c_ao, c_s, c_o1, c_o2, c_r1, c_r2, c_x1, c_x2,
     c_ref, c_mc, c_mo) = cols.values()
    references = _references(results) if store is not None else {}
    scored: dict[tuple[str, str], int] = {}  # (answer, reference) -> index into ref_scores
    reasons = {(g.dataset, g.subset, g.query_id, g.candidate, g.opponent, g.candidate_is_a): g.reason
               for g in excluded_games(results.games)}
    source = _TextSource(store, results.battles) if store is not None else None
    for b in results.battles:
        t1 = t2 = None
        question = cand_answer = opp_answer = None
        if source is not None:
            t1 = source.game(b.keys[0], True)
            t2 = source.game(b.keys[1], False)
            for t in (t1, t2):
                if t is not None:
                    question = question if question is not None else t[0]
                    cand_answer = cand_answer if cand_answer is not None else t[1]
                    opp_answer = opp_answer if opp_answer is not None else t[2]
            if question is None or cand_answer is None or opp_answer is None:
                question, cand_answer, opp_answer = _fallback(source, b, question, cand_answer, opp_answer)
        sub = subsets.get((b.dataset, b.subset))
        if sub is None:
            sub = subsets[(b.dataset, b.subset)] = len(subsets)
        c_sub.append(sub)
        c_cand.append(models.setdefault(b.candidate, len(models)))
        c_opp.append(models.setdefault(b.opponent, len(models)))
        c_qid.append(add(b.query_id))
        c_q.append(add(question))
        c_ac.append(add(cand_answer))
        c_ao.append(add(opp_answer))
        c_s.append(NONE if b.score is None else round(4 * b.score))
        c_o1.append(NO_OUTCOME if b.first is None else b.first)
        c_o2.append(NO_OUTCOME if b.second is None else b.second)
        c_r1.append(add(t1[3]) if t1 is not None else NONE)
        c_r2.append(add(t2[3]) if t2 is not None else NONE)
        c_x1.append(NONE if b.first is not None else add(_reason(reasons, b, True)))
        c_x2.append(NONE if b.second is not None else add(_reason(reasons, b, False)))
        reference = references.get((b.dataset, b.subset, b.query_id))
        c_ref.append(add(reference))
        for answer, column in ((cand_answer, c_mc), (opp_answer, c_mo)):
            if reference is None or answer is None:
                column.append(NONE)
            else:
                column.append(scored.setdefault((answer, reference), len(scored)))
    if arrays:
        ids = np.unique(np.concatenate([np.frombuffer(cols[c], dtype=np.int64) for c in _TEXT_COLUMNS]))
        text_ids: Any = ids[ids != NONE]
    else:
        text_ids = sorted({i for c in _TEXT_COLUMNS for i in cols[c]} - {NONE})
    return {
        "schema": DATA_SCHEMA,
        "texts": store is not None,
        "strings": strings.items,
        "models": list(models),
        "subsets": [list(k) for k in subsets],
        "labels": [Verdict(code).label for code in (2, 1, 0, -1, -2)],
        "columns": cols,
        "text_ids": text_ids,
        "n": len(results.battles),
        "metric_names": list(METRIC_NAMES),
        "ref_scores": _score(scored, lazy=arrays),
    }


def _references(results: ArenaResults) -> dict[tuple[str, str, str], str]:
    """The reference answers of the battles' queries, read from the datasets (when they are still where
    the config says: a report rebuilt elsewhere shows the battles without them)."""
    wanted = {(b.dataset, b.subset) for b in results.battles}
    out: dict[tuple[str, str, str], str] = {}
    for d in results.config.datasets:
        try:
            for q in iter_queries(d.path, dataset=d.name, subsets=d.subsets, allow_empty=d.allow_empty):
                if q.reference is not None and (q.dataset, q.subset) in wanted:
                    out[(q.dataset, q.subset, q.id)] = q.reference
        except (ArenaError, OSError):
            continue
    return out


def _score(pairs: dict[tuple[str, str], int], *, lazy: bool = False) -> Sequence[list[float]]:
    """ROUGE/BLEU of each (answer, reference) pair, in index order, rounded to 4 places (``lazy``: each
    row rounded when it is read, so a big run's scores stay one float64 array, not lists of floats)."""
    if not pairs:
        return []
    ordered = sorted(pairs, key=pairs.__getitem__)
    scores = sample_metrics_batch([a for a, _ in ordered], [r for _, r in ordered])
    del ordered
    if lazy:
        return RoundedScores(scores)
    return [[round(float(x), 4) for x in row] for row in scores]


class RoundedScores(Sequence[list[float]]):
    """Rows of per-pair metrics, each rounded to 4 places as it is read (as :func:`_score` rounds them)."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def __len__(self) -> int:
        return len(self.scores)

    @overload
    def __getitem__(self, i: int) -> list[float]: ...
    @overload
    def __getitem__(self, i: slice) -> list[list[float]]: ...
    def __getitem__(self, i: int | slice) -> list[float] | list[list[float]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return [round(x, 4) for x in self.scores[i].tolist()]


def _reason(reasons: dict[tuple[str, str, str, str, str, bool], str | None], b: Battle, candidate_is_a: bool) -> str:
    key = (b.dataset, b.subset, b.query_id, b.candidate, b.opponent, candidate_is_a)
    if key not in reasons:
        return "not judged"
    return reasons[key] or "excluded"


def _fallback(source: _TextSource, b: Battle, question: str | None, cand: str | None,
              opp: str | None) -> tuple[str | None, str | None, str | None]:
    """Texts of a battle whose judgments are missing (an answer failed, or it was never judged)."""
    rc = source.latest_answer(b.candidate, b.dataset, b.subset, b.query_id) if cand is None else None
    ro = source.latest_answer(b.opponent, b.dataset, b.subset, b.query_id) if opp is None else None
    for r in (rc, ro):
        if question is None and r is not None:
            question = _str(r.get("question"))
    return question, cand if cand is not None else _answer(rc), opp if opp is not None else _answer(ro)


def page_data(results: ArenaResults, store: RunStore | None = None, *,
              report: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the page shows: ``report.json``'s numbers (``report``, made here if not given) and the
    battle browser's data."""
    return {"report": report if report is not None else report_dict(results), "battles": battle_data(results, store)}


@cache
def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _csp_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


def reliability_banner(data: dict[str, Any]) -> str:
    """A visible warning at the top of the page (static markup, shown without script too) when the
    judge's verdicts do not support a ranking or a scope lost many games; empty otherwise. Every text
    is escaped: scope titles hold dataset and subset names from the user's files."""
    rel = (data.get("report") or {}).get("reliability") or {}
    lines = [*rel.get("exit_reasons", []), *rel.get("warnings", [])]
    if not lines:
        return ""
    head = ("The ranking is NOT SUPPORTED by the judge's verdicts." if rel.get("exit_reasons")
            else "Some scopes have warnings about the judge's verdicts.")
    items = "".join(f"<li>{html.escape(str(x))}</li>" for x in lines)
    return (f'<div id="reliability-banner" class="banner" role="alert"><strong>{html.escape(head)}</strong>'
            f"<ul>{items}</ul></div>")


def render_html(data: dict[str, Any]) -> str:
    """The page for ``data`` (as made by :func:`page_data`; with ``battles.parts``, the page's script
    loads them from beside it once it is drawn, see :mod:`.parts`)."""
    script = _asset("report.js")
    css = _asset("report.css")
    for name, text in (("report.js", script), ("report.css", css)):
        if re.search(r"</(script|style)", text, re.IGNORECASE):  # pragma: no cover - guards our own assets
            raise ValueError(f"{name} must not contain a closing </script> or </style> tag")
    parts = (data.get("battles") or {}).get("parts") or []
    # Parts are scripts beside the page: allowed from its own folder ('self' when served, file: from disk).
    beside = " 'self' file:" if parts else ""
    csp = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src '{_csp_hash(script)}'{beside}; base-uri 'none'; form-action 'none'"
    )
    from .panel_report import panel_html
    from .stop_report import stop_html

    fill = {"csp": csp, "css": css, "js": script, "data": embed_json(data), "banner": reliability_banner(data),
            "panel": panel_html(data.get("report") or {}) + stop_html(data.get("report") or {})}
    return _PLACEHOLDER.sub(lambda m: fill[m.group(1)], _asset("report_template.html"))


def report_files(results: ArenaResults, store: RunStore | None = None, *, report: dict[str, Any] | None = None,
                 inline: int = INLINE_BATTLES, part_size: int = PART_BATTLES) -> tuple[str, dict[str, str]]:
    """``report.html`` and the part files beside it (relative path -> text; none for a run of at most
    ``inline`` battles)."""
    head, files = browser_files(results, store, inline=inline, part_size=part_size)
    return render_html({"report": report if report is not None else report_dict(results), "battles": head}), files


def browser_files(results: ArenaResults, store: RunStore | None = None, *, inline: int = INLINE_BATTLES,
                  part_size: int = PART_BATTLES) -> tuple[dict[str, Any], dict[str, str]]:
    """The battle browser of ``report.html``: the page's battle data (the first ``inline`` battles) and
    the part files beside it (relative path -> text). It depends on the games, the checkpoints' texts
    and the datasets' references, never on the ratings."""
    head, parts = iter_browser(results, store, inline=inline, part_size=part_size)
    return head, dict(parts)


def iter_browser(results: ArenaResults, store: RunStore | None = None, *, inline: int = INLINE_BATTLES,
                 part_size: int = PART_BATTLES) -> tuple[dict[str, Any], Iterator[tuple[str, str]]]:
    """:func:`browser_files` with the part files made one at a time ((relative path, text), in order),
    so that a writer holds one part's text at once."""
    head, parts = iter_split(battle_data(results, store, arrays=True), inline=inline, part_size=part_size)
    return head, ((p["src"], part_script(i + 1, part)) for i, (p, part) in enumerate(zip(head.get("parts", []), parts, strict=True)))


def report_html(results: ArenaResults, store: RunStore | None = None, *,
                report: dict[str, Any] | None = None) -> str:
    """The whole ``report.html`` of ``results`` as one page, every battle inside it (texts come from
    ``store``, see :func:`battle_data`); ``write_reports`` writes big runs in parts (:func:`report_files`)."""
    return render_html(page_data(results, store, report=report))
