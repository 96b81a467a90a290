"""OpenAI Chat Completions: POST /v1/chat/completions (JSON or SSE), under three prefixes,
and the Responses API (POST /v1/responses, JSON only), which codex models require.

`openai` and `compat` (vLLM / Ollama style) behave alike; `deepseek` adds DeepSeek's
`usage.prompt_cache_hit_tokens` / `prompt_cache_miss_tokens`. Caching is automatic (see
`caching.PrefixCache`) and scoped by prefix and model. Chat Completions has no
token-count endpoint, as with the real APIs. `logprobs: true` gets each answer token's
logprob in `choices[0].logprobs.content` (streamed with its chunk; see `logprobs`), or a
400 `unsupported_parameter` from a model whose profile says `logprobs = false`.
"""

from __future__ import annotations

import time
from typing import Any

from services.simulator import logprobs as lp
from services.simulator import text as answers
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

FLAVORS = ("openai", "deepseek", "compat")


def error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    code: str | None = None,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return json_response(status, body, {"x-request-id": request_id("req_"), **(headers or {})})


def fault_response(fault: str, model: str, profile: Profile) -> Response:
    if fault == "429":
        wait = profile.retry_after_s
        return error(
            429,
            f"Rate limit reached for {model} (simulated) on requests per min. "
            f"Please try again in {wait:g}s.",
            "requests",
            "rate_limit_exceeded",
            headers={"retry-after": f"{wait:g}", "retry-after-ms": str(round(wait * 1000))},
        )
    if fault == "quota":
        return error(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        )
    if fault == "500":
        return error(
            500,
            "The server had an error while processing your request (simulated).",
            "server_error",
            None,
        )
    return error(
        503,
        "The engine is currently overloaded, please try again later (simulated).",
        "server_error",
        None,
    )


def _content_parts(role: str, content: Any) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [part(role, content)]
    if isinstance(content, list):
        return [
            part(role, str(item.get("text", "")))
            if isinstance(item, dict) and item.get("type") == "text"
            else part(role, canonical(item))
            for item in content
        ]
    return [part(role, canonical(content))]


def prompt(body: dict[str, Any]) -> tuple[list[Part], str]:
    """(parts, text of the last user message); tools come first, as the model sees them."""
    parts = [part("tools", canonical(tool)) for tool in body.get("tools") or []]
    last_user = ""
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role", "user"))
        content = _content_parts(role, message.get("content"))
        parts += content
        if message.get("tool_calls"):
            parts.append(part(role, canonical(message["tool_calls"])))
        if role == "user":
            last_user = " ".join(p.text for p in content)
    return parts, last_user


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _body(request: Request) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError:
        raise Refusal(error(400, "We could not parse the JSON body of your request.")) from None
    if not isinstance(body, dict):
        raise Refusal(error(400, "The request body must be a JSON object."))
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise Refusal(error(400, "you must provide a model parameter", param="model"))
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise Refusal(
            error(
                400,
                "Missing required parameter: 'messages'.",
                code="missing_required_parameter",
                param="messages",
            )
        )
    return body


