"""The contract every vendor adapter keeps, checked through its real SDK over real HTTP
against the simulator (in-process and as `swarm run simulator`)."""

from __future__ import annotations

import io
import json
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import redirect_stdout

import pytest
import structlog

from services.simulator.config import Overrides, SimulatorConfig
from services.simulator.server import Simulator
from shared.llm.base import LLMClient
from shared.llm.errors import (
    ContextTooLongError,
    LLMTimeoutError,
    OverloadedError,
    RateLimitedError,
    RetryableLLMError,
)
from shared.llm.gemini_client import GeminiClient
from shared.llm.prices import PriceTable, price_usage
from shared.llm.registry import build_client
from shared.llm.settings import MissingCredentialsError, VendorSettings
from shared.llm.types import LLMRequest
from shared.runtime.logging import configure_logging
from tests.simulator.wire import sent_mean_logprob

VENDORS = ["claude", "gemini", "openai", "deepseek", "codex", "openai-compatible"]
PRICES = PriceTable.load()
KEY = f"sk-contract-{uuid.uuid4().hex}"
KEY_ENV = {
    "claude": "ANTHROPIC_API_KEY",
    "gemini": "GOOGLE_API_KEY",
    "openai": "OPENAI_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "codex": "OPENAI_API_KEY",
    "openai-compatible": "OPENAI_COMPATIBLE_API_KEY",
}
LONG_CONTEXT = " ".join(f"record {i}: supplier terms net-{30 + i % 60} days." for i in range(900))


def _default_model(vendor: str) -> str:
    return PRICES.default_model(vendor) if vendor != "openai-compatible" else "local-model"


@pytest.fixture(params=VENDORS)
async def client(request: pytest.FixtureRequest, simulator_url: str) -> AsyncIterator[LLMClient]:
    vendor = request.param
    settings = VendorSettings(SWARM_SIMULATOR_URL=simulator_url, **{KEY_ENV[vendor]: KEY})
    c = build_client(vendor, settings, _default_model(vendor))
    try:
        yield c
    finally:
        await c.aclose()


async def test_complete_returns_text_usage_and_a_cost(client: LLMClient) -> None:
    req = LLMRequest(prompt="Summarise supplier payment terms for 2021.", max_output_tokens=64)
    first = await client.complete(req)
    again = await client.complete(req)
    assert first.text and first.text == again.text  # deterministic for the same request
    assert first.vendor == client.vendor
    assert first.usage.input_tokens > 0
    assert 0 < first.usage.output_tokens <= 64
    assert first.latency_s > 0
    cost = price_usage(PRICES, first.model, first.usage)
    if client.vendor == "openai-compatible":
        assert cost is None  # a local model is unpriced, never $0
    else:
        assert cost is not None and cost > 0


async def test_code_specialist_returns_code(client: LLMClient) -> None:
    res = await client.complete(LLMRequest(prompt="Write a function that adds two numbers."))
    if client.vendor == "codex":
        assert res.extra.get("code")
    else:
        assert "code" not in res.extra


async def test_cached_context_is_read_from_cache_and_priced_lower(client: LLMClient) -> None:
    if isinstance(client, GeminiClient):
        name, cached_tokens = await client.create_cache(context=LONG_CONTEXT, ttl_s=300)
        try:
            res = await client.complete(LLMRequest(prompt="Which terms?", cached_content=name))
            await client.extend_cache(name, 600)
        finally:
            await client.delete_cache(name)
        assert res.usage.cache_read_tokens == cached_tokens > 0
    else:
        req = LLMRequest(prompt="Which supplier has net-45?", context=LONG_CONTEXT)
        first = await client.complete(req)
        res = await client.complete(LLMRequest(prompt="And net-60?", context=LONG_CONTEXT))
        if client.vendor == "claude":
            assert first.usage.cache_write_tokens > 0
        assert res.usage.cache_read_tokens > 0
        assert res.usage.input_tokens < first.usage.prompt_tokens
    if client.vendor != "openai-compatible":
        price = PRICES.get(res.model)
        assert price is not None
        full = price_usage(
            PRICES,
            res.model,
            type(res.usage)(
                input_tokens=res.usage.prompt_tokens, output_tokens=res.usage.output_tokens
            ),
        )
        cached = price_usage(PRICES, res.model, res.usage)
        assert cached is not None and full is not None and cached < full


async def test_count_tokens_matches_what_the_call_reports(client: LLMClient) -> None:
    req = LLMRequest(
        prompt="Count me, please: supplier terms.", system="Be brief.", cache_context=False
    )
    counted = await client.count_tokens(req)
    used = await client.complete(req)
    if client.vendor in ("claude", "gemini"):
        assert not counted.estimated
        assert counted.tokens == used.usage.prompt_tokens
    else:
        assert counted.estimated and counted.method.startswith("estimate")
        assert counted.tokens > 0


@pytest.mark.parametrize(
    ("marker", "error", "status"),
    [
        ("[[sim:429]]", RateLimitedError, 429),
        ("[[sim:500]]", OverloadedError, 500),
        ("[[sim:503]]", OverloadedError, 503),
        ("[[sim:context]]", ContextTooLongError, 400),
    ],
)
async def test_vendor_errors_map_to_our_tree(
    client: LLMClient, marker: str, error: type[Exception], status: int
) -> None:
    with pytest.raises(error) as caught:
        await client.complete(LLMRequest(prompt=f"Trouble ahead {marker}"))
    exc = caught.value
    assert exc.vendor == client.vendor  # type: ignore[attr-defined]
    assert exc.status == status  # type: ignore[attr-defined]
    if error is RateLimitedError:
        assert exc.retry_after == pytest.approx(1.0)  # type: ignore[attr-defined]
    assert isinstance(exc, RetryableLLMError) == (error is not ContextTooLongError)


