"""The simulator's Anthropic Message Batches API: batches, their states, errored and expired rows.

Routes (mounted by `arena_engine.sim.batches.SimBatches.routes`): `POST /v1/messages/batches`
(`{"requests": [{"custom_id", "params"}]}`), `GET /v1/messages/batches` (`after_id`, `limit`),
`GET /v1/messages/batches/{id}`, `GET /v1/messages/batches/{id}/results` (JSONL, once ended),
`POST /v1/messages/batches/{id}/cancel`.

A batch is `in_progress` from its creation and `ended` after `SimConfig.batch_seconds` (or its models'
`SimModel.batch_seconds`; the 24 h window compressed); a cancelled one is `canceling` until its next poll, then `ended` with its rows
`canceled`. Each row's Messages request is turned back into the chat body a live client sends (the
system prompt as a leading system message, `stop_sequences` as `stop`) and answered by the same code as
a live request, so its answer and verdict equal the live ones for the same chat body; the reply goes
back as a Message (text block, `stop_reason`, `usage.input_tokens` / `output_tokens`). A row is
`errored` (`faults.rate_batch_error`) or `expired` (`faults.rate_batch_expire`), drawn from the seed
and the row's custom_id as in the OpenAI routes, and counted in the same stats.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from aiohttp import web

from arena_engine.sim.completion import complete
from arena_engine.sim.draws import digest64, uniforms


class Owner(Protocol):
    """What the Message Batches need of `arena_engine.sim.batches.SimBatches` (its simulator, ids and
    stats); named here so the import runs one way (batches -> message_batches)."""

    sim: Any
    stats: Any

    def _id(self, prefix: str) -> str: ...
    def span(self, models: set[str]) -> float: ...

_JSON = "application/json"
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_STOP = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal", "tool_calls": "tool_use"}


def _err(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def chat_body(params: dict[str, Any]) -> dict[str, Any]:
    """The chat request body a live client sends for a Messages request (the keys in the same order)."""
    body: dict[str, Any] = {}
    system = params.get("system")
    for key, value in params.items():
        if key == "system":
            continue
        if key == "messages":
            lead = [{"role": "system", "content": _text(system)}] if system else []
            body["messages"] = lead + [{"role": m["role"], "content": m["content"]} for m in value]
        elif key == "stop_sequences":
            body["stop"] = value
        else:
            body[key] = value
    return body


def _problem(n: int, req: Any) -> str | None:
    where = f"requests.{n}"
    if not isinstance(req, dict):
        return f"{where}: must be an object"
    if not isinstance(req.get("custom_id"), str) or not _CUSTOM_ID.match(req["custom_id"]):
        return f"{where}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$"
    params = req.get("params")
    if not isinstance(params, dict):
        return f"{where}.params: Field required"
    if not isinstance(params.get("model"), str):
        return f"{where}.params.model: Field required"
    if not isinstance(params.get("max_tokens"), int) or params["max_tokens"] < 1:
        return f"{where}.params.max_tokens: Field required"
    msgs = params.get("messages")
    if not isinstance(msgs, list) or not msgs or any(not isinstance(m, dict) or m.get("role") not in ("user", "assistant")
                                                     for m in msgs):
        return f"{where}.params.messages: a non-empty list of user and assistant turns is required"
    extra = set(params) - {"model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k",
                           "stop_sequences", "metadata", "thinking", "tools", "tool_choice", "service_tier"}
    if extra:
        return f"{where}.params.{sorted(extra)[0]}: Extra inputs are not permitted"
    return None


class SimMessageBatches:
    """State of the simulated Message Batches API (in memory; its ids and stats are the owner's)."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        self.batches: dict[str, dict[str, Any]] = {}

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/v1/messages/batches", self.create)
        r.add_get("/v1/messages/batches", self.list_batches)
        r.add_get("/v1/messages/batches/{id}", self.get_batch)
        r.add_get("/v1/messages/batches/{id}/results", self.results)
        r.add_post("/v1/messages/batches/{id}/cancel", self.cancel)

    async def create(self, request: web.Request) -> web.Response:
        if request.headers.get("anthropic-version") is None:
            return _err(400, "anthropic-version: header is required")
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _err(400, "the body is not JSON")
        reqs = data.get("requests") if isinstance(data, dict) else None
        if not isinstance(reqs, list) or not reqs:
            return _err(400, "requests: a non-empty list is required")
        if len(reqs) > 100_000:
            return _err(400, "requests: at most 100000 requests per batch")
        seen: set[str] = set()
        for n, req in enumerate(reqs):
            problem = _problem(n, req)
            if problem is None and req["custom_id"] in seen:
                problem = f"requests.{n}.custom_id: custom_id {req['custom_id']!r} is not unique in the batch"
            if problem is not None:
                return _err(400, problem)
            seen.add(req["custom_id"])
        now = time.time()
        bid = "msgbatch_" + self.owner._id("sim")
        b: dict[str, Any] = {"id": bid, "type": "message_batch", "processing_status": "in_progress",
                             "request_counts": {"processing": len(reqs), "succeeded": 0, "errored": 0,
                                                "canceled": 0, "expired": 0},
                             "ended_at": None, "created_at": _stamp(now), "expires_at": _stamp(now + 86400),
                             "archived_at": None, "cancel_initiated_at": None, "results_url": None,
                             "_t0": now, "_rows": reqs, "_results": None,
                             "_span": self.owner.span({str((r.get("params") or {}).get("model")) for r in reqs})}
        self.batches[bid] = b
        stats = self.owner.stats
        stats.created += 1
        for req in reqs:
            stats.keys_in_batches[req["custom_id"].rsplit("-", 1)[0]] += 1
        delay = self.owner.sim.config.batch_create_delay_s
        if delay > 0:  # the tests' window for a kill during a create: created, the reply not sent
            await asyncio.sleep(delay)
        return web.json_response(self._public(b, request))

    def _public(self, b: dict[str, Any], request: web.Request) -> dict[str, Any]:
        out = {k: v for k, v in b.items() if not k.startswith("_")}
        if b["processing_status"] == "ended":
            out["results_url"] = f"{request.scheme}://{request.host}/v1/messages/batches/{b['id']}/results"
        return out

    async def list_batches(self, request: web.Request) -> web.Response:
        for b in self.batches.values():
            self._advance(b)
        items = sorted(self.batches.values(), key=lambda o: o["id"], reverse=True)  # newest first
        after = request.query.get("after_id")
        if after is not None:
            items = [o for o in items if o["id"] < after]
        limit = max(1, min(1000, int(request.query.get("limit", "20"))))
        page = [self._public(b, request) for b in items[:limit]]
        return web.json_response({"data": page, "has_more": len(items) > limit,
                                  "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None})

    async def get_batch(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["id"])
        if b is None:
            return _err(404, "No message batch with this id", "not_found_error")
        self.owner.stats.polls += 1
        self._advance(b)
        return web.json_response(self._public(b, request))

    async def cancel(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["id"])
        if b is None:
            return _err(404, "No message batch with this id", "not_found_error")
        self._advance(b)
        if b["processing_status"] == "in_progress":
            b["processing_status"] = "canceling"
            b["cancel_initiated_at"] = _stamp(time.time())
        return web.json_response(self._public(b, request))

    async def results(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["id"])
        if b is None:
            return _err(404, "No message batch with this id", "not_found_error")
        self._advance(b)
        if b["processing_status"] != "ended":
            return _err(400, f"Message batch {b['id']} is still {b['processing_status']}; results are not ready")
        return web.Response(body=b["_results"], content_type="application/binary")

    def _advance(self, b: dict[str, Any]) -> None:
        if b["processing_status"] == "ended":
            return
        if b["processing_status"] == "canceling":
            self._finish(b, canceled=True)
            return
        if time.time() - b["_t0"] >= max(b["_span"], 1e-3):
            self._finish(b, canceled=False)

    def _finish(self, b: dict[str, Any], canceled: bool) -> None:
        sim = self.owner.sim
        cfg = sim.config
        stats = self.owner.stats
        counts = b["request_counts"]
        out: list[bytes] = []
        for req in b["_rows"]:
            cid = req["custom_id"]
            u_err, u_exp = uniforms(cfg.seed, digest64(cid.encode()), 0, 2)
            result: dict[str, Any]
            if canceled:
                result, kind = {"type": "canceled"}, "canceled"
            elif u_exp < cfg.faults.rate_batch_expire:
                stats.row_expired += 1
                result, kind = {"type": "expired"}, "expired"
            elif u_err < cfg.faults.rate_batch_error:
                stats.row_errors += 1
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "api_error", "message": "Simulated server error."}}}
                kind = "errored"
            else:
                result, kind = self._answer(req["params"]), "succeeded"
                if result["type"] == "succeeded":
                    stats.answered[cid.rsplit("-", 1)[0]] += 1
                else:
                    kind = "errored"
            counts[kind] += 1
            counts["processing"] -= 1
            out.append(orjson.dumps({"custom_id": cid, "result": result}))
        b["_results"] = b"\n".join(out) + b"\n"
        b["processing_status"] = "ended"
        b["ended_at"] = _stamp(time.time())

    def _answer(self, params: dict[str, Any]) -> dict[str, Any]:
        sim = self.owner.sim
        body = chat_body(params)
        model = sim.models.get(str(body.get("model")))
        if model is None:
            return {"type": "errored", "error": {"type": "error", "error": {
                "type": "not_found_error", "message": f"model: {body.get('model')}"}}}
        raw = orjson.dumps(body)  # the bytes a live client sends for this chat body: the same draws as live
        body_key = digest64(raw)
        u_bad, u_form = uniforms(sim.config.seed, body_key, 0, 4)[2:]
        http = complete(sim, body, model, body_key, u_bad, u_form)
        assert isinstance(http.body, bytes)
        chat = orjson.loads(http.body)
        choice = chat["choices"][0]
        usage = chat["usage"]
        message = {"id": f"msg_{chat['id']}", "type": "message", "role": "assistant", "model": chat["model"],
                   "content": [{"type": "text", "text": choice["message"]["content"]}],
                   "stop_reason": _STOP.get(choice["finish_reason"], "end_turn"), "stop_sequence": None,
                   "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]}}
        return {"type": "succeeded", "message": message}
