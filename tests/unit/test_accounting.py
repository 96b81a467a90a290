"""Cost and metrics from a vendor call: priced models cost money, unknown ones are unpriced."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from shared.llm.accounting import account, account_error
from shared.llm.errors import RateLimitedError
from shared.llm.prices import PriceTable, price_usage
from shared.llm.types import LLMResponse, Usage
from shared.runtime.metrics import Metrics

TABLE = PriceTable.load()


def _sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_priced_call_is_costed_and_counted() -> None:
    metrics = Metrics.create(CollectorRegistry())
    model = TABLE.default_model("claude")
    usage = Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=5000)
    res = LLMResponse(text="ok", vendor="claude", model=model, usage=usage, latency_s=0.4)
    cost = account(metrics, TABLE, res)
    assert cost is not None and cost == price_usage(TABLE, model, usage) and cost > 0
    labels = {"vendor": "claude", "model": model}
    assert _sample(metrics, "swarm_llm_cost_usd_total", labels) == cost
    assert _sample(metrics, "swarm_llm_tokens_total", {**labels, "kind": "cache_read"}) == 5000
    assert _sample(metrics, "swarm_llm_requests_total", {**labels, "outcome": "ok"}) == 1


def test_an_unknown_model_is_unpriced_not_free() -> None:
    metrics = Metrics.create(CollectorRegistry())
    res = LLMResponse(
        text="ok",
        vendor="openai-compatible",
        model="my-llama-70b",
        usage=Usage(input_tokens=10, output_tokens=5),
        latency_s=0.1,
    )
    assert account(metrics, TABLE, res) is None
    labels = {"vendor": "openai-compatible", "model": "my-llama-70b"}
    assert _sample(metrics, "swarm_llm_unpriced_requests_total", labels) == 1
    assert _sample(metrics, "swarm_llm_cost_usd_total", labels) is None


def test_errors_are_counted_by_kind() -> None:
    metrics = Metrics.create(CollectorRegistry())
    account_error(metrics, RateLimitedError("slow down", vendor="gemini", model="m", status=429))
    labels = {"vendor": "gemini", "model": "m", "outcome": "rate_limited"}
    assert _sample(metrics, "swarm_llm_requests_total", labels) == 1
