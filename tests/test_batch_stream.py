"""Batch mode streams across stages: a query's judge requests join the judge's batch once its answers
exist, and a partly filled judge file is cut by age (``batch.max_wait``), so the judge does not wait
for the last answers' batch.

On the simulator one candidate's answers take much longer in a batch (``SimModel.batch_seconds``) than
the others'. The judge's first batch must be created while that batch still runs, cut by age and so
holding fewer than ``max_requests`` rows; every key is still asked once and every game rated.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio

from arena_engine.config import config_from_dict
from arena_engine.pipeline import ArenaResults
from arena_engine.roles import JUDGE
from arena_engine.runfolder import config_to_dict
from arena_engine.sim import Latency, SimConfig, SimModel, SimServer

from .arena_helpers import dataset
from .test_batch_mode import batched, run_config

MAX_WAIT = 0.3  # the judge's batch.max_wait
MAX_REQUESTS = 1000  # the judge's batch.max_requests: far more than the run asks, so no cut is by size
SLOW = 3.0  # seconds a batch of the weak candidate's answers takes; the others take 0.2


def ledger(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "batches" / "ledger.jsonl").read_bytes().splitlines()]


def test_a_judge_batch_is_cut_by_age_and_created_before_the_last_answers_batch_ends(tmp_path: Path) -> None:
    data = dataset(tmp_path, 6)  # 12 queries
    models = (SimModel("base", 0.0), SimModel("strong", 1.0), SimModel("weak", -1.0, batch_seconds=SLOW),
              SimModel("sim-judge", judge=True))
    sim = SimConfig(models=models, seed=3, latency=Latency("fixed", 0.0), batch_seconds=0.2)
    run_dir = tmp_path / "run"

    async def main() -> tuple[ArenaResults, dict[str, Any], float]:
        async with SimServer(sim) as server:
            raw = config_to_dict(run_config(server.url, run_dir, data))
            raw["judge"]["batch"].update(max_wait=MAX_WAIT, max_requests=MAX_REQUESTS)
            t0 = time.monotonic()
            res = await batched(config_from_dict(raw, source="<test>"))
            return res, server.stats()["batches"], time.monotonic() - t0

    res, batches, wall = anyio.run(main)
    events = ledger(run_dir)
    intents = {e["chunk"]: e for e in events if e["event"] == "intent"}

    def at(event: str, chunk: str) -> int:
        return next(i for i, e in enumerate(events) if e["event"] == event and e["chunk"] == chunk)

    (weak,) = [c for c, e in intents.items() if e["role"] == "weak"]
    judged = [c for c, e in intents.items() if e["role"] == JUDGE]
    early = [c for c in judged if at("created", c) < at("done", weak)]
    assert early, f"no judge batch was created before the weak answers' batch ended: {events}"
    for c in early:  # cut by age, not by size nor because the answers' batches had all ended
        assert intents[c]["cut"] == "age", intents[c]
        assert 0 < intents[c]["requests"] < MAX_REQUESTS
    assert at("done", early[0]) < at("done", weak), "the early judge batch did not finish while weak's ran"
    # the rest of the verdicts (the weak candidate's battles) follow once weak's answers exist
    assert sum(intents[c]["requests"] for c in judged) == 2 * 2 * 12
    assert batches["keys"] == batches["answered"] == 3 * 12 + 2 * 2 * 12
    assert batches["keys_in_two_batches"] == 0 and batches["answered_twice"] == 0
    assert res.games and all(g.outcome is not None for g in res.games)
    assert wall < SLOW + 20, f"the run took {wall:.1f} s"
