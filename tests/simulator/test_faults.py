"""Injected faults and latency, as each real SDK sees them."""

from __future__ import annotations

import time

import anthropic
import httpx2
import openai
import pytest
from google import genai
from google.genai import errors, types

from services.simulator.config import FaultRates, Latency, Overrides, SimulatorConfig
from services.simulator.server import Simulator
from tests.waiting import eventually

CLAUDE = "claude-sonnet-4-6"
GPT = "gpt-4o-mini"
GEMINI = "gemini-2.5-flash"


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def _claude(client: anthropic.AsyncAnthropic, text: str) -> anthropic.types.Message:
    return await client.messages.create(model=CLAUDE, max_tokens=32, messages=_user(text))


async def _gpt(client: openai.AsyncOpenAI, text: str) -> object:
    return await client.chat.completions.create(model=GPT, messages=_user(text))


# -- Anthropic


async def test_anthropic_429_is_rate_limit_with_retry_after(
    claude: anthropic.AsyncAnthropic,
) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        await _claude(claude, "Busy? [[sim:429]]")
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.type == "rate_limit_error"
    assert caught.value.request_id and caught.value.request_id.startswith("req_")


@pytest.mark.parametrize(
    ("marker", "error", "status", "kind"),
    [
        ("[[sim:500]]", anthropic.InternalServerError, 500, "api_error"),
        ("[[sim:503]]", anthropic.ServiceUnavailableError, 503, "api_error"),
        ("[[sim:529]]", anthropic.OverloadedError, 529, "overloaded_error"),
    ],
)
async def test_anthropic_server_errors(
    claude: anthropic.AsyncAnthropic,
    marker: str,
    error: type[anthropic.APIStatusError],
    status: int,
    kind: str,
) -> None:
    with pytest.raises(error) as caught:
        await _claude(claude, f"Trouble {marker}")
    assert isinstance(caught.value, anthropic.InternalServerError)
    assert caught.value.status_code == status
    assert caught.value.type == kind