async def test_anthropic_overloaded_529_is_retryable(simulator_url: str) -> None:
    settings = VendorSettings(SWARM_SIMULATOR_URL=simulator_url)
    claude = build_client("claude", settings, _default_model("claude"))
    try:
        with pytest.raises(OverloadedError) as caught:
            await claude.complete(LLMRequest(prompt="Busy [[sim:529]]"))
    finally:
        await claude.aclose()
    assert caught.value.status == 529
    assert caught.value.retryable


@pytest.mark.parametrize("vendor", ["claude", "gemini", "openai", "deepseek"])
def test_a_missing_key_is_a_clear_error_naming_the_variable(
    vendor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*KEY_ENV.values(), "GEMINI_API_KEY", "SWARM_SIMULATOR_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(MissingCredentialsError, match=KEY_ENV[vendor]):
        build_client(vendor, VendorSettings(_env_file=None), _default_model(vendor))


async def test_a_prompt_beyond_the_window_is_context_too_long(client: LLMClient) -> None:
    huge = "word " * 1_200_000  # about 1.5M simulated tokens: over every default window
    with pytest.raises(ContextTooLongError):
        await client.complete(LLMRequest(prompt=huge, max_output_tokens=16))


async def test_every_call_has_a_timeout(client: LLMClient) -> None:
    with pytest.raises(LLMTimeoutError):
        await client.complete(LLMRequest(prompt="Hang [[sim:timeout]]", timeout_s=0.5))


async def test_the_key_never_shows_in_errors_or_logs(client: LLMClient) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        configure_logging("debug", json=True)
        log = structlog.get_logger("contract")
        for marker in ("[[sim:429]]", "[[sim:context]]", "[[sim:timeout]]"):
            try:
                await client.complete(LLMRequest(prompt=f"x {marker}", timeout_s=0.5))
            except Exception as exc:  # every outcome is logged, as a worker would
                assert KEY not in str(exc) and KEY not in repr(exc)
                log.warning("vendor.failed", error=str(exc), kind=type(exc).__name__)
        res = await client.complete(LLMRequest(prompt="fine"))
        log.info("vendor.ok", text=res.text, model=res.model)
    text = out.getvalue()
    assert text.count("vendor.") == 4
    assert KEY not in text
    assert KEY not in repr(client)
    for line in text.splitlines():
        json.loads(line)


# -- confidence: exp(mean token logprob) of what the vendor sent, or None


async def test_confidence_is_exp_mean_logprob_of_what_the_vendor_sent(
    client: LLMClient, simulator_url: str
) -> None:
    prompt = "Summarise the supplier payment terms for 2021."
    res = await client.complete(LLMRequest(prompt=prompt, max_output_tokens=64))
    sent = await sent_mean_logprob(simulator_url, client.vendor, res.model, prompt, 64)
    if client.vendor in ("claude", "codex"):
        assert sent is None and res.confidence is None  # none to give: never a guess
    else:
        assert sent is not None and sent < 0
        assert res.confidence == pytest.approx(math.exp(sent), rel=1e-9)
        assert 0 < res.confidence < 1


@pytest.mark.parametrize(
    ("vendor", "sim_vendor"),
    [
        ("openai", "openai"),
        ("deepseek", "deepseek"),
        ("openai-compatible", "compat"),
        ("gemini", "gemini"),
    ],
)
async def test_a_model_refusing_logprobs_still_answers_and_is_asked_once(
    vendor: str, sim_vendor: str
) -> None:
    config = SimulatorConfig(vendors={sim_vendor: Overrides(logprobs=False)})
    async with Simulator(config) as sim:
        settings = VendorSettings(SWARM_SIMULATOR_URL=sim.base_url, **{KEY_ENV[vendor]: KEY})
        c = build_client(vendor, settings, _default_model(vendor))
        try:
            first = await c.complete(LLMRequest(prompt="Which terms?", max_output_tokens=32))
            again = await c.complete(LLMRequest(prompt="Which terms?", max_output_tokens=32))
        finally:
            await c.aclose()
        statuses = sim.stats()["by_status"]
    assert first.text and first.text == again.text
    assert first.confidence is None and again.confidence is None
    assert statuses == {"400": 1, "200": 2}  # refused once, then never asked again


async def test_logprobs_can_be_turned_off_and_only_for_vendors_that_have_them() -> None:
    async with Simulator() as sim:
        settings = VendorSettings(
            SWARM_SIMULATOR_URL=sim.base_url, SWARM_LLM_LOGPROBS="none", OPENAI_API_KEY=KEY
        )
        c = build_client("openai", settings, _default_model("openai"))
        try:
            res = await c.complete(LLMRequest(prompt="Which terms?", max_output_tokens=32))
        finally:
            await c.aclose()
    assert res.text and res.confidence is None
    assert VendorSettings(SWARM_LLM_LOGPROBS="gemini, deepseek").wants_logprobs("deepseek")
    with pytest.raises(ValueError, match="claude cannot be asked for logprobs"):
        VendorSettings(SWARM_LLM_LOGPROBS="openai,claude")
