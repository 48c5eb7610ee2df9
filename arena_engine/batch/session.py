"""A run's batch endpoints: the client the pipeline calls for them, and the passes of a batched run.

``BatchChat`` stands where a ``ChatClient`` stands for an endpoint in ``mode = "batch"``. Its ``chat``
never waits for the provider: if the request's result is in the checkpoints (``BATCH_RESULTS``) it is
read with the live reply reader and returned as a live result would be, so the pipeline stores it,
judges it and makes its games by the same code as live; otherwise the request is appended to the
endpoint's pending input file and ``chat`` returns at once with ``error == DEFERRED``. The pipeline
then drops that query's work for this pass: no task waits for a batch, so memory does not grow with
the requests pending (200,000 are lines in a file on disk and 16-byte keys in a set).

``commands.run_batched`` runs the arena in passes: each pass sends the live requests whose inputs exist and
queues the batch requests whose inputs exist; between passes the queued chunks are submitted and
polled to completion (``driver.drive``, all chunks at once). A query's judge requests join the judge's
batch of the pass after its answers' batch completed; a cascade's later judge, the pass after the
earlier judge's verdicts. The pass that queues nothing returns the results.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import orjson

from ..client import ChatResult, ClientStats, Endpoint
from ..errors import FailureReason, unwrap
from ..health import EndpointHealth
from ..replies import Fault, read_reply
from ..roles import judge_role
from ..store import content_key
from .driver import BATCH_ERRORS, BATCH_RESULTS, drive, error_key
from .errors import BatchError
from .ledger import Ledger
from .protocols import batch_api
from .queue import ChunkWriter

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..store import RunStore
    from ..store.shards import LayeredStore

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

    async def chat(self, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None = None) -> ChatResult:
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
        self.ledger = Ledger(config.output_dir)
        self.ledger.drop_strays()
        self._writers: dict[str, ChunkWriter] = {}
        self._queued: set[bytes] = set()
        self.clients: dict[str, BatchChat] = {}
        self.passes = 0

    def client(self, role: str, store: RunStore | LayeredStore) -> BatchChat:
        c = BatchChat(role, self.roles[role], self, store)
        self.clients[role] = c
        return c

    def queue(self, role: str, key: bytes, custom_id: str, body: Mapping[str, Any]) -> None:
        if key in self._queued:  # asked twice in one pass (two battles with the same prompt)
            return
        self._queued.add(key)
        w = self._writers.get(role)
        if w is None:
            opts = self.roles[role].batch
            assert opts is not None
            w = self._writers[role] = ChunkWriter(self.ledger, role, opts)
        w.add(custom_id, body)
        self.clients[role].queued += 1

    @property
    def queued(self) -> int:
        return len(self._queued)

    def cut(self) -> None:
        """Close every pending input file into a chunk (its intent is in the ledger)."""
        for w in self._writers.values():
            w.cut()
        self._writers.clear()
        self._queued.clear()

    async def settle(self, store: RunStore | LayeredStore) -> None:
        """Submit, poll and read every open chunk of the ledger until each is done."""
        chunks = self.ledger.open_chunks()
        if not chunks:
            return
        unknown = sorted({c.role for c in chunks} - set(self.roles))
        if unknown:
            raise BatchError(f"{self.ledger.path}: open batches belong to {unknown}, which the config no longer "
                             "runs in batch mode; restore the config or cancel them with `arena-engine batches "
                             f"{self.config.output_dir} --cancel`")
        try:
            timeout = aiohttp.ClientTimeout(total=600, sock_connect=30)
            async with aiohttp.ClientSession(timeout=timeout) as http, anyio.create_task_group() as tg:
                for c in chunks:
                    ep = self.roles[c.role]
                    assert ep.batch is not None
                    tg.start_soon(drive, c, batch_api(http, ep), ep.batch, self.ledger, store)
        except BaseExceptionGroup as group:  # the first batch error itself, not a task group's wrapping
            first = unwrap(group, BatchError, alone=False)
            if first is group:
                raise
            raise first from None
