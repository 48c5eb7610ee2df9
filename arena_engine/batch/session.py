"""A run's batch endpoints: the client the pipeline calls for them, and the passes of a batched run.

``BatchChat`` stands where a ``ChatClient`` stands for an endpoint in ``mode = "batch"``. Its ``chat``
never waits for the provider: if the request's result is in the checkpoints (``BATCH_RESULTS``) it is
read with the live reply reader and returned as a live result would be, so the pipeline stores it,
judges it and makes its games by the same code as live; otherwise the request is appended to the
endpoint's pending input file and ``chat`` returns at once with ``error == DEFERRED``. The pipeline
then drops that query's work for this pass: no task waits for a batch, so memory does not grow with
the requests pending (200,000 are lines in a file on disk and 8-byte keys).

``commands.run_batched`` runs the arena in passes: each pass sends the live requests whose inputs exist and
queues the batch requests whose inputs exist; between passes ``BatchSession.advance`` cuts the files that
are due, submits them and polls every batch in flight until one ends, reads its rows into the
checkpoints and returns, so the next pass uses them while the other batches keep running. Streaming
across stages: a query's judge requests join the judge's open file in the pass after its answers' batch
ended, not after the last answers' batch; a cascade's later judge, likewise after the earlier judge's.
A file is cut when it is full (``max_requests``/``max_bytes``), when its oldest request is
``batch.max_wait`` old (also while ``advance`` waits) or at the end of a pass in which no batch of an
earlier stage (the models before the judges, a cascade's earlier judges before its later ones) is in
flight, since then nothing more can join it. A request already in an open file or in a batch in flight
is not queued again (its key's first 8 bytes are held: a set while its file is open, a sorted array of
8 bytes a request once cut). The pass after which nothing is open or in flight returns the results.
Batches an earlier process left open are finished before the first pass (``settle``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import anyio.abc
import numpy as np
import orjson

from ..client import ChatResult, ClientStats, Endpoint
from ..errors import FailureReason, unwrap
from ..health import EndpointHealth
from ..replies import Fault, read_reply
from ..roles import judge_role
from ..store import content_key
from .driver import BATCH_ERRORS, BATCH_RESULTS, BatchApi, drive, error_key, finish, next_wait, poll
from .errors import BatchError
from .ledger import Chunk, Ledger
from .protocols import batch_api
from .queue import ChunkWriter

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..store import RunStore
    from ..store.layered import LayeredStore

log = logging.getLogger(__name__)

DEFERRED = FailureReason.DEFERRED.value  # ChatResult.error of a request queued for the next batch


def batch_roles(config: RunConfig) -> dict[str, Endpoint]:
    """Endpoint role -> endpoint, for every model and judge in batch mode."""
    roles = {m.name: m.endpoint for m in config.models if m.endpoint.batch is not None and m.evalscope_report is None}
    for i, j in enumerate(config.panel_judges):
        if j.endpoint.batch is not None:
            roles[judge_role(i, j.name)] = j.endpoint
    return roles


def uses_batches(config: RunConfig) -> bool:
    return bool(batch_roles(config))


def batch_stages(config: RunConfig) -> dict[str, int]:
    """Endpoint role -> its stage: 0 for the models; 1 for the judges, or 1 + its place in a cascade
    (whose later judges are asked after the earlier ones' verdicts)."""
    stages = {m.name: 0 for m in config.models}
    order = list(config.panel.cascade) if config.panel.cascade and len(config.panel_judges) > 1 else []
    for i, j in enumerate(config.panel_judges):
        stages[judge_role(i, j.name)] = 1 + (order.index(j.name) if j.name in order else 0)
    return stages


def _short(key: bytes) -> int:
    """A request key's first 8 bytes (what the session holds of a queued key; a rare clash only makes a
    request wait for the batch in flight to end before it is queued)."""
    return int.from_bytes(key[:8], "little")


class _Gate:
    """What the pipeline asks of a client's limiter (a batch endpoint has no live window)."""

    def pause(self, seconds: float) -> None:
        pass


def _result(content: str | None, finish: str | None, p: int, c: int, error: str | None,
            reasoning: str | None = None, choices: tuple[str, ...] = ()) -> ChatResult:
    return ChatResult(content, choices, finish, p, c, 0.0, 1, 200 if error is None else None, error, 0.0, reasoning)


class BatchChat:
    """The pipeline's client for one endpoint in batch mode (see the module docstring)."""

    def __init__(self, role: str, endpoint: Endpoint, session: BatchSession, store: RunStore | LayeredStore) -> None:
        assert endpoint.batch is not None
        self.role = role
        self.endpoint = endpoint
        self.options = endpoint.batch
        self.session = session
        self.store = store
        self.health = EndpointHealth()
        self.stats = ClientStats()
        self.limiter = _Gate()
        self.queued = 0  # requests queued by this pass
        self.from_batches = 0  # results read from finished batches by this pass

    def key(self, body: Mapping[str, Any]) -> bytes:
        # the role too: two configured models with the same model id and URL are asked separately, as live
        return content_key({"batch": self.endpoint.api_url, "role": self.role, "body": body})

    async def chat(self, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None = None, *,
                   needed: Callable[[], str | None] | None = None) -> ChatResult:
        body: dict[str, Any] = {"model": self.endpoint.model, "messages": messages}  # as ChatClient builds it
        body.update(self.endpoint.extra_body)
        if params:
            body.update(params)
        key = self.key(body)
        found = self.store.get(BATCH_RESULTS, key)
        if found is not None:
            self.from_batches += 1
            outcome = read_reply(orjson.dumps(found["body"]), "application/json")
            if isinstance(outcome, Fault):
                return _result(None, outcome.finish_reason, outcome.prompt_tokens, outcome.completion_tokens,
                               outcome.reason)
            content, choices, finish, p, c, thought = outcome
            return _result(content, finish, p, c, None, thought, choices)
        failed = 0
        last = ""
        while failed <= self.options.resubmits:
            rec = self.store.get(BATCH_ERRORS, error_key(key.hex(), failed + 1))
            if rec is None:
                break
            failed += 1
            last = rec.get("error") or "error"
        if failed > self.options.resubmits:  # given up: the pipeline keeps it as a failure, with the reason
            return _result(None, None, 0, 0, f"{FailureReason.BATCH_FAILED}: {last} (tried {failed} times)")
        self.session.queue(self.role, key, f"{key.hex()}-{failed + 1}", body)
        return _result(None, None, 0, 0, DEFERRED)


class BatchSession:
    """The batch endpoints of one run folder across the passes of a run."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.roles = batch_roles(config)
        self.stages = batch_stages(config)
        self.ledger = Ledger(config.output_dir)
        self.ledger.drop_strays()
        self._writers: dict[str, ChunkWriter] = {}
        self._flying: dict[str, Chunk] = {}  # chunk name -> a chunk of this process cut and not yet done
        self._flying_keys: dict[str, dict[str, np.ndarray]] = {}  # role -> chunk name -> its sorted keys
        self._waits: dict[str, float] = {}  # chunk name -> its next poll wait
        self.clients: dict[str, BatchChat] = {}
        self.passes = 0
        self.queued = 0  # requests queued by this pass

    def client(self, role: str, store: RunStore | LayeredStore) -> BatchChat:
        c = BatchChat(role, self.roles[role], self, store)
        self.clients[role] = c
        return c

    def _writer(self, role: str) -> ChunkWriter:
        w = self._writers.get(role)
        if w is None:
            opts = self.roles[role].batch
            assert opts is not None
            w = self._writers[role] = ChunkWriter(self.ledger, role, opts, self._cut)
        return w

    def _cut(self, chunk: Chunk, keys: np.ndarray) -> None:
        self._flying[chunk.name] = chunk
        self._flying_keys.setdefault(chunk.role, {})[chunk.name] = keys

    def waiting(self, role: str, key: bytes) -> bool:
        """Whether the request is in an open file or a batch in flight (asked twice in one pass, or again
        by a pass while its batch runs)."""
        k = _short(key)
        w = self._writers.get(role)
        if w is not None and k in w.keys:
            return True
        probe = np.uint64(k)
        for keys in self._flying_keys.get(role, {}).values():
            i = int(np.searchsorted(keys, probe))
            if i < len(keys) and keys[i] == probe:
                return True
        return False

    def queue(self, role: str, key: bytes, custom_id: str, body: Mapping[str, Any]) -> None:
        if self.waiting(role, key):
            return
        self._writer(role).add(custom_id, body, _short(key))
        self.queued += 1
        self.clients[role].queued += 1

    @property
    def idle(self) -> bool:
        """Nothing is queued in an open file and no batch of this process is in flight."""
        return not self._flying and all(w.pending == 0 for w in self._writers.values())

    def cut_due(self, now: float) -> None:
        """Cut the open files that are old (``max_wait``) or that nothing more can join: no batch of an
        earlier stage is in flight (only its results could queue more requests for this file)."""
        for role, w in sorted(self._writers.items(), key=lambda rw: self.stages.get(rw[0], 0)):
            if w.pending == 0:
                continue
            stage = self.stages.get(role, 0)
            if w.aged(now):
                w.cut("age")
            elif not any(self.stages.get(c.role, 0) < stage for c in self._flying.values()):
                w.cut("stage")

    def _done(self, chunk: Chunk) -> None:
        self._flying.pop(chunk.name, None)
        self._waits.pop(chunk.name, None)
        self._flying_keys.get(chunk.role, {}).pop(chunk.name, None)

    async def advance(self, store: RunStore | LayeredStore) -> None:
        """Cut the files that are due, submit them, and poll every batch in flight until at least one
        has ended and its rows are in the checkpoints; meanwhile cut (and submit) the open files whose
        oldest request reaches ``max_wait``. Returns with the other batches still running (their polls
        stop; a submit or a read under way is finished first)."""
        self.cut_due(time.monotonic())
        self.queued = 0
        if not self._flying:
            return
        ended = anyio.Event()
        started: set[str] = set()
        stop = anyio.Event()

        async def fly(c: Chunk, api: BatchApi) -> None:
            ep = self.roles[c.role]
            assert ep.batch is not None
            if c.batch_id is None:
                await api.submit(c, ep.batch, self.ledger)
            while not stop.is_set():
                batch = await poll(c, api, self.ledger)
                if batch is not None:
                    await finish(c, api, batch, self.ledger, store)
                    self._done(c)
                    ended.set()
                    return
                wait = self._waits.get(c.name, ep.batch.poll_interval)
                self._waits[c.name] = next_wait(wait, ep.batch)
                with anyio.move_on_after(wait):
                    await stop.wait()

        def start(tg: anyio.abc.TaskGroup, http: aiohttp.ClientSession) -> None:
            for c in list(self._flying.values()):
                if c.name not in started:
                    started.add(c.name)
                    tg.start_soon(fly, c, batch_api(http, self.roles[c.role]))

        async with _batch_errors():
            timeout = aiohttp.ClientTimeout(total=600, sock_connect=30)
            async with aiohttp.ClientSession(timeout=timeout) as http, anyio.create_task_group() as tg:
                start(tg, http)
                while not ended.is_set():
                    deadlines = [d for w in self._writers.values() if (d := w.deadline) is not None]
                    with anyio.move_on_after(max(0.0, min(deadlines) - time.monotonic()) if deadlines else None):
                        await ended.wait()
                    if not ended.is_set():
                        now = time.monotonic()
                        for w in self._writers.values():
                            if w.aged(now):
                                w.cut("age")
                        start(tg, http)
                stop.set()  # the others stop polling; one in a submit or a read finishes it first

    async def settle(self, store: RunStore | LayeredStore) -> None:
        """Submit, poll and read every open chunk of the ledger until each is done (those an earlier
        process left: this one finishes them before it queues anything)."""
        chunks = self.ledger.open_chunks()
        if not chunks:
            return
        unknown = sorted({c.role for c in chunks} - set(self.roles))
        if unknown:
            raise BatchError(f"{self.ledger.path}: open batches belong to {unknown}, which the config no longer "
                             "runs in batch mode; restore the config or cancel them with `arena-engine batches "
                             f"{self.config.output_dir} --cancel`")
        async with _batch_errors():
            timeout = aiohttp.ClientTimeout(total=600, sock_connect=30)
            async with aiohttp.ClientSession(timeout=timeout) as http, anyio.create_task_group() as tg:
                for c in chunks:
                    ep = self.roles[c.role]
                    assert ep.batch is not None
                    tg.start_soon(drive, c, batch_api(http, ep), ep.batch, self.ledger, store)


@asynccontextmanager
async def _batch_errors() -> AsyncIterator[None]:
    """Raise the first batch error itself, not a task group's wrapping."""
    try:
        yield
    except BaseExceptionGroup as group:
        first = unwrap(group, BatchError, alone=False)
        if first is group:
            raise
        raise first from None