class OpenAIAPI:
    def __init__(self, ctx: SimContext, flavor: str) -> None:
        self.ctx = ctx
        self.flavor = flavor

    async def handle(self, request: Request, path: str, call: Call) -> Reply:
        token = request.headers.get("authorization", "").removeprefix("Bearer").strip()
        if not token:
            raise Refusal(
                error(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth.",
                    code="invalid_api_key",
                )
            )
        if request.method == "POST" and path == "/v1/responses":
            body = _responses_body(request)
            call.model = body["model"]
            return await self._complete(
                request, body, body["model"], _max_tokens(body), "responses"
            )
        if request.method != "POST" or path != "/v1/chat/completions":
            raise Refusal(
                error(404, f"Unknown request URL: {request.method} {path}", code="unknown_url")
            )
        body = _body(request)
        call.model = body["model"]
        max_tokens = _max_tokens(body)
        if max_tokens is not None and max_tokens < 1:
            raise Refusal(
                error(
                    400,
                    "max_tokens must be at least 1",
                    code="integer_below_min_value",
                    param="max_tokens",
                )
            )
        if (
            body.get("logprobs") is True
            and not self.ctx.profile(self.flavor, body["model"]).logprobs
        ):
            raise Refusal(
                error(
                    400,
                    "Unsupported parameter: 'logprobs' is not supported with this model.",
                    code="unsupported_parameter",
                    param="logprobs",
                )
            )
        return await self._complete(request, body, body["model"], max_tokens)

    async def _complete(
        self,
        request: Request,
        body: dict[str, Any],
        model: str,
        max_tokens: int | None,
        shape: str = "chat",
    ) -> Reply:
        profile = self.ctx.profile(self.flavor, model)
        chosen = self.ctx.plan(profile, request.body)
        parts, last_user = prompt(body)
        prompt_tokens = total(parts)
        window = profile.context_window
        asked = prompt_tokens + (max_tokens or 0)
        if chosen.fault == "context" or asked > window:
            await self.ctx.forced_wait(chosen)
            asked = max(asked, window + 1)
            return error(
                400,
                f"This model's maximum context length is {window} tokens. However, you "
                f"requested {asked} tokens ({prompt_tokens} in the messages, "
                f"{asked - prompt_tokens} in the completion). Please reduce the length of the "
                "messages or completion.",
                code="context_length_exceeded",
                param="messages",
            )
        if chosen.fault is not None:
            if (hang := await self.ctx.before_error(chosen, profile)) is not None:
                return hang
            return fault_response(chosen.fault, model, profile)

        cached = self.ctx.prefix_cache.account(
            f"{self.flavor}\x00{model}", parts, profile.min_cache_tokens, time.monotonic()
        )
        reply = answers.answer(model, parts, last_user, max_tokens)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": reply.tokens,
            "total_tokens": prompt_tokens + reply.tokens,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if self.flavor == "deepseek":
            usage["prompt_cache_hit_tokens"] = cached
            usage["prompt_cache_miss_tokens"] = prompt_tokens - cached
        finish = "length" if reply.truncated else "stop"
        tokens = (
            lp.token_logprobs(self.ctx.config.seed, model, reply.text)
            if shape == "chat" and body.get("logprobs") is True
            else None
        )
        head = {
            "id": request_id("chatcmpl-"),
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_sim",
        }
        streaming = bool(body.get("stream"))
        prefill = profile.prefill_s(prompt_tokens - cached)
        spread = await self.ctx.before_first_byte(chosen, streaming, prefill)
        headers = {"x-request-id": request_id("req_")}
        if shape == "responses":
            return json_response(
                200, _response_object(model, reply, prompt_tokens, cached), headers
            )
        if not streaming:
            completion = {
                **head,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": reply.text,
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None if tokens is None else lp.openai_content(tokens),
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
            return json_response(200, completion, headers)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        chunks = _chunks(head, reply.text, finish, usage if include_usage else None, tokens)
        return StreamResponse(paced(chunks, spread), headers=headers)


def _responses_body(request: Request) -> dict[str, Any]:
    """A Responses API request as the equivalent chat body (instructions + input)."""
    try:
        raw = request.json()
    except ValueError:
        raise Refusal(error(400, "We could not parse the JSON body of your request.")) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), str) or not raw["model"]:
        raise Refusal(error(400, "you must provide a model parameter", param="model"))
    if raw.get("stream"):
        raise Refusal(error(400, "streaming Responses are not simulated", param="stream"))
    messages: list[dict[str, Any]] = []
    if isinstance(raw.get("instructions"), str):
        messages.append({"role": "system", "content": raw["instructions"]})
    given = raw.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    elif isinstance(given, list):
        for item in given:
            if isinstance(item, dict):
                content = item.get("content")
                if isinstance(content, list):  # input_text parts read as text
                    content = [
                        {"type": "text", "text": c.get("text", "")}
                        for c in content
                        if isinstance(c, dict)
                    ]
                messages.append({"role": item.get("role", "user"), "content": content})
    if not messages:
        raise Refusal(error(400, "Missing required parameter: 'input'.", param="input"))
    out: dict[str, Any] = {"model": raw["model"], "messages": messages}
    if isinstance(raw.get("max_output_tokens"), int):
        out["max_completion_tokens"] = raw["max_output_tokens"]
    return out


def _response_object(
    model: str, reply: answers.Answer, prompt_tokens: int, cached: int
) -> dict[str, Any]:
    return {
        "id": request_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if reply.truncated else "completed",
        "model": model,
        "output": [
            {
                "type": "message",
                "id": request_id("msg_"),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": reply.tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + reply.tokens,
        },
    }


def _chunks(
    head: dict[str, Any],
    text: str,
    finish: str,
    usage: dict[str, Any] | None,
    tokens: list[lp.TokenLogprob] | None = None,
) -> list[tuple[bytes, bool]]:
    base = {**head, "object": "chat.completion.chunk"}
    if usage is not None:
        base["usage"] = None  # with include_usage, every chunk but the last says null

    def choice(
        delta: dict[str, Any],
        finish_reason: str | None = None,
        logprobs: list[lp.TokenLogprob] | None = None,
    ) -> bytes:
        entry = {
            "index": 0,
            "delta": delta,
            "logprobs": None if logprobs is None else lp.openai_content(logprobs),
            "finish_reason": finish_reason,
        }
        return sse({**base, "choices": [entry]})

    out = [(choice({"role": "assistant", "content": "", "refusal": None}), False)]
    if tokens is None:
        out += [(choice({"content": piece}), True) for piece in answers.pieces(text, 8)]
    else:  # each chunk carries its own tokens' logprobs
        out += [
            (choice({"content": "".join(t.token for t in run)}, None, run), True)
            for run in lp.groups(tokens, 8)
        ]
    out.append((choice({}, finish), False))
    if usage is not None:
        out.append((sse({**base, "choices": [], "usage": usage}), False))
    out.append((sse("[DONE]"), False))
    return out
