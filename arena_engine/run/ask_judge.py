"""One verdict asked of a judge, asked again (at most ``parse_retries`` times) in a way that can help."""

from __future__ import annotations

from typing import Any

from ..batch.session import DEFERRED
from ..client import ChatResult
from ..errors import VerdictError
from ..from_store import JudgeSlot
from ..judge import VERDICT_SCHEMA, parse_verdict, prompt_text, retry_budget, retry_messages
from .context import RunContext


async def ask_judge(ctx: RunContext, slot: JudgeSlot, messages: list[dict[str, Any]],
                    params: dict[str, Any]) -> tuple[dict[str, Any] | None, ChatResult]:
    """Ask the judge: a reply cut off by the completion budget once more with twice the budget
    (`judge.retry_budget`); an unreadable verdict with the reply quoted and the format repeated
    (`judge.retry_messages`) and, when the request had no response_format, constrained to the verdict
    schema (the client steps down to the shape the endpoint takes; if the endpoint fails on it the run
    stops adding it). A retry that would resend a request already answered at temperature 0 is not
    sent. (None, the failed result) if the request itself failed for good (the caller records it with
    its reason)."""
    client = ctx.clients[slot.role]
    usage = ctx.usage[slot.role]
    tries = 1 + max(0, slot.cfg.parse_retries)
    deterministic = params.get("temperature", 1.0) == 0
    ask_messages, ask_params = messages, params
    grown = False
    reason = ""
    unread: ChatResult | None = None  # the last reply that held no verdict
    prompt_tokens = completion_tokens = 0
    attempt = 0
    while attempt < tries:
        attempt += 1
        ctx.sending.set()
        result = await client.chat(ask_messages, ask_params)
        if result.error == DEFERRED:  # queued for the judge's next batch (a later pass reads it)
            return None, result
        ctx.account(usage, result)
        prompt_tokens += result.prompt_tokens
        completion_tokens += result.completion_tokens
        cut = result.finish_reason == "length"
        bigger = retry_budget(ask_params) if cut and not grown else None
        if not result.ok:
            if bigger is not None and attempt < tries:  # e.g. a reasoning model's thinking used it all
                reason, ask_params, grown = f"cut off by the completion budget: {result.error}", bigger, True
                continue
            if unread is not None and "response_format" in ask_params and "response_format" not in params:
                # the endpoint failed on the schema this retry added: never add it again
                ctx.schema_failed.add(slot.role)
                ask_params = {k: v for k, v in ask_params.items() if k != "response_format"}
                continue
            if unread is None:
                return None, result
            break  # a retry failed: the game keeps the reason its last reply was unreadable
        try:
            parsed = parse_verdict(result.content, prompt_text(ask_messages))
        except VerdictError as exc:
            unread = result
            reason = f"{exc} (cut off by the completion budget)" if cut else str(exc)
            if bigger is not None:
                ask_params, grown = bigger, True
                continue
            again = retry_messages(messages, result.content, str(exc))
            again_params = ask_params
            if "response_format" not in ask_params and slot.role not in ctx.schema_failed:
                again_params = {**ask_params, "response_format": VERDICT_SCHEMA}
            if deterministic and again == ask_messages and again_params == ask_params:
                break  # the same request again at temperature 0 would get the same reply
            ask_messages, ask_params = again, again_params
            continue
        return {"verdict": parsed.verdict.label, "reasoning": parsed.reasoning, "raw": result.content,
                "error": None, "tries": attempt, "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens, "latency": round(result.latency, 6),
                "finish_reason": result.finish_reason, "thinking": result.reasoning}, result
    last = unread or result
    return {"verdict": None, "reasoning": "", "raw": last.content, "error": reason, "tries": attempt,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "latency": round(last.latency, 6), "finish_reason": last.finish_reason,
            "thinking": last.reasoning}, last
