"""A run's results as a pure function of its checkpoints: :func:`results_from_store`.

``report``, ``rate``, ``export``, a rerun with nothing left to send and the Ray driver's last pass
call it; nothing runs the sending pipeline to read results. It walks the queries in the run's order
(an adaptive run: the same seeded blocks, so its stopping decisions are those of the run), one query at
a time in one thread: each model's stored answer, each battle's stored verdicts in both orders (a
cascade goes on to its next judge where ``panel.escalate`` says), a game without a verdict taking the
run's own failure reason or counted as missing. The per-query rules are those of the sending run
(run.Arena): every game and count comes out as the run's own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import runlog, snapshot
from .battles import ExclusionReason, Game
from .config import JudgeConfig, ModelConfig, RunConfig
from .datasets import Query, iter_queries
from .game_columns import GameBuilder, columns_of
from .identity import (
    GENERATIONS,
    JUDGMENTS,
    find_generation,
    find_judgment,
    generation_request,
    holds_legacy,
    judge_identity,
    judgment_request,
    model_identity,
)
from .judge import DEFAULT_SYSTEM_PROMPT, Verdict, candidate_view
from .pairing import pairs_of
from .panel import calibration_draw, escalate
from .results import ArenaResults, ReferenceItem, Tally, assemble, reference_metrics
from .roles import judge_role
from .runlog import RunHistory
from .store import RunStore, content_key
from .usage import EndpointUsage

FAILURES = "failures"


@dataclass(frozen=True)
class JudgeSlot:
    """One judge of the run as the pipeline uses it: its endpoint role, config, identity and prompt."""

    role: str
    cfg: JudgeConfig
    identity: str
    system: str


def judge_slots(cfg: RunConfig) -> tuple[list[JudgeSlot], list[JudgeSlot]]:
    """(the run's judges, the order they judge a battle in: a cascade's order, else all of them)."""
    slots = [JudgeSlot(judge_role(i, j.name), j, judge_identity(j), j.system_prompt or DEFAULT_SYSTEM_PROMPT)
             for i, j in enumerate(cfg.panel_judges)]
    by_name = {s.cfg.name: s for s in slots}
    return slots, [by_name[n] for n in cfg.panel.cascade] if cfg.panel.cascade else list(slots)


def iter_run_queries(cfg: RunConfig, part: tuple[int, int] | None = None) -> Iterator[Query]:
    """The run's queries in dataset order (a part's: those whose position % n == i)."""
    position = 0
    for d in cfg.datasets:
        for q in iter_queries(d.path, dataset=d.name, subsets=d.subsets, allow_empty=d.allow_empty):
            if part is None or position % part[1] == part[0]:
                yield q
            position += 1


def load_imports(cfg: RunConfig) -> dict[str, dict[tuple[str, str, str], Any]]:
    """Per model with ``evalscope_report``: its imported answers by (dataset, subset, query id), paired
    by question text against every query (positions count, so never a part's only)."""
    imported: dict[str, dict[tuple[str, str, str], Any]] = {}
    names = [d.name for d in cfg.datasets]
    for m in cfg.models:
        if m.evalscope_report is not None:
            from .evalscope_import import ImportIndex, load_evalscope_answers

            found = load_evalscope_answers(m.evalscope_report, datasets=names)
            index = ImportIndex.build(found, iter_run_queries(cfg))
            index.check(m.evalscope_mismatch, model=m.name)
            imported[m.name] = index.by_query()
    return imported


def import_record(m: ModelConfig, q: Query, found: Any) -> tuple[bytes, dict[str, Any] | None]:
    """(the key an imported answer is stored under, its record; None when the report has no answer)."""
    key = content_key({"t": "import", "model": m.name, "report": str(m.evalscope_report), "dataset": q.dataset,
                       "subset": q.subset, "query_id": q.id, "answer": found.answer if found else None})
    if found is None:
        return key, None
    return key, {"model": m.name, "endpoint_model": m.endpoint.model, "dataset": q.dataset, "subset": q.subset,
                 "query_id": q.id, "question": q.question, "answer": found.answer, "finish_reason": None,
                 "prompt_tokens": found.prompt_tokens or 0, "completion_tokens": found.completion_tokens or 0,
                 "latency": found.latency, "attempts": 0, "imported_from": str(m.evalscope_report),
                 "imported_row": f"{found.source}:{found.line}"}


def verdict_game(q: Query, cand: str, opp: str, candidate_is_a: bool, key: bytes, rec: dict[str, Any],
                 judge: str | None) -> Game:
    """The game a stored verdict gives (excluded when the verdict was unparseable)."""
    label = rec.get("verdict")
    outcome = candidate_view(Verdict.from_label(label), candidate_is_a) if label is not None else None
    return Game(q.dataset, q.subset, q.id, cand, opp, candidate_is_a, outcome,
                None if outcome is not None else f"{ExclusionReason.UNPARSEABLE_VERDICT}: {rec.get('error')}", key.hex(), judge)


def count_record(usage: EndpointUsage, key: bytes, rec: Mapping[str, Any], counted: set[bytes]) -> None:
    """Count a record in the usage once per query, however many battles use it."""
    if key in counted:
        usage.shared += 1
    else:
        counted.add(key)
        usage.use(rec)


def cascade_goes_on(cfg: RunConfig, order: list[JudgeSlot], i: int, q: Query, cand: str, opp: str,
                    first: int | None, second: int | None) -> bool:
    """Whether a cascade sends the battle on from its i-th judge to the next."""
    if i + 1 >= len(order):
        return False
    draw = calibration_draw(cfg.seed, order[i].cfg.name, (q.dataset, q.subset, q.id, cand, opp))
    return escalate(first, second, draw=draw, calibration=cfg.panel.calibration)


def results_from_store(store: RunStore, cfg: RunConfig, *,
                       imported: dict[str, dict[tuple[str, str, str], Any]] | None = None) -> ArenaResults:
    """The results of ``cfg`` from the open ``store`` of its run folder, sending nothing (see the module
    docstring). A writable store gets the copies a lookup makes (0.1.0 keys, imported answers).
    ``imported``: the EvalScope answers :func:`load_imports` gave, when the caller has read them."""
    tally = tally_from_store(store, cfg, imported=imported)
    complete(store, cfg, tally)
    return assemble(cfg, store.run_dir, tally)


def tally_from_store(store: RunStore, cfg: RunConfig, *,
                     imported: dict[str, dict[tuple[str, str, str], Any]] | None = None,
                     copy: bool = True) -> Tally:
    """The walk of :func:`results_from_store` before anything is rated (no rating module is imported):
    ``copy=False`` writes nothing (a sending run asking whether anything is left). The folder's results
    snapshot stands in for the walk when nothing the walk reads has changed since it was saved
    (arena_engine.snapshot); a walk's tally is saved by :func:`complete`."""
    started = time.monotonic()
    tally = snapshot.load(store.run_dir, cfg, started) if snapshot.eligible(cfg) else None
    if tally is None:
        before = snapshot.fingerprint(store.run_dir, cfg, digests={}) if snapshot.eligible(cfg) else None
        tally = _Walk(store, cfg, imported, copy).run()
        tally.started = started
        tally.walked = before
    tally.history = runlog.history(store.run_dir)
    return tally


def complete(store: RunStore, cfg: RunConfig, tally: Tally) -> None:
    """Score the reference metrics of ``tally`` (unless a snapshot gave them) and, after a walk, save
    its snapshot: only when the files it read were the same before and after it (a walk that copied
    records, or a dataset edited meanwhile, leaves the next caller to walk again)."""
    if tally.metric_sums is None:
        tally.metric_sums = reference_metrics(tally.reference_items)
    before, tally.walked = tally.walked, None
    if before is None or store.readonly:
        return
    after = snapshot.fingerprint(store.run_dir, cfg)
    unchanged = after["files"] == before["files"] and after["listings"] == before["listings"]
    if unchanged and snapshot.save(store.run_dir, cfg, tally, tally.metric_sums, after):
        tally.inputs = snapshot.inputs_digest(after)


def results_of_folder(cfg: RunConfig) -> ArenaResults:
    """:func:`results_from_store` on ``cfg``'s run folder, opened (and its workers' stores merged) for the call."""
    from .store.layered import merge_worker_stores

    with RunStore(cfg.output_dir, fsync_interval=cfg.fsync_interval) as store:
        merge_worker_stores(store)  # a distributed run that stopped early left its workers' checkpoints beside ours
        return results_from_store(store, cfg)


class _Walk:
    """One walk over a run's queries against its checkpoints."""

    def __init__(self, store: RunStore, cfg: RunConfig,
                 imported: dict[str, dict[tuple[str, str, str], Any]] | None, copy: bool) -> None:
        self.store, self.cfg, self.copy = store, cfg, copy and not store.readonly
        self.slots, self.order = judge_slots(cfg)
        self.tagged = len(self.slots) > 1
        self.cascade = bool(cfg.panel.cascade) and self.tagged
        self.identities = {m.name: model_identity(cfg, m) for m in cfg.models}
        self.legacy = {kind: holds_legacy(store, kind) for kind in (GENERATIONS, JUDGMENTS)}
        self.games: GameBuilder | list[Game] = GameBuilder()  # columns; an adaptive run's GameLog
        self.usage = {m.name: EndpointUsage(m.name) for m in cfg.models}
        self.usage.update({s.role: EndpointUsage(s.cfg.name) for s in self.slots})
        self.failures = self.missing = 0
        self.references: list[ReferenceItem] = []
        self.failed = self._judgment_failures()
        if cfg.panel.human_labels is not None:  # a bad label file is an error here as in a run
            from .judge_quality import read_human_labels

            read_human_labels(cfg.panel.human_labels, [m.name for m in cfg.models])
        self.imported = load_imports(cfg) if imported is None else imported

    def run(self) -> Tally:
        cfg = self.cfg
        queries: dict[tuple[str, str], int] = {}
        stopping = None
        if not cfg.stop.active:
            for q in iter_run_queries(cfg):
                queries[(q.dataset, q.subset)] = queries.get((q.dataset, q.subset), 0) + 1
                self._query(q, list(cfg.models), pairs_of(cfg, q))
        else:  # an adaptive run: its blocks in the seeded order, as it sent them
            from .stopping.hook import AdaptiveRun, GameLog

            every = list(iter_run_queries(cfg))
            for q in every:
                queries[(q.dataset, q.subset)] = queries.get((q.dataset, q.subset), 0) + 1
            stop = AdaptiveRun(cfg, every)
            self.games = log = GameLog()
            k = 0
            while not stop.schedule.finished(k):
                for q in list(stop.block(k)):
                    needed, pairs = stop.battles(q, pairs_of(cfg, q))
                    self._query(q, [m for m in cfg.models if m.name in needed], pairs)
                    stop.done(q, log.take((q.dataset, q.subset, q.id)))
                k += 1
            stopping = stop.summary()
        return Tally(columns_of(self.games), self.usage, self.failures, self.missing, self.references, queries,
                     time.monotonic(), stopping=stopping, history=RunHistory())

    def _judgment_failures(self) -> dict[tuple[Any, ...], str]:
        """Judge requests that failed for good in the run, by battle, order and (a panel) judge."""
        found: dict[tuple[Any, ...], str] = {}
        for rec in self.store.records(FAILURES):
            if rec.get("stage") == "judgment":
                key = (rec["dataset"], rec["subset"], rec["query_id"], rec["candidate"], rec["opponent"],
                       bool(rec["candidate_is_a"]), rec.get("endpoint") if self.tagged else None)
                found[key] = rec.get("error") or "error"
        return found

    def _put(self, kind: str, key: bytes, rec: dict[str, Any]) -> None:
        if self.copy:
            self.store.put(kind, key, rec)

    def _query(self, q: Query, models: list[ModelConfig], pairs: list[tuple[str, str]]) -> None:
        counted: set[bytes] = set()
        answers = {m.name: self._answer(m, q, counted) for m in models}
        for cand, opp in pairs:
            a_c, a_o = answers[cand], answers[opp]
            if a_c is None or a_o is None:
                missing = cand if a_c is None else opp
                for slot in self.order[:1] if self.cascade else self.order:
                    for candidate_is_a in (True, False):
                        self.games.append(Game(q.dataset, q.subset, q.id, cand, opp, candidate_is_a, None,
                                               f"{ExclusionReason.NO_ANSWER}: {missing}", judge=self._tag(slot)))
                continue
            for i, slot in enumerate(self.order):
                first = self._verdict(slot, q, cand, opp, a_c, a_o, True, counted)
                second = self._verdict(slot, q, cand, opp, a_c, a_o, False, counted)
                if self.cascade and not cascade_goes_on(self.cfg, self.order, i, q, cand, opp, first, second):
                    break

    def _tag(self, slot: JudgeSlot) -> str | None:
        return slot.cfg.name if self.tagged else None

    def _answer(self, m: ModelConfig, q: Query, counted: set[bytes]) -> dict[str, Any] | None:
        usage = self.usage[m.name]
        if m.name in self.imported:
            key, rec = import_record(m, q, self.imported[m.name].get((q.dataset, q.subset, q.id)))
            if rec is None:
                self.missing += 1
                return None
            if self.store.get(GENERATIONS, key) is None:
                self._put(GENERATIONS, key, rec)
            usage.use(rec)
        else:
            req = generation_request(self.identities[m.name], m, q)
            key = req.key
            found, migrated = find_generation(self.store, m, req, legacy=self.legacy[GENERATIONS])
            if found is None:
                self.missing += 1
                return None
            rec = found
            if migrated:
                self._put(GENERATIONS, key, rec)
            usage.reused += 1
            count_record(usage, key, rec, counted)
        if q.reference is not None:
            self.references.append((m.name, q.dataset, q.subset, rec["answer"], q.reference))
        return rec

    def _verdict(self, slot: JudgeSlot, q: Query, cand: str, opp: str, a_c: dict[str, Any], a_o: dict[str, Any],
                 candidate_is_a: bool, counted: set[bytes]) -> int | None:
        first, second = (a_c, a_o) if candidate_is_a else (a_o, a_c)
        req = judgment_request(slot.cfg, slot.identity, slot.system, q, first["answer"], second["answer"])
        key, rec, _, migrated = find_judgment(self.store, slot.cfg, req, legacy=self.legacy[JUDGMENTS])
        if rec is None:
            failed = self.failed.get((q.dataset, q.subset, q.id, cand, opp, candidate_is_a, self._tag(slot)))
            if failed is None:
                self.missing += 1
                reason = ExclusionReason.NOT_JUDGED_YET.value
            else:  # the run's own reason, so `report` shows what the run showed
                self.failures += 1
                reason = f"{ExclusionReason.JUDGE_REQUEST_FAILED}: {failed}"
            self.games.append(Game(q.dataset, q.subset, q.id, cand, opp, candidate_is_a, None, reason,
                                   judge=self._tag(slot)))
            return None
        if migrated:
            self._put(JUDGMENTS, req.key, rec)
        usage = self.usage[slot.role]
        usage.reused += 1
        count_record(usage, key, rec, counted)
        game = verdict_game(q, cand, opp, candidate_is_a, key, rec, self._tag(slot))
        self.games.append(game)
        return game.outcome
