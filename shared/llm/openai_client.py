"""OpenAI Chat Completions through the official openai SDK, for four vendors:

* `openai`: OpenAI itself;
* `deepseek`: DeepSeek's OpenAI-compatible API (its cache hit/miss usage fields read);
* `codex`: the code specialist, through the Responses API (codex models take no other):
  a code-generation instruction, answers carry the code;
* `openai-compatible`: any OpenAI-compatible server (vLLM, Ollama, LM Studio, a LiteLLM
  proxy) by base URL and model name: how any other LLM joins the swarm.

With `AdapterOptions.logprobs`, Chat Completions are asked for `logprobs: true` and the
answer's confidence is exp(mean of `choices[0].logprobs.content[i].logprob`). A model that
refuses the parameter with a 400 (OpenAI's reasoning models, deepseek-reasoner, servers
without it) is asked again at once without it, and never again by this client: its
answers carry no confidence. Codex (Responses API, reasoning models) is never asked.
"""

from __future__ import annotations

import re
import time
from typing import Any

import openai

from shared.llm.confidence import LogprobsAsk, from_token_logprobs, refuses_logprobs
from shared.llm.errors import LLMConnectionError, LLMError, LLMTimeoutError
from shared.llm.mapping import from_status, scrub
from shared.llm.pool import AdapterOptions, stainless_pool
from shared.llm.prices import estimate_tokens
from shared.llm.settings import Endpoint
from shared.llm.types import LLMRequest, LLMResponse, TokenCount, Usage

CODE_SYSTEM_PROMPT = (
    "You are an expert software engineer. Answer with working code in one fenced code "
    "block, preceded by at most two sentences of explanation."
)
_FENCE = re.compile(r"```[\w+-]*\n(.*?)```", re.S)


def extract_code(text: str) -> str:
    """The first fenced code block of an answer, or the whole answer if it has none."""
    match = _FENCE.search(text)
    return match.group(1).rstrip("\n") if match else text


