"""Gemini Developer API under /{v1|v1beta|v1alpha}: models/{m}:generateContent,
:streamGenerateContent (SSE with ?alt=sse, else a JSON array), :countTokens, GET models/{m},
and cachedContents create / get / list / patch / delete.

`promptTokenCount` includes the cached tokens; a request naming `cachedContent` also gets
`cachedContentTokenCount`. The cache rules of the real API are enforced: same model, no
`systemInstruction` / `tools` / `toolConfig` next to a cache, a minimum size, 404 once gone.
A cache keeps its document blocks' keywords, so answers that use it can cite them; creating
one waits the profile's prefill for its tokens, generating with one does not for those.
`generationConfig.responseLogprobs: true` gets `avgLogprobs` and `logprobsResult` on the
candidate (see `logprobs`), or a 400 from a model whose profile says `logprobs = false`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from services.simulator import logprobs as lp
from services.simulator import text as answers
from services.simulator.caching import GeminiCache
from services.simulator.citations import Document, documents
from services.simulator.config import Profile
from services.simulator.context import SimContext, paced
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
from services.simulator.tokens import Part, canonical, count, part, total

VENDOR = "gemini"
VERSIONS = ("v1", "v1beta", "v1alpha")
DEFAULT_CACHE_TTL_S = 3600.0
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)s\s*$")


def error(
    status: int,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS.get(status, "UNKNOWN"),
    }
    if details:
        body["details"] = details
    return json_response(status, {"error": body}, headers)


def fault_response(fault: str, model: str, profile: Profile) -> Response:
    if fault == "429":
        wait = profile.retry_after_s
        return error(
            429,
            f"Resource has been exhausted: too many requests to {model} (simulated). "
            "Please retry later.",
            [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait:g}s"}],
            {"retry-after": f"{wait:g}"},
        )
    if fault == "quota":
        return error(
            429,
            "You exceeded your current quota, please check your plan and billing details "
            "(simulated).",
            [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []}],
        )
    if fault == "500":
        return error(500, "An internal error has occurred (simulated).")
    return error(503, "The model is overloaded. Please try again later. (simulated)")


def _rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: str) -> float:
    # Keep at most microseconds: the API sends nanoseconds, fromisoformat takes six digits.
    value = re.sub(r"(\.\d{6})\d+", r"\1", value.strip())
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _expiry(body: dict[str, Any], now: float) -> float | None:
    """Expiry from `ttl` ("300s") or `expireTime`; None if neither parses."""
    if "ttl" in body:
        match = _DURATION.match(str(body["ttl"]))
        return now + float(match.group(1)) if match else None
    if "expireTime" in body:
        try:
            return _parse_time(str(body["expireTime"]))
        except ValueError:
            return None
    return now + DEFAULT_CACHE_TTL_S


def _content_parts(content: Any, default_role: str) -> list[Part]:
    if not isinstance(content, dict):
        return []
    role = str(content.get("role") or default_role)
    out = []
    for item in content.get("parts") or []:
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            out.append(part(role, item["text"]))
        else:
            out.append(part(role, canonical(item)))
    return out


def prompt(body: dict[str, Any]) -> tuple[list[Part], str]:
    """(parts of systemInstruction, tools and contents; text of the last user turn)."""
    parts = _content_parts(body.get("systemInstruction"), "system")
    parts += [part("tools", canonical(tool)) for tool in body.get("tools") or []]
    if body.get("toolConfig"):
        parts.append(part("tools", canonical(body["toolConfig"])))
    last_user = ""
    contents = body.get("contents") or []
    for content in contents if isinstance(contents, list) else [contents]:
        turn = _content_parts(content, "user")
        parts += turn
        if turn and turn[0].tag == "user":
            last_user = " ".join(p.text for p in turn)
    return parts, last_user


def _logprobs_asked(config: Any, profile: Profile, model: str) -> bool:
    asked = isinstance(config, dict) and config.get("responseLogprobs") is True
    if asked and not profile.logprobs:
        raise Refusal(error(400, f"Logprobs is not enabled for models/{_bare(model)}"))
    return asked


def _stream_pieces(
    text: str, logprobs: list[lp.TokenLogprob] | None
) -> list[tuple[str, list[lp.TokenLogprob] | None]]:
    """A stream's chunks of text; with logprobs, whole tokens, each with its tokens'."""
    if logprobs is None:
        return [(piece, None) for piece in answers.pieces(text, 8) or [""]]
    runs = lp.groups(logprobs, 8) or [[]]
    return [("".join(t.token for t in run), run) for run in runs]


def _bare(model: str) -> str:
    return model.removeprefix("models/")


def cache_json(cache: GeminiCache) -> dict[str, Any]:
    out: dict[str, Any] = {"name": cache.name, "model": cache.model}
    if cache.display_name is not None:
        out["displayName"] = cache.display_name
    out.update(
        createTime=cache.created,
        updateTime=cache.updated,
        expireTime=_rfc3339(cache.expire_at),
        usageMetadata={"totalTokenCount": cache.tokens},
    )
    return out


def _body(request: Request) -> dict[str, Any]:
    if request.method not in ("POST", "PATCH"):
        return {}
    try:
        body = request.json()
    except ValueError:
        raise Refusal(error(400, "Invalid JSON payload received.")) from None
    if not isinstance(body, dict):
        raise Refusal(error(400, "Invalid JSON payload received: expected an object."))
    return body


class GeminiAPI:
    def __init__(self, ctx: SimContext) -> None:
        self.ctx = ctx

    async def handle(self, request: Request, path: str, call: Call) -> Reply:
        key = (
            request.headers.get("x-goog-api-key")
            or (request.query.get("key") or [""])[0]
            or request.headers.get("authorization", "").removeprefix("Bearer").strip()
        )
        if not key:
            raise Refusal(
                error(401, "Method doesn't allow unregistered callers. Please use an API key.")
            )
        version, _, rest = path.strip("/").partition("/")
        if version not in VERSIONS:
            raise Refusal(error(404, f"Unknown API version in {path}"))
        body = _body(request)
        if rest == "cachedContents" and request.method == "POST":
            return await self._create_cache(body, call, time.time())
        if rest == "cachedContents" or rest.startswith("cachedContents/"):
            return self._caches(request, rest, body, call)
        model, _, verb = rest.removeprefix("models/").partition(":")
        if rest.startswith("models/"):
            call.model = model
            if request.method == "GET" and not verb:
                return self._model_info(model)
            if request.method == "POST" and verb in ("generateContent", "streamGenerateContent"):
                return await self._generate(request, model, body, verb == "streamGenerateContent")
            if request.method == "POST" and verb == "countTokens":
                return self._count(model, body)
        raise Refusal(error(404, f"Method not found: {request.method} {path}"))

    def _model_info(self, model: str) -> Response:
        profile = self.ctx.profile(VENDOR, model)
        return json_response(
            200,
            {
                "name": f"models/{model}",
                "displayName": f"{model} (simulated)",
                "inputTokenLimit": profile.context_window,
                "outputTokenLimit": 65_536,
                "supportedGenerationMethods": [
                    "generateContent",
                    "countTokens",
                    "createCachedContent",
                ],
            },
        )

    def _count(self, model: str, body: dict[str, Any]) -> Response:
        inner = body.get("generateContentRequest")
        request_body = inner if isinstance(inner, dict) else body
        parts, _ = prompt(request_body)
        tokens = total(parts)
        out: dict[str, Any] = {}
        if request_body.get("cachedContent"):
            cache = self._use_cache(model, request_body)
            tokens += cache.tokens
            out["cachedContentTokenCount"] = cache.tokens
        out["totalTokens"] = tokens
        out["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": tokens}]
        return json_response(200, out)

    def _use_cache(self, model: str, body: dict[str, Any]) -> GeminiCache:
        raw = str(body["cachedContent"])
        name = raw[raw.find("cachedContents/") :] if "cachedContents/" in raw else raw
        cache = self.ctx.gemini_caches.get(name, time.time())
        if cache is None:
            raise Refusal(error(404, f"CachedContent not found (or expired): {name}"))
        if _bare(cache.model) != _bare(model):
            raise Refusal(
                error(
                    400,
                    f"Model used by GenerateContent request (models/{_bare(model)}) and "
                    f"CachedContent ({cache.model}) has to be the same.",
                )
            )
        if any(body.get(k) for k in ("systemInstruction", "tools", "toolConfig")):
            raise Refusal(
                error(
                    400,
                    "CachedContent can not be used with GenerateContent request setting "
                    "system_instruction, tools or tool_config. Proposed fix: move those "
                    "values to CachedContent from GenerateContent request.",
                )
            )
        return cache

    async def _generate(
        self, request: Request, model: str, body: dict[str, Any], streaming: bool
    ) -> Reply:
        parts, last_user = prompt(body)
        prompt_tokens = total(parts)
        cached: int | None = None  # set when the request names a cache
        cited: tuple[Document, ...] = ()
        if body.get("cachedContent"):
            cache = self._use_cache(model, body)
            cached = cache.tokens
            cited = cache.documents
            prompt_tokens += cached
            # The answer depends on the cached content too, not only on its name.
            parts = [part("cache", cache.content_key), *parts]
        profile = self.ctx.profile(VENDOR, model)
        config = body.get("generationConfig")
        want_logprobs = _logprobs_asked(config, profile, model)
        chosen = self.ctx.plan(profile, request.body)
        max_tokens = config.get("maxOutputTokens") if isinstance(config, dict) else None
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            max_tokens = None
        window = profile.context_window
        asked = prompt_tokens if prompt_tokens > window else prompt_tokens + (max_tokens or 0)
        if chosen.fault == "context" or asked > window:
            await self.ctx.forced_wait(chosen)
            raise Refusal(
                error(
                    400,
                    f"The input token count ({max(asked, window + 1)}) exceeds the maximum "
                    f"number of tokens allowed ({window}).",
                )
            )
        if chosen.fault is not None:
            hang = await self.ctx.before_error(chosen, profile)
            return hang or fault_response(chosen.fault, model, profile)

        reply = answers.answer(model, parts, last_user, max_tokens, cited)
        finish = "MAX_TOKENS" if reply.truncated else "STOP"
        response_id = uuid.uuid4().hex[:22]
        logprobs = (
            lp.token_logprobs(self.ctx.config.seed, model, reply.text) if want_logprobs else None
        )

        def chunk(
            text: str,
            tokens: int,
            finish_reason: str | None,
            chosen: list[lp.TokenLogprob] | None = None,
        ) -> dict[str, Any]:
            candidate: dict[str, Any] = {
                "content": {"role": "model", "parts": [{"text": text}]},
                "index": 0,
            }
            if finish_reason:
                candidate["finishReason"] = finish_reason
            if chosen is not None:
                candidate.update(lp.gemini_candidate_fields(chosen))
            usage: dict[str, Any] = {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": tokens,
                "totalTokenCount": prompt_tokens + tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
            }
            if cached is not None:
                usage["cachedContentTokenCount"] = cached
                usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
            return {
                "candidates": [candidate],
                "usageMetadata": usage,
                "modelVersion": model,
                "responseId": response_id,
            }

        sse_stream = streaming and request.query.get("alt") == ["sse"]
        prefill = profile.prefill_s(prompt_tokens - (cached or 0))
        spread = await self.ctx.before_first_byte(chosen, sse_stream, prefill)
        if not streaming:
            return json_response(200, chunk(reply.text, reply.tokens, finish, logprobs))
        pieces = _stream_pieces(reply.text, logprobs)
        so_far = ""
        chunks = []
        for i, (piece, run) in enumerate(pieces):
            so_far += piece
            last = i == len(pieces) - 1
            chunks.append(chunk(piece, count(so_far), finish if last else None, run))
        if sse_stream:
            return StreamResponse(paced([(sse(c), True) for c in chunks], spread))
        return json_response(200, chunks)  # without alt=sse the API streams a JSON array

    # -- cachedContents

    def _caches(self, request: Request, rest: str, body: dict[str, Any], call: Call) -> Reply:
        now = time.time()
        store = self.ctx.gemini_caches
        if rest == "cachedContents" and request.method == "GET":
            return self._list_caches(request, now)
        cache = store.get(rest, now) if rest != "cachedContents" else None
        if cache is None:
            raise Refusal(error(404, f"CachedContent not found (or expired): {rest}"))
        call.model = _bare(cache.model)
        if request.method == "DELETE":
            store.remove(cache.name)
            return json_response(200, {})
        if request.method == "PATCH":
            expiry = _expiry(body, now) if ("ttl" in body or "expireTime" in body) else None
            if expiry is None:
                raise Refusal(
                    error(400, "Only ttl or expireTime can be updated, as a valid value.")
                )
            cache.expire_at = expiry
            cache.updated = _rfc3339(now)
        return json_response(200, cache_json(cache))

    async def _create_cache(self, body: dict[str, Any], call: Call, now: float) -> Response:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise Refusal(error(400, "CachedContent.model is required."))
        model = "models/" + _bare(model)
        call.model = _bare(model)
        parts, _ = prompt(body)
        tokens = total(parts)
        profile = self.ctx.profile(VENDOR, _bare(model))
        minimum = profile.min_cache_tokens
        if tokens < minimum:
            raise Refusal(
                error(
                    400,
                    f"Cached content is too small. total_token_count={tokens}, "
                    f"min_total_token_count={minimum}",
                )
            )
        expiry = _expiry(body, now)
        if expiry is None:
            raise Refusal(error(400, "Invalid ttl or expireTime."))
        digest = hashlib.sha256(json.dumps([p.tag + p.text for p in parts]).encode()).hexdigest()
        stamp = _rfc3339(now)
        display = body.get("displayName")
        cache = GeminiCache(
            name="cachedContents/" + uuid.uuid4().hex[:16],
            model=model,
            tokens=tokens,
            created=stamp,
            updated=stamp,
            expire_at=expiry,
            content_key=digest,
            display_name=str(display) if display is not None else None,
            documents=tuple(documents(parts)),
        )
        if (prefill := profile.prefill_s(tokens)) > 0:
            await asyncio.sleep(prefill)  # writing the cache is prefilling it
        self.ctx.gemini_caches.add(cache)
        return json_response(200, cache_json(cache))

    def _list_caches(self, request: Request, now: float) -> Response:
        live = self.ctx.gemini_caches.live(now)
        try:
            size = int((request.query.get("pageSize") or ["1000"])[0]) or 1000
            start = int((request.query.get("pageToken") or ["0"])[0])
        except ValueError:
            raise Refusal(error(400, "Invalid pageSize or pageToken.")) from None
        page = live[start : start + size]
        out: dict[str, Any] = {}
        if page:
            out["cachedContents"] = [cache_json(c) for c in page]
        if start + size < len(live):
            out["nextPageToken"] = str(start + size)
        return json_response(200, out)
