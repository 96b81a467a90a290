"""Claude through the official anthropic SDK (Messages API, prompt caching, count_tokens)."""

from __future__ import annotations

import time
from typing import Any

import anthropic

from shared.llm.errors import LLMConnectionError, LLMError, LLMTimeoutError
from shared.llm.mapping import from_status, scrub
from shared.llm.pool import AdapterOptions, stainless_pool
from shared.llm.settings import Endpoint
from shared.llm.types import LLMRequest, LLMResponse, TokenCount, Usage


class AnthropicClient:
    vendor = "claude"

    def __init__(self, endpoint: Endpoint, options: AdapterOptions) -> None:
        self.default_model = options.default_model
        self._timeout_s = options.timeout_s
        self._secrets = (endpoint.api_key,)
        self._pool = stainless_pool(
            anthropic.AsyncAnthropic, endpoint.api_key, endpoint.base_url, options
        )

    def _body(self, request: LLMRequest) -> dict[str, Any]:
        system: list[dict[str, Any]] = []
        if request.system:
            system.append({"type": "text", "text": request.system})
        if request.context:
            block: dict[str, Any] = {"type": "text", "text": request.context}
            if request.cache_context:  # the stable prefix: cached, read at 0.1x next time
                block["cache_control"] = (
                    {"type": "ephemeral", "ttl": "1h"}
                    if request.cache_ttl == "1h"
                    else {"type": "ephemeral"}
                )
            system.append(block)
        body: dict[str, Any] = {
            "model": request.model or self.default_model,
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if system:
            body["system"] = system
        return body

    async def complete(self, request: LLMRequest) -> LLMResponse:
        body = self._body(request)
        extra: dict[str, Any] = {}
        if request.temperature is not None:
            extra["temperature"] = request.temperature
        timeout = request.timeout_s or self._timeout_s
        started = time.monotonic()
        try:
            with self._pool.lease() as sdk:
                msg = await sdk.messages.create(
                    **body, **extra, max_tokens=request.max_output_tokens, timeout=timeout
                )
        except anthropic.AnthropicError as exc:
            raise self._error(exc, body["model"]) from None
        u = msg.usage
        cache_1h = getattr(getattr(u, "cache_creation", None), "ephemeral_1h_input_tokens", 0)
        usage = Usage(
            input_tokens=u.input_tokens or 0,
            output_tokens=u.output_tokens or 0,
            cache_read_tokens=u.cache_read_input_tokens or 0,
            cache_write_tokens=u.cache_creation_input_tokens or 0,
            cache_write_1h_tokens=cache_1h or 0,
        )
        text = "".join(b.text for b in msg.content if getattr(b, "type", None) == "text")
        return LLMResponse(
            text=text,
            vendor=self.vendor,
            model=msg.model,
            usage=usage,
            latency_s=time.monotonic() - started,
            finish_reason=msg.stop_reason,
            request_id=getattr(msg, "_request_id", None),
        )

    async def count_tokens(self, request: LLMRequest) -> TokenCount:
        body = self._body(request)
        try:
            with self._pool.lease() as sdk:
                res = await sdk.messages.count_tokens(**body, timeout=self._timeout_s)
        except anthropic.AnthropicError as exc:
            raise self._error(exc, body["model"]) from None
        return TokenCount(res.input_tokens, estimated=False, method="anthropic.count_tokens")

    def _error(self, exc: anthropic.AnthropicError, model: str) -> LLMError:
        if isinstance(exc, anthropic.APITimeoutError):
            return LLMTimeoutError("no answer within the timeout", vendor=self.vendor, model=model)
        if isinstance(exc, anthropic.APIConnectionError):
            return LLMConnectionError(
                scrub(str(exc), self._secrets), vendor=self.vendor, model=model
            )
        if isinstance(exc, anthropic.APIStatusError):
            return from_status(
                vendor=self.vendor,
                model=model,
                status=exc.status_code,
                message=scrub(exc.api_message or str(exc), self._secrets),
                headers=exc.response.headers,
                code=exc.error_code or exc.type,
            )
        return from_status(
            vendor=self.vendor, model=model, status=400, message=scrub(str(exc), self._secrets)
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