async def test_anthropic_context_marker(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await _claude(claude, "Too much [[sim:context]]")
    assert caught.value.type == "invalid_request_error"
    assert (caught.value.api_message or "").startswith("prompt is too long: ")
    assert (caught.value.api_message or "").endswith(" tokens > 200000 maximum")


async def test_anthropic_quota_marker(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        await _claude(claude, "Broke [[sim:quota]]")
    assert isinstance(caught.value, anthropic.EnforcedSpendLimitReachedError)
    assert "retry-after" not in caught.value.response.headers


async def test_anthropic_timeout(sim: Simulator) -> None:
    client = anthropic.AsyncAnthropic(
        api_key="k", base_url=f"{sim.base_url}/anthropic", max_retries=0, timeout=0.5
    )
    try:
        with pytest.raises(anthropic.APITimeoutError):
            await _claude(client, "Hang [[sim:timeout]]")
    finally:
        await client.close()


async def test_a_stream_gets_the_error_status_before_any_event(
    claude: anthropic.AsyncAnthropic,
) -> None:
    events = []
    with pytest.raises(anthropic.RateLimitError):
        async with claude.messages.stream(
            model=CLAUDE, max_tokens=32, messages=_user("[[sim:429]]")
        ) as stream:
            events = [event async for event in stream]
    assert events == []


# -- OpenAI


async def test_openai_429_is_rate_limit_with_both_retry_headers(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await _gpt(oai, "Busy? [[sim:429]]")
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.response.headers["retry-after-ms"] == "1000"
    assert caught.value.request_id and caught.value.request_id.startswith("req_")


async def test_openai_insufficient_quota(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await _gpt(oai, "Broke [[sim:quota]]")
    assert caught.value.code == "insufficient_quota"
    assert caught.value.type == "insufficient_quota"


@pytest.mark.parametrize(
    ("marker", "status"), [("[[sim:500]]", 500), ("[[sim:503]]", 503), ("[[sim:529]]", 503)]
)
async def test_openai_server_errors(oai: openai.AsyncOpenAI, marker: str, status: int) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        await _gpt(oai, f"Trouble {marker}")
    assert caught.value.status_code == status
    assert caught.value.type == "server_error"


async def test_openai_context_marker(deepseek: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await deepseek.chat.completions.create(
            model="deepseek-chat",
            messages=_user("Too much [[sim:context]]"),
        )
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "messages"
    assert "maximum context length is 128000 tokens" in caught.value.message


async def test_openai_timeout(sim: Simulator) -> None:
    client = openai.AsyncOpenAI(
        api_key="k", base_url=f"{sim.base_url}/openai/v1", max_retries=0, timeout=0.5
    )
    try:
        with pytest.raises(openai.APITimeoutError):
            await _gpt(client, "Hang [[sim:timeout]]")
    finally:
        await client.close()


# -- Gemini


@pytest.mark.parametrize(
    ("marker", "error", "status", "grpc"),
    [
        ("[[sim:429]]", errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
        ("[[sim:500]]", errors.ServerError, 500, "INTERNAL"),
        ("[[sim:503]]", errors.ServerError, 503, "UNAVAILABLE"),
        ("[[sim:529]]", errors.ServerError, 503, "UNAVAILABLE"),
        ("[[sim:context]]", errors.ClientError, 400, "INVALID_ARGUMENT"),
    ],
)
async def test_gemini_errors(
    gemini: genai.Client, marker: str, error: type[errors.APIError], status: int, grpc: str
) -> None:
    with pytest.raises(error) as caught:
        await gemini.aio.models.generate_content(model=GEMINI, contents=f"Trouble {marker}")
    assert caught.value.code == status
    assert caught.value.status == grpc
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "1"
        assert "quota" not in (caught.value.message or "")  # a rate limit, not a quota
    if status == 400:
        assert "exceeds the maximum number of tokens allowed (1048576)" in (
            caught.value.message or ""
        )


async def test_gemini_timeout(sim: Simulator) -> None:
    http = httpx2.AsyncClient()
    client = genai.Client(
        api_key="test",
        http_options=types.HttpOptions(
            base_url=f"{sim.base_url}/gemini", timeout=500, httpx_async_client=http
        ),
    )
    try:
        with pytest.raises(httpx2.TimeoutException):  # google-genai does not wrap it
            await client.aio.models.generate_content(model=GEMINI, contents="[[sim:timeout]]")
    finally:
        await client.aio.aclose()
        await http.aclose()


# -- the server side of a timeout, latency, rates


async def test_a_client_that_gives_up_frees_the_hung_request(sim: Simulator) -> None:
    async with httpx2.AsyncClient(timeout=0.3) as http:
        with pytest.raises(httpx2.ReadTimeout):
            await http.post(
                f"{sim.base_url}/openai/v1/chat/completions",
                headers={"authorization": "Bearer k"},
                json={"model": GPT, "messages": _user("[[sim:timeout]]")},
            )

    async def released() -> bool:
        return sim.stats()["in_flight"] == 0

    await eventually(released, timeout=5, what="the hung request to be released")
    stats = sim.stats()
    assert stats["in_flight"] == 0
    assert stats["by_status"] == {"client_closed": 1}
    assert stats["faults"] == {"timeout": 1}


@pytest.mark.parametrize(
    "sim_config",
    [SimulatorConfig(defaults={"timeout_hang_s": 0.2})],
)
async def test_after_the_hang_the_connection_closes_unanswered(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIConnectionError) as caught:
        await _gpt(oai, "[[sim:timeout]]")
    assert not isinstance(caught.value, openai.APITimeoutError)


async def test_latency_marker_delays_every_vendor(
    claude: anthropic.AsyncAnthropic, oai: openai.AsyncOpenAI, gemini: genai.Client
) -> None:
    started = time.monotonic()
    await _claude(claude, "Slow [[sim:latency=0.3]]")
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    stream = await oai.chat.completions.create(
        model=GPT,
        messages=_user("Slow [[sim:latency=0.3]]"),
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text and time.monotonic() - started >= 0.3
    started = time.monotonic()
    await gemini.aio.models.generate_content(model=GEMINI, contents="Slow [[sim:latency=0.3]]")
    assert time.monotonic() - started >= 0.3


async def test_latency_marker_also_delays_an_injected_error(oai: openai.AsyncOpenAI) -> None:
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError):
        await _gpt(oai, "[[sim:latency=0.3]] [[sim:429]]")
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize(
    "sim_config",
    [
        SimulatorConfig(
            models={
                "gpt-slow": Overrides(latency=Latency(kind="fixed", mean_s=0.3)),
                "claude-slow": Overrides(latency=Latency(kind="uniform", low_s=0.3, high_s=0.4)),
            }
        )
    ],
)
async def test_configured_latency_applies_per_model(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    started = time.monotonic()
    await oai.chat.completions.create(model="gpt-slow", messages=_user("hi"))
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    await claude.messages.create(model="claude-slow", max_tokens=8, messages=_user("hi"))
    assert time.monotonic() - started >= 0.3


async def _statuses(sim: Simulator, n: int) -> list[int]:
    async with httpx2.AsyncClient() as http:
        out = []
        for i in range(n):
            resp = await http.post(
                f"{sim.base_url}/openai/v1/chat/completions",
                headers={"authorization": "Bearer k"},
                json={"model": GPT, "messages": _user(f"question {i}")},
            )
            out.append(resp.status_code)
    return out


async def test_error_rate_is_spread_and_replays_with_the_seed() -> None:
    config = SimulatorConfig(seed=11).with_overrides(error_rate=0.5)
    runs = []
    for _ in range(2):
        async with Simulator(config) as sim:
            runs.append(await _statuses(sim, 200))
    assert runs[0] == runs[1]  # same seed, same outcomes
    assert set(runs[0]) == {200, 429, 500, 503}
    assert 60 <= sum(s != 200 for s in runs[0]) <= 140
    assert runs[0].count(429) > runs[0].count(500)

    async with Simulator(SimulatorConfig(seed=12).with_overrides(error_rate=0.5)) as sim:
        assert await _statuses(sim, 200) != runs[0]


@pytest.mark.parametrize(
    "sim_config",
    [SimulatorConfig(vendors={"anthropic": Overrides(faults=FaultRates(rate_529=1.0))})],
)
async def test_rates_are_per_vendor(
    claude: anthropic.AsyncAnthropic, oai: openai.AsyncOpenAI
) -> None:
    with pytest.raises(anthropic.OverloadedError):
        await _claude(claude, "hi")
    assert await _gpt(oai, "hi") is not None
