"""Anthropic Messages API: POST /v1/messages (JSON or SSE) and /v1/messages/count_tokens.

Prompt caching: blocks in the order tools -> system -> messages; a block's `cache_control`
(or the top-level `cache_control`, meaning the last block) is a breakpoint. `input_tokens`
counts only what was neither read from nor written to the cache.
"""

from __future__ import annotations

import time
from typing import Any

from services.simulator import text as answers
from services.simulator.caching import AnthropicUsage, Breakpoint
from services.simulator.config import Profile
from services.simulator.context import SimContext, paced, request_id
from services.simulator.http import (
    Refusal,
    Reply,
    Request,
    Response,
    StreamResponse,
    json_response,
    sse,
)
from services.simulator.stats import Call
from services.simulator.tokens import Part, canonical, part, total

VENDOR = "anthropic"


def error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
    rid = request_id("req_")
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": rid}
    return json_response(status, body, {"request-id": rid, **(headers or {})})


def fault_response(fault: str, model: str, profile: Profile) -> Response:
    retry = {"retry-after": f"{profile.retry_after_s:g}"}
    if fault == "429":
        return error(
            429,
            "rate_limit_error",
            f"This request would exceed the rate limit for {model} (simulated). "
            "Please try again later.",
            retry,
        )
    if fault == "quota":
        rid = request_id("req_")
        body = {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": "You have reached your specified API usage limits: spend limit "
                "reached, quota exhausted (simulated).",
                "details": {"error_code": "enforced_spend_limit_reached"},
            },
            "request_id": rid,
        }
        return json_response(429, body, {"request-id": rid})
    if fault == "500":
        return error(500, "api_error", "Internal server error (simulated)")
    if fault == "503":
        return error(503, "api_error", "Service unavailable (simulated)")
    return error(529, "overloaded_error", "Overloaded (simulated)")


def _blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content) if isinstance(content, list) else []


def _ttl(cache_control: Any) -> str:
    return "1h" if isinstance(cache_control, dict) and cache_control.get("ttl") == "1h" else "5m"


def prompt(body: dict[str, Any]) -> tuple[list[Part], list[Breakpoint], str]:
    """(parts, cache breakpoints, text of the last user message) of a Messages body."""
    parts: list[Part] = []
    breakpoints: list[Breakpoint] = []

    def add(tag: str, block: Any) -> None:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(part(tag, str(block.get("text", ""))))
        else:
            parts.append(part(tag, canonical(block)))
        if isinstance(block, dict) and block.get("cache_control"):
            breakpoints.append(Breakpoint(len(parts) - 1, _ttl(block["cache_control"])))

    for tool in body.get("tools") or []:
        add("tools", tool)
    for block in _blocks(body.get("system")):
        add("system", block)
    last_user = ""
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role", "user"))
        blocks = _blocks(message.get("content"))
        for block in blocks:
            add(role, block)
        if role == "user":
            last_user = " ".join(
                str(b.get("text", "")) for b in blocks if isinstance(b, dict) and "text" in b
            )
    if body.get("cache_control") and parts:
        breakpoints.append(Breakpoint(len(parts) - 1, _ttl(body["cache_control"])))
    return parts, breakpoints, last_user


def _usage(cache: AnthropicUsage, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": cache.input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache.cache_creation,
        "cache_read_input_tokens": cache.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache.cache_creation_5m,
            "ephemeral_1h_input_tokens": cache.cache_creation_1h,
        },
        "service_tier": "standard",
    }


def _body(request: Request) -> dict[str, Any]:
    """The JSON body, checked for what every endpoint needs: a model and messages."""
    try:
        body = request.json()
    except ValueError:
        raise Refusal(
            error(400, "invalid_request_error", "Request body is not valid JSON")
        ) from None
    if not isinstance(body, dict):
        raise Refusal(error(400, "invalid_request_error", "Request body must be a JSON object"))
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise Refusal(error(400, "invalid_request_error", "model: Field required"))
    if not isinstance(body.get("messages"), list):
        raise Refusal(error(400, "invalid_request_error", "messages: Field required"))
    return body


class AnthropicAPI:
    def __init__(self, ctx: SimContext) -> None:
        self.ctx = ctx

    async def handle(self, request: Request, path: str, call: Call) -> Reply:
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "")
        if not key.removeprefix("Bearer").strip():
            raise Refusal(error(401, "authentication_error", "x-api-key header is required"))
        if request.method != "POST" or path not in ("/v1/messages", "/v1/messages/count_tokens"):
            raise Refusal(error(404, "not_found_error", f"Not found: {request.method} {path}"))
        body = _body(request)
        model = body["model"]
        call.model = model
        if path == "/v1/messages/count_tokens":
            return json_response(200, {"input_tokens": total(prompt(body)[0])})
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise Refusal(error(400, "invalid_request_error", "max_tokens: Field required"))
        if max_tokens < 1:
            raise Refusal(error(400, "invalid_request_error", "max_tokens: must be greater than 0"))
        return await self._messages(request, body, model, max_tokens)

    async def _messages(
        self, request: Request, body: dict[str, Any], model: str, max_tokens: int
    ) -> Reply:
        parts, breakpoints, last_user = prompt(body)
        profile = self.ctx.profile(VENDOR, model)
        chosen = self.ctx.plan(profile, request.body)
        prompt_tokens = total(parts)
        window = profile.context_window
        if chosen.fault == "context" or prompt_tokens + max_tokens > window:
            await self.ctx.forced_wait(chosen)
            asked = prompt_tokens if prompt_tokens > window else prompt_tokens + max_tokens
            return error(
                400,
                "invalid_request_error",
                f"prompt is too long: {max(asked, window + 1)} tokens > {window} maximum",
            )
        if chosen.fault is not None:
            if (hang := await self.ctx.before_error(chosen, profile)) is not None:
                return hang
            return fault_response(chosen.fault, model, profile)

        cache = self.ctx.anthropic_cache.account(
            model, parts, breakpoints, profile.min_cache_tokens, time.monotonic()
        )
        reply = answers.answer(model, parts, last_user, max_tokens)
        stop_reason = "max_tokens" if reply.truncated else "end_turn"
        rid = request_id("req_")
        message: dict[str, Any] = {
            "id": request_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": reply.text}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": _usage(cache, reply.tokens),
        }
        streaming = bool(body.get("stream"))
        uncached = cache.input_tokens + cache.cache_creation  # writes are prefilled too
        spread = await self.ctx.before_first_byte(chosen, streaming, profile.prefill_s(uncached))
        if not streaming:
            return json_response(200, message, {"request-id": rid})
        return StreamResponse(
            paced(_events(message, reply.text), spread), headers={"request-id": rid}
        )


def _events(message: dict[str, Any], text: str) -> list[tuple[bytes, bool]]:
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    out: list[tuple[bytes, bool]] = [
        (sse({"type": "message_start", "message": start}, "message_start"), False),
        (
            sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
            False,
        ),
        (sse({"type": "ping"}, "ping"), False),
    ]
    for piece in answers.pieces(text, 8):
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": piece},
        }
        out.append((sse(delta, "content_block_delta"), True))
    final_usage = {
        "input_tokens": usage["input_tokens"],
        "output_tokens": usage["output_tokens"],
        "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
        "cache_read_input_tokens": usage["cache_read_input_tokens"],
    }
    out += [
        (sse({"type": "content_block_stop", "index": 0}, "content_block_stop"), False),
        (
            sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    "usage": final_usage,
                },
                "message_delta",
            ),
            False,
        ),
        (sse({"type": "message_stop"}, "message_stop"), False),
    ]
    return out