class OpenAIChatClient:
    def __init__(self, endpoint: Endpoint, options: AdapterOptions, *, vendor: str) -> None:
        self.vendor = vendor
        self.default_model = options.default_model
        self._timeout_s = options.timeout_s
        self._secrets = (endpoint.api_key,)
        self._logprobs = LogprobsAsk(vendor, enabled=options.logprobs and vendor != "codex")
        self._pool = stainless_pool(
            openai.AsyncOpenAI, endpoint.api_key, endpoint.base_url, options
        )

    def _messages(self, request: LLMRequest) -> list[dict[str, str]]:
        messages = []
        system = request.system or (CODE_SYSTEM_PROMPT if self.vendor == "codex" else None)
        if system:
            messages.append({"role": "system", "content": system})
        # Context first: OpenAI and DeepSeek cache the longest repeated prompt prefix.
        content = f"{request.context}\n\n{request.prompt}" if request.context else request.prompt
        messages.append({"role": "user", "content": content})
        return messages

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if self.vendor == "codex":
            return await self._respond(request)
        model = request.model or self.default_model
        params: dict[str, Any] = {"model": model, "messages": self._messages(request)}
        # OpenAI's newer models take only max_completion_tokens; other servers max_tokens.
        limit_key = "max_completion_tokens" if self.vendor in ("openai", "codex") else "max_tokens"
        params[limit_key] = request.max_output_tokens
        if request.temperature is not None:
            params["temperature"] = request.temperature
        asked = self._logprobs.wanted(model)
        if asked:
            params["logprobs"] = True
        timeout_s = request.timeout_s or self._timeout_s
        started = time.monotonic()
        try:
            try:
                res = await self._chat(params, timeout_s)
            except openai.BadRequestError as exc:
                if not asked or not refuses_logprobs(_message(exc), exc.param):
                    raise
                self._logprobs.refused(model)
                del params["logprobs"]
                res = await self._chat(params, timeout_s)
        except openai.OpenAIError as exc:
            raise self._error(exc, model) from None
        choice = res.choices[0] if res.choices else None
        text = (choice.message.content or "") if choice else ""
        tokens = choice.logprobs.content if choice and choice.logprobs else None
        return LLMResponse(
            text=text,
            vendor=self.vendor,
            model=res.model or model,
            usage=_usage(res.usage),
            latency_s=time.monotonic() - started,
            finish_reason=choice.finish_reason if choice else None,
            request_id=getattr(res, "_request_id", None),
            confidence=from_token_logprobs(t.logprob for t in tokens or ()),
        )

    async def _chat(self, params: dict[str, Any], timeout_s: float) -> Any:
        with self._pool.lease() as sdk:
            return await sdk.chat.completions.create(**params, timeout=timeout_s)

    async def _respond(self, request: LLMRequest) -> LLMResponse:
        model = request.model or self.default_model
        messages = self._messages(request)
        params: dict[str, Any] = {
            "model": model,
            "instructions": messages[0]["content"],
            "input": messages[-1]["content"],
            "max_output_tokens": request.max_output_tokens,
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        started = time.monotonic()
        try:
            with self._pool.lease() as sdk:
                res = await sdk.responses.create(
                    **params, timeout=request.timeout_s or self._timeout_s
                )
        except openai.OpenAIError as exc:
            raise self._error(exc, model) from None
        u = res.usage
        cached = (u.input_tokens_details.cached_tokens or 0) if u else 0
        usage = Usage(
            input_tokens=max((u.input_tokens if u else 0) - cached, 0),
            output_tokens=u.output_tokens if u else 0,
            cache_read_tokens=cached,
        )
        text = res.output_text
        return LLMResponse(
            text=text,
            vendor=self.vendor,
            model=res.model or model,
            usage=usage,
            latency_s=time.monotonic() - started,
            finish_reason=res.status,
            request_id=getattr(res, "_request_id", None),
            extra={"code": extract_code(text)},
        )

    async def count_tokens(self, request: LLMRequest) -> TokenCount:
        # Chat Completions has no counting endpoint (nor has DeepSeek): estimate locally.
        text = "\n".join(m["content"] for m in self._messages(request))
        return TokenCount(estimate_tokens(text), estimated=True, method="estimate:chars/4")

    def _error(self, exc: openai.OpenAIError, model: str) -> LLMError:
        if isinstance(exc, openai.APITimeoutError):
            return LLMTimeoutError("no answer within the timeout", vendor=self.vendor, model=model)
        if isinstance(exc, openai.APIConnectionError):
            return LLMConnectionError(
                scrub(str(exc), self._secrets), vendor=self.vendor, model=model
            )
        if isinstance(exc, openai.APIStatusError):
            message = _message(exc)
            return from_status(
                vendor=self.vendor,
                model=model,
                status=exc.status_code,
                message=scrub(message, self._secrets),
                headers=exc.response.headers,
                code=exc.code,
            )
        return from_status(
            vendor=self.vendor, model=model, status=400, message=scrub(str(exc), self._secrets)
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    return str(body.get("message") or exc.message)


def _usage(u: Any) -> Usage:
    if u is None:
        return Usage()
    prompt = u.prompt_tokens or 0
    details = getattr(u, "prompt_tokens_details", None)
    cached = (getattr(details, "cached_tokens", None) or 0) if details else 0
    written = (getattr(details, "cache_write_tokens", None) or 0) if details else 0
    # DeepSeek reports hits in its own field (and may not fill prompt_tokens_details).
    extra = getattr(u, "model_extra", None) or {}
    cached = max(cached, int(extra.get("prompt_cache_hit_tokens") or 0))
    # prompt_tokens includes cached and written tokens: each is priced at its own rate.
    return Usage(
        input_tokens=max(prompt - cached - written, 0),
        output_tokens=u.completion_tokens or 0,
        cache_read_tokens=cached,
        cache_write_tokens=written,
    )
