"""A vendor call as an OpenTelemetry GenAI client span, with the semantic conventions'
attributes.

Names as the conventions give them (`gen_ai.*`); no prompt or answer text, which the
conventions leave opt-in and which may be confidential.
"""

from __future__ import annotations

from shared.llm.base import LLMClient
from shared.llm.errors import LLMError
from shared.llm.types import LLMRequest, LLMResponse
from shared.protocol.tracecontext import TraceContext
from shared.runtime.tracing import Tracer

# swarm vendor -> `gen_ai.provider.name` (the conventions' well-known values).
PROVIDERS = {
    "claude": "anthropic",
    "gemini": "gcp.gemini",
    "openai": "openai",
    "codex": "openai",
    "deepseek": "deepseek",
}


def genai_request(vendor: str, request: LLMRequest) -> dict[str, str | int | float | None]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDERS.get(vendor, vendor),
        "gen_ai.request.model": request.model,
        "gen_ai.request.max_tokens": request.max_output_tokens,
        "gen_ai.request.temperature": request.temperature,
        "swarm.vendor": vendor,
    }


def genai_response(
    response: LLMResponse,
) -> dict[str, str | int | float | tuple[str, ...] | None]:
    usage = response.usage
    return {
        "gen_ai.response.model": response.model,
        "gen_ai.response.id": response.request_id,
        "gen_ai.response.finish_reasons": (
            (response.finish_reason,) if response.finish_reason else None
        ),
        # The conventions count cached input inside input_tokens, and apart as well.
        "gen_ai.usage.input_tokens": (
            usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
        ),
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
        "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
    }


async def traced_complete(
    tracer: Tracer,
    llm: LLMClient,
    vendor: str,
    request: LLMRequest,
    parent: TraceContext | None,
    *,
    task_id: str | None = None,
) -> LLMResponse:
    """`llm.complete(request)`, as a GenAI client span under `parent` when there is one
    and spans are exported (nothing is handed on from this span, so without an exporter
    it would be attributes computed for no one)."""
    if parent is None or not tracer.exporting:
        return await llm.complete(request)
    name = f"chat {request.model or llm.default_model}"
    attributes = {**genai_request(vendor, request), "swarm.task_id": task_id}
    with tracer.span(name, parent, kind="client", attributes=attributes) as span:
        try:
            response = await llm.complete(request)
        except LLMError as exc:
            span.fail(exc.kind, str(exc))
            raise
        span.set(genai_response(response))
        return response
