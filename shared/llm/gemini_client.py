"""Gemini through the official google-genai SDK: generateContent, countTokens, and
explicit context caches (cachedContents) for the mega-shard.

The async HTTP client is pinned to httpx2: otherwise google-genai switches to aiohttp
whenever it happens to be installed, with other exceptions and a hidden retry.

With `AdapterOptions.logprobs` a request sets `responseLogprobs` and the answer's confidence
is exp(`candidates[0].avgLogprobs`) (also read when the API sends it unasked). Models that
refuse it ("Logprobs is not enabled for models/...", HTTP 400) are asked again at once
without it, and never again by this client.
"""

from __future__ import annotations

import time
from typing import Any

import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from shared.llm.confidence import LogprobsAsk, from_mean_logprob, refuses_logprobs
from shared.llm.errors import LLMConnectionError, LLMError, LLMTimeoutError
from shared.llm.mapping import from_status, scrub
from shared.llm.pool import AdapterOptions, ClientPool
from shared.llm.settings import Endpoint
from shared.llm.types import LLMRequest, LLMResponse, TokenCount, Usage


class GeminiClient:
    vendor = "gemini"

    def __init__(self, endpoint: Endpoint, options: AdapterOptions) -> None:
        self.default_model = options.default_model
        self._timeout_s = timeout_s = options.timeout_s
        self._secrets = (endpoint.api_key,)
        self._logprobs = LogprobsAsk(self.vendor, enabled=options.logprobs)

        def make(http: httpx2.AsyncClient) -> genai.Client:
            options = types.HttpOptions(
                base_url=endpoint.base_url,
                timeout=int(timeout_s * 1000),  # milliseconds; google-genai has none by default
                httpx_async_client=http,
                retry_options=types.HttpRetryOptions(attempts=1),  # the worker owns retries
            )
            return genai.Client(api_key=endpoint.api_key, http_options=options)

        self._pool = ClientPool(
            make,
            lambda sdk: sdk.aio.aclose(),
            max_connections=options.max_connections,
            timeout=options.timeout,
        )

    def _config(self, request: LLMRequest, logprobs: bool) -> types.GenerateContentConfig:
        return types.GenerateContentConfig(
            # A request that uses a cache may not set its own system instruction.
            system_instruction=None if request.cached_content else request.system,
            max_output_tokens=request.max_output_tokens,
            temperature=request.temperature,
            cached_content=request.cached_content,
            response_logprobs=True if logprobs else None,
            http_options=types.HttpOptions(
                timeout=int((request.timeout_s or self._timeout_s) * 1000)
            ),
        )

    def _contents(self, request: LLMRequest) -> list[types.Content]:
        parts = []
        if request.context and not request.cached_content:
            parts.append(types.Part(text=request.context))
        parts.append(types.Part(text=request.prompt))
        return [types.Content(role="user", parts=parts)]

    async def complete(self, request: LLMRequest) -> LLMResponse:
        model = request.model or self.default_model
        asked = self._logprobs.wanted(model)
        started = time.monotonic()
        try:
            try:
                res = await self._generate(model, request, asked)
            except genai_errors.ClientError as exc:
                if not (asked and exc.code == 400 and refuses_logprobs(exc.message or "")):
                    raise
                self._logprobs.refused(model)
                res = await self._generate(model, request, False)
        except Exception as exc:  # genai raises httpx2 errors unwrapped
            raise self._error(exc, model) from None
        meta = res.usage_metadata
        prompt = (meta.prompt_token_count or 0) if meta else 0
        cached = (meta.cached_content_token_count or 0) if meta else 0
        output = (
            ((meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)) if meta else 0
        )
        candidate = res.candidates[0] if res.candidates else None
        finish = candidate.finish_reason if candidate else None
        return LLMResponse(
            text=res.text or "",
            vendor=self.vendor,
            model=res.model_version or model,
            # promptTokenCount includes the cached tokens: split them out to price each.
            usage=Usage(
                input_tokens=max(prompt - cached, 0), output_tokens=output, cache_read_tokens=cached
            ),
            latency_s=time.monotonic() - started,
            finish_reason=str(finish.value if hasattr(finish, "value") else finish)
            if finish
            else None,
            request_id=res.response_id,
            confidence=from_mean_logprob(candidate.avg_logprobs) if candidate else None,
        )

    async def _generate(
        self, model: str, request: LLMRequest, logprobs: bool
    ) -> types.GenerateContentResponse:
        with self._pool.lease() as sdk:
            return await sdk.aio.models.generate_content(
                model=model,
                contents=self._contents(request),
                config=self._config(request, logprobs),
            )

    async def count_tokens(self, request: LLMRequest) -> TokenCount:
        model = request.model or self.default_model
        # Developer-API countTokens refuses a system_instruction config: count it as text.
        texts = [t for t in (request.system, request.context, request.prompt) if t]
        contents = [types.Content(role="user", parts=[types.Part(text=t) for t in texts])]
        try:
            with self._pool.lease() as sdk:
                res = await sdk.aio.models.count_tokens(model=model, contents=contents)
        except Exception as exc:
            raise self._error(exc, model) from None
        return TokenCount(res.total_tokens or 0, estimated=False, method="gemini.countTokens")

    # -- explicit context caches (the mega-shard's) ----------------------------------------
    async def create_cache(
        self,
        *,
        context: str,
        ttl_s: float,
        model: str | None = None,
        system: str | None = None,
        display_name: str | None = None,
    ) -> tuple[str, int]:
        """Store `context` in a cachedContents entry; returns (name, tokens cached)."""
        model = model or self.default_model
        config = types.CreateCachedContentConfig(
            contents=[types.Content(role="user", parts=[types.Part(text=context)])],
            system_instruction=system,
            ttl=f"{int(ttl_s)}s",
            display_name=display_name,
        )
        try:
            with self._pool.lease() as sdk:
                cache = await sdk.aio.caches.create(model=model, config=config)
        except Exception as exc:
            raise self._error(exc, model) from None
        tokens = cache.usage_metadata.total_token_count if cache.usage_metadata else 0
        return cache.name or "", tokens or 0

    async def extend_cache(self, name: str, ttl_s: float) -> None:
        try:
            with self._pool.lease() as sdk:
                await sdk.aio.caches.update(
                    name=name, config=types.UpdateCachedContentConfig(ttl=f"{int(ttl_s)}s")
                )
        except Exception as exc:
            raise self._error(exc, None) from None

    async def delete_cache(self, name: str) -> None:
        try:
            with self._pool.lease() as sdk:
                await sdk.aio.caches.delete(name=name)
        except Exception as exc:
            raise self._error(exc, None) from None

    def _error(self, exc: Exception, model: str | None) -> LLMError:
        if isinstance(exc, LLMError):
            return exc
        if isinstance(exc, httpx2.TimeoutException | TimeoutError):
            return LLMTimeoutError("no answer within the timeout", vendor=self.vendor, model=model)
        if isinstance(exc, httpx2.TransportError | OSError):
            return LLMConnectionError(
                scrub(f"{type(exc).__name__}: {exc}", self._secrets),
                vendor=self.vendor,
                model=model,
            )
        if isinstance(exc, genai_errors.APIError):
            headers = _headers(exc.response)
            return from_status(
                vendor=self.vendor,
                model=model,
                status=int(exc.code or 500),
                message=scrub(exc.message or str(exc), self._secrets),
                headers=headers,
                code=exc.status,
            )
        return from_status(
            vendor=self.vendor,
            model=model,
            status=400,
            message=scrub(f"{type(exc).__name__}: {exc}", self._secrets),
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def _headers(response: Any) -> dict[str, str]:
    headers = getattr(response, "headers", None)
    if headers is None:
        return {}
    return {str(k).lower(): str(v) for k, v in dict(headers).items()}
