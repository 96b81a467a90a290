"""Turn a vendor call into dollars and metrics, the same way for every vendor."""

from __future__ import annotations

from shared.llm.errors import LLMError
from shared.llm.prices import PriceTable, price_usage
from shared.llm.types import LLMResponse
from shared.runtime.metrics import Metrics


def account(metrics: Metrics, table: PriceTable, response: LLMResponse) -> float | None:
    """Record the call and return its cost: None (and the unpriced counter) when the model
    is not in the price table, never $0."""
    vendor, model, usage = response.vendor, response.model, response.usage
    metrics.llm_requests.labels(vendor, model, "ok").inc()
    metrics.llm_latency.labels(vendor, model).observe(response.latency_s)
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


def account_error(metrics: Metrics, error: LLMError) -> None:
    metrics.llm_requests.labels(error.vendor, error.model or "", error.kind).inc()
