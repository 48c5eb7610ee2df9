"""The Ray backend: one config's queries spread over the workers of a Ray cluster.

    arena-engine run CONFIG --backend ray [--address ADDR] [--workers N]

The driver (this process):

1. opens the run folder once (folding in shards a stopped run left), saves config.json, checks every
   dataset line, and starts one *coordinator* actor: the cluster's :class:`~arena_engine.distributed.leases.LeaseBroker`
   (shared request/token windows and Retry-After holds) that also collects progress;
2. starts N worker tasks. Worker i runs the ordinary async :class:`~arena_engine.run.Arena` over
   the queries whose position % N == i, with each endpoint's concurrency split between the workers and
   its rate windows leased from the coordinator. It writes its own checkpoints in
   ``RUN_DIR/shards/i-of-N/`` and reads earlier runs' records from the run folder (read only);
3. when every worker is done, folds the shard checkpoints into the run folder and computes the
   ratings and reports once, from the checkpoints, exactly as ``arena-engine report`` does.

A worker that dies (node lost, process killed) is retried by Ray (``max_retries``) and resumes from its
shard's checkpoints: finished requests are not sent again. A stopped run resumes on either backend.

A driver that dies (SIGKILL, lost machine) stops its workers' sending within a second. Each worker's
progress report is a heartbeat it awaits: a failed one (the coordinator actor dies with the driver that
owns it), or on the driver's machine the driver's pid ending, cancels the worker's run at once; a
heartbeat unanswered for :data:`DRIVER_TIMEOUT` pauses all sending until one is answered (its lease on
sending has lapsed), and after :data:`DRIVER_GIVE_UP` the worker stops. What was stored stays stored. A
local cluster the driver started itself is ended by a watchdog process (:mod:`arena_engine.distributed.reaper`)
when the driver dies; a cluster it joined is left alone.
The run folder must be on storage every node sees (one machine, NFS, ...); the API keys must be set in
the environment of every node (a local cluster started here inherits this process's environment).
Ray is an optional extra: ``pip install 'arena-engine[ray]'``.

The modules, bottom up: ``leases`` (the broker and a worker's client of it: plain bookkeeping, no Ray),
``reaper`` (the local cluster's watchdog, a process of its own), ``watch`` (a worker's watch on its
driver), ``worker`` (a worker's config and run) and ``driver`` (``run_on_ray``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..roles import JUDGE as JUDGE  # the first judge's endpoint role (tests and callers import it here)

# Loaded on first use: `python -m arena_engine.distributed.reaper` (the cluster's watchdog) and the
# lease bookkeeping must not pull in Ray, the run package and aiohttp.
_EXPORTS = {
    "run_on_ray": "driver",
    "RayProgress": "driver",
    "worker_config": "worker",
    "ShardSummary": "worker",
    "watch_driver": "watch",
    "DriverInfo": "watch",
    "DriverLost": "watch",
    "DRIVER_TIMEOUT": "watch",
    "DRIVER_GIVE_UP": "watch",
    "HEARTBEAT_EVERY": "watch",
    "LEASE_TICK": "watch",
}

if TYPE_CHECKING:
    from .driver import RayProgress as RayProgress
    from .driver import run_on_ray as run_on_ray
    from .watch import DRIVER_GIVE_UP as DRIVER_GIVE_UP
    from .watch import DRIVER_TIMEOUT as DRIVER_TIMEOUT
    from .watch import HEARTBEAT_EVERY as HEARTBEAT_EVERY
    from .watch import LEASE_TICK as LEASE_TICK
    from .watch import DriverInfo as DriverInfo
    from .watch import DriverLost as DriverLost
    from .watch import watch_driver as watch_driver
    from .worker import ShardSummary as ShardSummary
    from .worker import worker_config as worker_config

__all__ = ["JUDGE", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
