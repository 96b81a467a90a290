"""Turn a vendor call into dollars and metrics, the same way for every vendor."""

from __future__ import annotations

from shared.llm.errors import LLMError
from shared.llm.prices import PriceTable, price_usage
from shared.llm.types import LLMResponse
from shared.runtime.metrics import Metrics

# OTel gen_ai.provider.name values; vendors without one keep their own name.
PROVIDER = {
    "claude": "anthropic",
    "gemini": "gcp.gemini",
    "openai": "openai",
    "codex": "openai",
    "deepseek": "deepseek",
}
OPERATION = {"claude": "chat", "gemini": "generate_content"}


def account(
    metrics: Metrics, table: PriceTable, response: LLMResponse, requested_model: str | None = None
) -> float | None:
    """Record the call and return its cost: None (and the unpriced counter) when the model
    is not in the price table, never $0."""
    vendor, model, usage = response.vendor, response.model, response.usage
    metrics.llm_requests.labels(vendor, model, "ok").inc()
    metrics.llm_latency.labels(vendor, model).observe(response.latency_s)
    provider, op = PROVIDER.get(vendor, vendor), OPERATION.get(vendor, "chat")
    asked = requested_model or model
    metrics.genai_duration.labels(provider, asked, op, "").observe(response.latency_s)
    # OTel counts cached input as input: billable input is all of the prompt.
    metrics.genai_tokens.labels(provider, asked, op, "input").observe(usage.prompt_tokens)
    metrics.genai_tokens.labels(provider, asked, op, "output").observe(usage.output_tokens)
    for kind, tokens in (
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cache_read", usage.cache_read_tokens),
        ("cache_write", usage.cache_write_tokens),
    ):
        if tokens:
            metrics.llm_tokens.labels(vendor, model, kind).inc(tokens)
    cost = price_usage(table, model, usage)
    if cost is None:
        metrics.llm_unpriced.labels(vendor, model).inc()
    else:
        metrics.llm_cost.labels(vendor, model).inc(cost)
    return cost


def account_error(metrics: Metrics, error: LLMError, elapsed_s: float | None = None) -> None:
    model = error.model or ""
    metrics.llm_requests.labels(error.vendor, model, error.kind).inc()
    if elapsed_s is not None:
        provider = PROVIDER.get(error.vendor, error.vendor)
        op = OPERATION.get(error.vendor, "chat")
        metrics.genai_duration.labels(provider, model, op, error.kind).observe(elapsed_s)
