"""What one sending run shares between its stages: the open store, the clients, the judges, the counters.

The stages (``answers``, ``judging``, ``queries``) and the run's end (``finish``) read and update one
:class:`RunContext`; the :class:`~arena_engine.run.arena.Arena` owns it. Nothing here sends a request.
"""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anyio

from ..client import RETRY_BUDGET_EXHAUSTED, ChatClient, ChatResult
from ..config import RunConfig
from ..datasets import Query
from ..from_store import FAILURES, JudgeSlot, judge_slots
from ..game_columns import GameBuilder
from ..identity import model_identity
from ..inflight import InFlight
from ..progress import StageProgress
from ..results import MetricSums
from ..snapshot import ItemsDigest
from ..store import RunStore, content_key
from ..store.layered import LayeredStore
from ..usage import EndpointUsage

if TYPE_CHECKING:
    from ..batch.session import BatchChat, BatchSession
    from ..battles import Game
    from ..evalscope_import import ImportedAnswer
    from ..stopping.hook import AdaptiveRun, GameLog

# the name users filter on in their logging config (and the one releases up to 0.4 used): kept as it was
log = logging.getLogger("arena_engine.pipeline")


class ReferenceQueue:
    """The answers to score against their references after the run, as (model, dataset, subset, answer
    key, reference): the groups and the references as codes (one query's reference is every model's),
    the keys in one bytearray, so a 100k-query run holds ~30 bytes an answer instead of a tuple's ~150."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str, str], int] = {}
        self._refs: dict[str, int] = {}
        self._group = array("i")
        self._ref = array("i")
        self._keys = bytearray()
        self._key_size = 0
        self._odd: dict[int, bytes] = {}  # keys of another length, by row

    def append(self, item: tuple[str, str, str, bytes, str]) -> None:
        model, dataset, subset, key, reference = item
        self._group.append(self._groups.setdefault((model, dataset, subset), len(self._groups)))
        self._ref.append(self._refs.setdefault(reference, len(self._refs)))
        if not self._key_size:
            self._key_size = len(key) or -1
        if len(key) == self._key_size:
            self._keys += key
        else:
            self._odd[len(self._group) - 1] = key
            self._keys += b"\0" * max(self._key_size, 0)

    def __len__(self) -> int:
        return len(self._group)

    def __iter__(self) -> Iterator[tuple[str, str, str, bytes, str]]:
        groups, refs, size = list(self._groups), list(self._refs), max(self._key_size, 0)
        for i, (g, r) in enumerate(zip(self._group, self._ref, strict=True)):
            key = self._odd.get(i)
            if key is None:
                key = bytes(self._keys[i * size:(i + 1) * size])
            yield (*groups[g], key, refs[r])

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]


class RunContext:
    """The state of one run: set up by the arena's opening, read and counted by its stages."""

    def __init__(self, config: RunConfig, *, offline: bool, part: tuple[int, int] | None,
                 retry_excluded: bool, batch: BatchSession | None) -> None:
        self.config = config
        self.offline = offline
        self.part = part  # (i, n): this arena handles the queries whose position % n == i
        self.batch = batch  # endpoints in batch mode (arena_engine.batch.session): None sends everything live
        self.retry_excluded = retry_excluded and not offline  # ask the judge again for unparseable verdicts
        self.store: RunStore | LayeredStore | None = None
        self.legacy: dict[str, bool] = {}  # kind -> the folder holds 0.1.0 records of it
        self.run_scope: anyio.CancelScope | None = None
        self.clients: dict[str, ChatClient | BatchChat] = {}
        self.imported: dict[str, dict[tuple[str, str, str], ImportedAnswer]] = {}
        self.identities = {m.name: model_identity(config, m) for m in config.models}
        self.slots, self.order = judge_slots(config)
        self.cascade = bool(config.panel.cascade) and len(self.slots) > 1
        self.tag_judge = len(self.slots) > 1  # games say which judge made them (None: the one judge)
        self.schema_failed: set[str] = set()  # judges whose endpoint failed on the schema a parse retry added
        self.in_flight = InFlight()
        self.sending = anyio.Event()  # the first request was handed to a client: time to load the kernels
        self.finished = anyio.Event()
        self.started = time.monotonic()
        # what the results count
        self.games: GameBuilder | list[Game] = GameBuilder()  # columns; an adaptive run's GameLog
        self.stop: AdaptiveRun | None = None  # [arena.stop]: set once the queries are counted
        self.game_log: GameLog | None = None  # an adaptive run's games, also kept per query until it is done
        self.usage: dict[str, EndpointUsage] = {}
        self.stages: dict[str, StageProgress] = {}
        self.queries: dict[tuple[str, str], int] = {}
        self.failures = 0
        self.missing = 0
        self.deferred = 0  # requests this pass handed to a batch instead of answering
        self.deferred_battles: set[tuple[str, str, str, str, str]] = set()
        self.reference_items = ReferenceQueue()  # (model, dataset, subset, key, reference) of each answer
        self.scored: tuple[ItemsDigest, dict[tuple[str, str, str], MetricSums]] = (ItemsDigest(), {})
        self.failure_kinds: dict[tuple[str, str, str], int] = {}
        self.skipped: dict[tuple[str, str], int] = {}  # (model, why) -> requests not sent
        self._logged_failure: set[tuple[str, str]] = set()

    def open_store(self) -> RunStore | LayeredStore:
        assert self.store is not None, "the arena is not open"
        return self.store

    def save(self, kind: str, key: bytes, rec: dict[str, Any]) -> None:
        """Checkpoint a record. If that fails (disk full, read-only), stop the whole run at once: every
        task's next await is cancelled, so no request is sent whose answer could not be saved."""
        try:
            self.open_store().put(kind, key, rec)
        except BaseException:
            if self.run_scope is not None and not self.offline:
                self.run_scope.cancel()
            raise

    def tag(self, slot_name: str) -> str | None:
        """The judge name a game carries (None with one judge, so that path is unchanged)."""
        return slot_name if self.tag_judge else None

    def first_judges(self) -> list[JudgeSlot]:
        """The judges every battle reaches: a cascade's first, else all of them."""
        return self.order[:1] if self.cascade else self.order

    @staticmethod
    def account(usage: EndpointUsage, result: ChatResult) -> None:
        """Count a request this process sent (what the results use is counted by EndpointUsage.use)."""
        usage.requests += 1
        usage.attempts += result.attempts
        usage.sent_prompt_tokens += result.prompt_tokens
        usage.sent_completion_tokens += result.completion_tokens
        if not result.ok:
            usage.failures += 1

    def record_failure(self, stage: str, who: str, q: Query, result: ChatResult, **extra: Any) -> None:
        """Keep a request that failed for good in ``failures.jsonl`` (the results give its game this
        reason) and log the first of each endpoint's."""
        self.failures += 1
        rec = {"stage": stage, "endpoint": who, "dataset": q.dataset, "subset": q.subset, "query_id": q.id,
               "error": result.error, "status": result.status, "attempts": result.attempts, "time": time.time(),
               **extra}
        self.save(FAILURES, content_key(rec), rec)
        kind = failure_kind(result.error)
        self.failure_kinds[(stage, who, kind)] = self.failure_kinds.get((stage, who, kind), 0) + 1
        if (stage, who) not in self._logged_failure:  # one line per endpoint; the run's end gives the counts
            self._logged_failure.add((stage, who))
            ep = self._endpoint(stage, who)
            log.warning("%s %s (%s, model %s) failed on %s/%s#%s: %s (further failures of this endpoint are counted "
                        "at the end, not logged)", stage, who, ep.api_url, ep.model, q.dataset, q.subset, q.id,
                        result.error)

    def _endpoint(self, stage: str, who: str) -> Any:
        if stage != "judgment":
            return self.config.model(who).endpoint
        for slot in self.slots:
            if slot.cfg.name == who:
                return slot.cfg.endpoint
        return self.config.judge.endpoint

    def failure_summary(self) -> list[str]:
        """One line per endpoint and kind of failure of this run, with its count."""
        lines = []
        for (stage, who, kind), n in sorted(self.failure_kinds.items()):
            ep = self._endpoint(stage, who)
            lines.append(f"{who} ({ep.api_url}, model {ep.model}): {n} request(s) failed for good: {kind}")
        for (who, why), n in sorted(self.skipped.items()):
            lines.append(f"{who}: {n} request(s) not sent: {why}")
        return lines

    def endpoint_down(self, model: str) -> str | None:
        """Why ``model``'s answer could not be used: the judge's or (for a candidate) the baseline's
        endpoint has stopped answering (its circuit is open); None while they are up."""
        for slot in self.slots:
            judge = self.clients.get(slot.role)
            if judge is not None and judge.health.is_open:
                return f"judge {slot.cfg.name} endpoint down"
        cfg = self.config
        if cfg.mode == "baseline" and model != cfg.baseline:
            base = self.clients.get(cfg.baseline)
            if base is not None and base.health.is_open:
                return f"baseline {cfg.baseline} endpoint down"
        return None


def failure_kind(error: str | None) -> str:
    """The kind a failure is counted under: its reason code ("http_404", "timeout"), and for a spent retry
    budget the last attempt's code as well ("retry_budget_exhausted: http_429"), which says the cause."""
    parts = (error or "error").split(": ", 2)
    return ": ".join(parts[:2]) if parts[0] == RETRY_BUDGET_EXHAUSTED and len(parts) > 1 else parts[0].split(":", 1)[0]
