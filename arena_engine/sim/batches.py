"""The simulator's OpenAI Batch API: files, batches, their states, partial failures and expiry.

Routes (mounted by `arena_engine.sim.server.make_app`): `POST /v1/files` (multipart, `purpose=batch`),
`GET /v1/files` (`purpose`, `after`, `limit`), `GET /v1/files/{id}/content`, `DELETE /v1/files/{id}`,
`POST /v1/batches`, `GET /v1/batches` (`after`, `limit`), `GET /v1/batches/{id}`,
`POST /v1/batches/{id}/cancel`; and Anthropic's Message Batches (`arena_engine.sim.message_batches`).

A batch moves validating -> in_progress -> finalizing -> completed over `SimConfig.batch_seconds` of
real time (the 24 h window compressed; `SimModel.batch_seconds` sets it per model). Each row is answered by the same code as a live request
(`completion.chat_completion`, as `arena_engine.sim.server` does), so a batch's answers and verdicts equal the live ones for the same body.
A row fails (`faults.rate_batch_error`, status 500 in the output file) or is left unfinished
(`faults.rate_batch_expire`: the batch ends `expired`, the row is in the error file with
`batch_expired`), drawn from the seed and the row's custom_id, so a resubmitted row draws again.

The stats (`/sim/stats` under "batches") count files uploaded, batches created, how many created
batches held each key (the custom_id before its `-<try>` suffix) and how often each key was answered.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from arena_engine.sim.completion import Completer, complete
from arena_engine.sim.draws import digest64, uniforms
from arena_engine.sim.message_batches import SimMessageBatches

_JSON = "application/json"
TERMINAL = ("completed", "failed", "expired", "cancelled")


def _err(status: int, message: str, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


def key_of(custom_id: str) -> str:
    """The key a custom_id carries (arena-engine sends "<key hex>-<try>")."""
    return custom_id.rsplit("-", 1)[0]


class BatchStats:
    def __init__(self) -> None:
        self.files = 0
        self.created = 0
        self.keys_in_batches: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.row_errors = 0
        self.row_expired = 0
        self.polls = 0  # a batch looked up by id (how a client polls)

    def snapshot(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "created": self.created,
            "keys": len(self.keys_in_batches),
            "keys_in_two_batches": sum(1 for n in self.keys_in_batches.values() if n > 1),
            "answered": sum(self.answered.values()),
            "answered_twice": sum(1 for n in self.answered.values() if n > 1),
            "row_errors": self.row_errors,
            "row_expired": self.row_expired,
            "polls": self.polls,
        }


class SimBatches:
    """State of the simulated Batch API (in memory, one per app)."""

    def __init__(self, sim: Completer) -> None:
        self.sim = sim
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.stats = BatchStats()
        self._n = 0
        self.messages = SimMessageBatches(self)

    def span(self, models: set[str]) -> float:
        """Seconds a batch of these models' requests takes: the longest of their `SimModel.batch_seconds`,
        `SimConfig.batch_seconds` for a model without one."""
        default = self.sim.config.batch_seconds
        own = [m.batch_seconds for n in models if (m := self.sim.models.get(n)) is not None]
        return max([default if x is None else x for x in own] or [default])

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}-sim{self._n:06d}"

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/v1/files", self.upload)
        r.add_get("/v1/files", self.list_files)
        r.add_get("/v1/files/{id}", self.get_file)
        r.add_get("/v1/files/{id}/content", self.file_content)
        r.add_delete("/v1/files/{id}", self.delete_file)
        r.add_post("/v1/batches", self.create)
        r.add_get("/v1/batches", self.list_batches)
        r.add_get("/v1/batches/{id}", self.get_batch)
        r.add_post("/v1/batches/{id}/cancel", self.cancel)
        self.messages.routes(app)  # Anthropic's Message Batches, on the same ids and stats

    # -- files --------------------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        purpose = form.get("purpose")
        upload = form.get("file")
        if purpose not in ("batch", "batch_output"):
            return _err(400, "purpose must be 'batch'", "invalid_purpose")
        if not isinstance(upload, web.FileField):
            return _err(400, "a multipart 'file' part is required", "missing_file")
        obj = self._store_file(upload.file.read(), upload.filename, "batch")
        delay = self.sim.config.batch_upload_delay_s
        if delay > 0:  # the tests' window for a kill during an upload: the file has landed, the reply not
            await asyncio.sleep(delay)
        return web.json_response(obj)

    def _store_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        fid = self._id("file")
        obj = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
               "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[fid] = obj
        self.contents[fid] = data
        if purpose == "batch":
            self.stats.files += 1
        return obj

    async def list_files(self, request: web.Request) -> web.Response:
        purpose = request.query.get("purpose")
        items = [f for f in self.files.values() if purpose is None or f["purpose"] == purpose]
        return web.json_response(self._page(items, request))

    async def get_file(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["id"])
        return web.json_response(f) if f else _err(404, "No such File object", "not_found")

    async def file_content(self, request: web.Request) -> web.Response:
        data = self.contents.get(request.match_info["id"])
        if data is None:
            return _err(404, "No such File object", "not_found")
        return web.Response(body=data, content_type="application/octet-stream")

    async def delete_file(self, request: web.Request) -> web.Response:
        fid = request.match_info["id"]
        if self.files.pop(fid, None) is None:
            return _err(404, "No such File object", "not_found")
        self.contents.pop(fid, None)
        return web.json_response({"id": fid, "object": "file", "deleted": True})

    @staticmethod
    def _page(items: list[dict[str, Any]], request: web.Request) -> dict[str, Any]:
        """Newest first, `after` an id, at most `limit` (OpenAI's list pagination)."""
        items = sorted(items, key=lambda o: o["id"], reverse=True)
        after = request.query.get("after")
        if after is not None:
            items = [o for o in items if o["id"] < after]
        limit = max(1, min(100, int(request.query.get("limit", "20"))))
        page = items[:limit]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}

    # -- batches ------------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _err(400, "body is not JSON")
        fid = data.get("input_file_id")
        if fid not in self.files:
            return _err(400, f"input_file_id {fid!r} does not exist", "invalid_file")
        if data.get("endpoint") != "/v1/chat/completions":
            return _err(400, "endpoint must be /v1/chat/completions", "invalid_endpoint")
        bid = self._id("batch")
        now = time.time()
        rows, problem = self._parse(self.contents[fid])
        batch: dict[str, Any] = {
            "id": bid, "object": "batch", "endpoint": data["endpoint"], "errors": None,
            "input_file_id": fid, "completion_window": data.get("completion_window", "24h"),
            "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": int(now),
            "in_progress_at": None, "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelled_at": None, "metadata": data.get("metadata"),
            "request_counts": {"total": len(rows), "completed": 0, "failed": 0},
            "_t0": now, "_rows": rows, "_problem": problem,
            "_span": self.span({str(r["body"].get("model")) for r in rows}),
        }
        self.batches[bid] = batch
        self.stats.created += 1
        if problem is None:
            for row in rows:
                self.stats.keys_in_batches[key_of(row["custom_id"])] += 1
        delay = self.sim.config.batch_create_delay_s
        if delay > 0:  # the tests' window for a kill between upload and create: created, the reply not sent
            await asyncio.sleep(delay)
        return web.json_response(self._public(batch))

    @staticmethod
    def _parse(data: bytes) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        rows = []
        seen: set[str] = set()
        for n, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                return [], {"code": "invalid_json_line", "message": "line is not JSON", "line": n}
            if not isinstance(row, dict) or not isinstance(row.get("custom_id"), str) or row.get("method") != "POST" \
                    or row.get("url") != "/v1/chat/completions" or not isinstance(row.get("body"), dict):
                return [], {"code": "invalid_request", "message": "needs custom_id, method POST, url, body", "line": n}
            if row["custom_id"] in seen:
                return [], {"code": "duplicate_custom_id", "message": "custom_id is not unique", "line": n}
            seen.add(row["custom_id"])
            rows.append(row)
        if not rows:
            return [], {"code": "empty_file", "message": "the input file has no requests", "line": None}
        return rows, None

    async def list_batches(self, request: web.Request) -> web.Response:
        for b in self.batches.values():
            self._advance(b)
        return web.json_response(self._page([self._public(b) for b in self.batches.values()], request))

    async def get_batch(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["id"])
        if b is None:
            return _err(404, "No such Batch object", "not_found")
        self.stats.polls += 1
        self._advance(b)
        return web.json_response(self._public(b))

    async def cancel(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["id"])
        if b is None:
            return _err(404, "No such Batch object", "not_found")
        self._advance(b)
        if b["status"] not in TERMINAL:
            b["status"] = "cancelled"
            b["cancelled_at"] = int(time.time())
        return web.json_response(self._public(b))

    @staticmethod
    def _public(b: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in b.items() if not k.startswith("_")}

    def _advance(self, b: dict[str, Any]) -> None:
        """Move the batch along its timeline; answer its rows when it finalizes."""
        if b["status"] in TERMINAL:
            return
        span = max(b["_span"], 1e-3)
        elapsed = time.time() - b["_t0"]
        if b["_problem"] is not None and elapsed >= 0.1 * span:
            b["status"] = "failed"
            b["failed_at"] = int(time.time())
            b["errors"] = {"object": "list", "data": [b["_problem"]]}
            return
        if elapsed < 0.1 * span:
            return
        b["in_progress_at"] = b["in_progress_at"] or int(time.time())
        b["status"] = "in_progress"
        if elapsed < 0.8 * span:
            return
        b["finalizing_at"] = b["finalizing_at"] or int(time.time())
        b["status"] = "finalizing"
        if elapsed < span:
            return
        self._finish(b)

    def _finish(self, b: dict[str, Any]) -> None:
        cfg = self.sim.config
        out: list[bytes] = []
        errors: list[bytes] = []
        expired = 0
        counts = b["request_counts"]
        for row in b["_rows"]:
            cid = row["custom_id"]
            u_err, u_exp = uniforms(cfg.seed, digest64(cid.encode()), 0, 2)
            if u_exp < cfg.faults.rate_batch_expire:
                expired += 1
                self.stats.row_expired += 1
                errors.append(orjson.dumps({"id": f"req-{cid}", "custom_id": cid, "response": None,
                                            "error": {"code": "batch_expired",
                                                      "message": "This request could not be executed before the "
                                                                 "completion window expired."}}))
                counts["failed"] += 1
                continue
            if u_err < cfg.faults.rate_batch_error:
                self.stats.row_errors += 1
                body = {"error": {"message": "Simulated server error.", "type": "server_error"}}
                out.append(orjson.dumps({"id": f"req-{cid}", "custom_id": cid,
                                         "response": {"status_code": 500, "request_id": cid, "body": body},
                                         "error": None}))
                counts["failed"] += 1
                continue
            body = row["body"]
            model = self.sim.models.get(body.get("model"))
            if model is None:
                resp = {"status_code": 404, "request_id": cid,
                        "body": {"error": {"message": f"The model `{body.get('model')}` does not exist."}}}
                counts["failed"] += 1
            else:
                raw = orjson.dumps(body)  # the bytes a live client sends: the same draws as live
                body_key = digest64(raw)
                u_bad, u_form = uniforms(cfg.seed, body_key, 0, 4)[2:]
                http = complete(self.sim, body, model, body_key, u_bad, u_form)
                assert isinstance(http.body, bytes)
                resp = {"status_code": 200, "request_id": cid, "body": orjson.loads(http.body)}
                counts["completed"] += 1
                self.stats.answered[key_of(cid)] += 1
            out.append(orjson.dumps({"id": f"req-{cid}", "custom_id": cid, "response": resp, "error": None}))
        now = int(time.time())
        if out:
            b["output_file_id"] = self._store_file(b"\n".join(out) + b"\n", f"{b['id']}_output.jsonl",
                                                   "batch_output")["id"]
        if errors:
            b["error_file_id"] = self._store_file(b"\n".join(errors) + b"\n", f"{b['id']}_error.jsonl",
                                                  "batch_output")["id"]
        if expired:
            b["status"], b["expired_at"] = "expired", now
        else:
            b["status"], b["completed_at"] = "completed", now

