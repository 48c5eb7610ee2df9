"""Batch mode through Anthropic's Message Batches (``batch.protocol = "anthropic"``) on the simulator.

The leaderboard equals the live run's and the OpenAI batch run's for the same seed; the server sees
each key in one batch and answers it once; errored and expired rows are sent again or kept as failures
with the reason; the request and reply conversions keep what the pipeline reads; the config refuses
an anthropic endpoint without max_tokens; a rerun after a create whose reply was lost finds the batch
instead of creating another, and refuses to guess between two candidates.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest

from arena_engine.batch.anthropic import AnthropicBatches
from arena_engine.batch.errors import BatchError
from arena_engine.batch.ledger import Ledger
from arena_engine.batch.messages import ConversionError, chat_to_params, message_to_chat
from arena_engine.commands import run_batched
from arena_engine.config import config_from_dict
from arena_engine.errors import ConfigError
from arena_engine.pipeline import Arena, ArenaResults
from arena_engine.replies import read_reply
from arena_engine.report.json_report import report_dict
from arena_engine.report.tables import leaderboard_text
from arena_engine.sim import Faults, Latency, SimConfig, SimModel, SimServer
from arena_engine.sim.message_batches import chat_body

from .arena_helpers import dataset

MODELS = ("base", "strong", "weak")


def sim_config(**kw: Any) -> SimConfig:
    models = (SimModel("base", 0.0), SimModel("strong", 1.0), SimModel("weak", -1.0),
              SimModel("sim-judge", judge=True))
    return SimConfig(models=models, seed=3, latency=Latency("fixed", 0.0), **{"batch_seconds": 0.1, **kw})


def run_config(url: str, run_dir: Path, data: Path, protocol: str | None, *,
               batch_models: tuple[str, ...] = MODELS, batch_judge: bool = True) -> Any:
    mode = {} if protocol is None else {"mode": "batch", "batch": {"poll_interval": 0.02, "protocol": protocol}}

    def model(m: str) -> dict[str, Any]:
        return {"name": m, "api_url": url, "identity": m, "concurrency": 16, "price_in": 1.0, "price_out": 2.0,
                "generation": {"temperature": 0.0, "max_tokens": 256}, **(mode if m in batch_models else {})}

    judge = {"name": "sim-judge", "api_url": url, "identity": "sim-judge", "concurrency": 32, "price_in": 1.0,
             "price_out": 2.0, "generation": {"temperature": 0.0, "max_tokens": 1024}, **(mode if batch_judge else {})}
    return config_from_dict({
        "run": {"output_dir": str(run_dir), "seed": 1}, "datasets": [{"name": "general_qa", "path": str(data)}],
        "models": [model(m) for m in MODELS], "arena": {"baseline": "base"}, "rating": {"rounds": 100},
        "judge": judge}, source="<test>")


async def batched(cfg: Any) -> ArenaResults:
    return await run_batched(cfg, lambda session: Arena(cfg, batch=session))


async def live(cfg: Any) -> ArenaResults:
    async with Arena(cfg) as arena:
        return await arena.run()


def outcomes(res: ArenaResults) -> list[tuple[Any, ...]]:
    return [(g.query_id, g.candidate, g.candidate_is_a, g.outcome) for g in res.games]


def test_anthropic_batches_match_live_and_openai_batches_and_send_each_key_once(tmp_path: Path) -> None:
    data = dataset(tmp_path, 12)

    async def main() -> tuple[ArenaResults, ArenaResults, ArenaResults, dict[str, Any]]:
        async with SimServer(sim_config()) as sim:
            lv = await live(run_config(sim.url, tmp_path / "live", data, None))
            op = await batched(run_config(sim.url, tmp_path / "openai", data, "openai"))
            sim.reset_stats()
            an = await batched(run_config(sim.url, tmp_path / "anthropic", data, "anthropic"))
            return lv, op, an, sim.stats()

    lv, op, an, stats = anyio.run(main)
    assert leaderboard_text(an.boards) == leaderboard_text(lv.boards) == leaderboard_text(op.boards)
    assert outcomes(an) == outcomes(lv) == outcomes(op)
    queries = sum(an.queries.values())
    keys = 3 * queries + 2 * 2 * queries  # every generation and every judgment, once
    b = stats["batches"]
    assert stats["requests"] == 0 and b["files"] == 0  # nothing live, no OpenAI file: all Message Batches
    assert b["keys"] == keys and b["answered"] == keys
    assert b["keys_in_two_batches"] == 0 and b["answered_twice"] == 0
    rep, ref = report_dict(an)["endpoints"], report_dict(lv)["endpoints"]
    for name in (*MODELS, "sim-judge"):  # the usage read back from the Messages replies is the live usage
        assert rep[name]["cost_live"] == pytest.approx(ref[name]["cost"])
        assert rep[name]["cost"] == pytest.approx(0.5 * ref[name]["cost"])
    chunk = next((tmp_path / "anthropic" / "batches").glob("pending-*.jsonl"))
    row = orjson.loads(chunk.read_bytes().splitlines()[0])
    assert set(row) == {"custom_id", "params"} and row["params"]["max_tokens"] in (256, 1024)


def test_errored_and_expired_rows_are_resubmitted_or_excluded_with_reason(tmp_path: Path) -> None:
    data = dataset(tmp_path, 12)

    async def main() -> tuple[ArenaResults, dict[str, Any]]:
        async with SimServer(sim_config(faults=Faults(rate_batch_error=0.05, rate_batch_expire=0.05))) as sim:
            res = await batched(run_config(sim.url, tmp_path / "run", data, "anthropic"))
            return res, sim.stats()["batches"]

    res, b = anyio.run(main)
    assert b["row_errors"] > 0 and b["row_expired"] > 0
    assert b["answered_twice"] == 0
    assert sum(1 for g in res.games if g.outcome is not None) >= 0.95 * len(res.games)
    for g in res.games:
        assert g.outcome is not None or "batch" in (g.reason or "") or "no answer" in (g.reason or ""), g.reason


def test_rows_that_always_expire_end_as_failures_with_the_reason(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    data = dataset(tmp_path, 3)

    async def main() -> ArenaResults:
        async with SimServer(sim_config(faults=Faults(rate_batch_expire=1.0))) as sim:
            return await batched(run_config(sim.url, tmp_path / "run", data, "anthropic", batch_models=("weak",),
                                            batch_judge=False))

    res = anyio.run(main)
    weak = [g for g in res.games if g.candidate == "weak"]
    assert weak and all(g.outcome is None and "no answer: weak" in (g.reason or "") for g in weak)
    assert any("weak" in line and "6 request(s) failed for good: batch_failed" in line for line in res.failure_lines), \
        res.failure_lines
    assert "batch_failed: batch_expired: batch msgbatch_" in caplog.text and "(tried 3 times)" in caplog.text
    assert all(g.outcome is not None for g in res.games if g.candidate == "strong")


def test_config_requires_max_tokens_for_an_anthropic_batch_endpoint(tmp_path: Path) -> None:
    raw = {"run": {"output_dir": str(tmp_path)}, "datasets": [{"name": "d", "path": str(tmp_path)}],
           "models": [{"name": "a", "api_url": "http://x/v1"},
                      {"name": "b", "api_url": "http://x/v1", "mode": "batch", "batch": {"protocol": "anthropic"}}],
           "judge": {"name": "j", "api_url": "http://x/v1"}}
    with pytest.raises(ConfigError, match=r"cfg\.toml: 'models\[1\]\.generation\.max_tokens' is required"):
        config_from_dict(raw, source="cfg.toml")
    raw["models"][1]["batch"] = {"protocol": "gemini"}
    with pytest.raises(ConfigError, match="protocol"):
        config_from_dict(raw, source="cfg.toml")


def test_the_conversions_keep_what_the_pipeline_reads() -> None:
    body = {"model": "m", "messages": [{"role": "system", "content": "be fair"}, {"role": "user", "content": "q?"}],
            "temperature": 0.0, "max_tokens": 64, "seed": 7, "stop": "END"}
    params = chat_to_params(body)
    assert params == {"model": "m", "system": "be fair", "messages": [{"role": "user", "content": "q?"}],
                      "temperature": 0.0, "max_tokens": 64, "stop_sequences": ["END"]}
    assert list(params) == ["model", "system", "messages", "temperature", "max_tokens", "stop_sequences"]
    plain = {"model": "m", "messages": body["messages"], "temperature": 0.0, "max_tokens": 64}
    assert orjson.dumps(chat_body(chat_to_params(plain))) == orjson.dumps(plain)  # the simulator's draws
    with pytest.raises(ConversionError, match="max_tokens"):
        chat_to_params({"model": "m", "messages": []})
    with pytest.raises(ConversionError, match="presence_penalty"):
        chat_to_params({"model": "m", "messages": [], "max_tokens": 5, "presence_penalty": 1})
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
               "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Paris."}],
               "stop_reason": "max_tokens", "usage": {"input_tokens": 11, "output_tokens": 3}}
    content, _, finish, p, c, reasoning = read_reply(orjson.dumps(message_to_chat(message)), "application/json")
    assert (content, finish, p, c, reasoning) == ("Paris.", "length", 11, 3, "hmm")


def test_a_lost_create_reply_is_found_again_and_two_candidates_are_refused(tmp_path: Path) -> None:
    data = dataset(tmp_path, 2)

    async def main() -> tuple[str, str, int, str]:
        async with SimServer(sim_config(batch_seconds=30.0)) as sim:
            cfg = run_config(sim.url, tmp_path / "run", data, "anthropic", batch_models=("weak",),
                             batch_judge=False)
            ep = cfg.models[2].endpoint
            assert ep.batch is not None
            ledger = Ledger(tmp_path / "run")
            path = ledger.folder / "pending-x.jsonl"
            path.write_bytes(b'{"custom_id":"aa-1","params":{"model":"weak","max_tokens":5,'
                             b'"messages":[{"role":"user","content":"hi"}]}}\n')
            chunk = ledger.intent(ledger.next_name(), "weak", path, 1, "0" * 64)
            async with aiohttp.ClientSession() as http:
                api = AnthropicBatches(http, ep)
                ledger.creating(chunk, time.time())  # the create was sent; its reply never came back
                lost = await api._call("POST", "/messages/batches", data=lambda: api._body(chunk), what="create")
                await api.submit(chunk, ep.batch, Ledger(tmp_path / "run"))  # a rerun of a fresh process
                again = Ledger(tmp_path / "run")
                found = again.chunks[chunk.name].batch_id
                # a second chunk of the same size whose create reply was lost, beside a stranger's batch
                other = again.intent(again.next_name(), "weak", path, 1, "0" * 64)
                again.creating(other, time.time())
                await api._call("POST", "/messages/batches", data=lambda: api._body(other), what="create")
                await api._call("POST", "/messages/batches", data=lambda: api._body(other), what="create")
                try:
                    await api.submit(other, ep.batch, Ledger(tmp_path / "run"))
                    refused = ""
                except BatchError as exc:
                    refused = str(exc)
            return str(lost["id"]), str(found), sim.stats()["batches"]["created"], refused

    lost, found, created, refused = anyio.run(main)
    assert found == lost
    assert created == 3  # the lost one and the two made for the second chunk: the rerun created none
    assert "2 batches could be it" in refused and "c00002" in refused
