"""Opening a run: its checkpoints, what it reads before anything is sent, and its endpoints' clients."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import anyio

from ..admission import Admission
from ..client import ChatClient
from ..errors import ConfigError
from ..from_store import load_imports
from ..identity import GENERATIONS, JUDGMENTS, holds_legacy
from ..runfolder import save_config
from ..store import RunStore
from ..store.layered import LayeredStore, merge_worker_stores
from .context import RunContext


async def close_store(store: RunStore | LayeredStore) -> None:
    """Close the checkpoints in a thread and wait for it to finish even through cancellation.

    anyio's shielded scope does not stop a native ``task.cancel()`` (an embedding service cancelling
    the task that runs the arena): the wait for the thread was cut short, the lock stayed held and a
    reopen of the folder in the same process failed with "in use". So the close is awaited through
    every cancellation, which is then raised once it is done."""
    closing = asyncio.get_running_loop().run_in_executor(None, store.close)
    cancelled = False
    while not closing.done():
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            cancelled = True
    closing.result()  # a failure to close (a full disk) is raised as it is
    if cancelled:
        raise asyncio.CancelledError


def check_keys(ctx: RunContext) -> None:
    missing = [] if ctx.offline else ctx.config.missing_keys()
    if missing:
        raise ConfigError(
            f"environment variable(s) {', '.join(missing)} not set: they hold the API keys named by "
            "'api_key_env' in the config; export them and run again"
        )


async def open_store(ctx: RunContext, stack: AsyncExitStack, given: RunStore | LayeredStore | None) -> None:
    """Open the run folder's checkpoints (or the store a distributed worker was given), to be closed
    with ``stack``."""
    if given is not None:
        await anyio.to_thread.run_sync(given.open)
        ctx.store = given
        stack.push_async_callback(close_store, ctx.store)
    else:
        main = RunStore(ctx.config.output_dir, fsync_interval=ctx.config.fsync_interval)
        await anyio.to_thread.run_sync(main.open)
        ctx.store = main
        stack.push_async_callback(close_store, ctx.store)
        # a distributed run that stopped early left its workers' checkpoints beside ours
        await anyio.to_thread.run_sync(merge_worker_stores, main)
    # 0.1.0 keys are tried only where that release began the folder (not on every new request)
    folder = ctx.store.base if isinstance(ctx.store, LayeredStore) else ctx.store
    ctx.legacy = {kind: holds_legacy(folder, kind) for kind in (GENERATIONS, JUDGMENTS)}


async def read_inputs(ctx: RunContext, *, own_folder: bool) -> None:
    """What a sending run reads before anything is sent: imported answers, human labels (a bad one
    stops the run here), and the run folder's config.json written."""
    if ctx.offline:  # an offline run reads them in results_from_store
        return
    ctx.imported = await anyio.to_thread.run_sync(partial(load_imports, ctx.config))
    if ctx.config.panel.human_labels is not None:
        from ..judge_quality import read_human_labels

        await anyio.to_thread.run_sync(read_human_labels, ctx.config.panel.human_labels,
                                       [m.name for m in ctx.config.models])
    if own_folder:
        save_config(ctx.config, ctx.config.output_dir)


async def open_clients(ctx: RunContext, stack: AsyncExitStack, admission: Mapping[str, Admission[Any]]) -> None:
    """A client per endpoint role: the batch session's for endpoints in batch mode, else a live
    ChatClient (under the given admission, if any: a distributed worker's)."""
    if ctx.offline:
        return
    cfg, batch = ctx.config, ctx.batch
    batch_roles = set() if batch is None else set(batch.roles)
    endpoints = [m.endpoint for m in cfg.models if m.evalscope_report is None] + [s.cfg.endpoint for s in ctx.slots]
    if any(ep.batch is not None for ep in endpoints) and batch is None:
        raise ConfigError("endpoints in mode = \"batch\" run through arena_engine.batch.session."
                          "run_batched (what `arena-engine run` does), not a bare Arena")
    roles = [(m.name, m.endpoint) for m in cfg.models if m.evalscope_report is None or m.name in batch_roles]
    for role, endpoint in roles + [(s.role, s.cfg.endpoint) for s in ctx.slots]:
        if role in batch_roles and batch is not None:
            ctx.clients[role] = batch.client(role, ctx.open_store())
        else:
            client = ChatClient(endpoint, admission=admission.get(role))
            ctx.clients[role] = await stack.enter_async_context(client)
