"""A simulator per test, on a free loopback port, and the real async SDK clients on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx2
import openai
import pytest
from google import genai
from google.genai import types

from services.simulator.config import SimulatorConfig
from services.simulator.server import Simulator

LONG = "The quick brown fox jumps over the lazy dog. " * 200  # 9000 chars = 2250 tokens
USER = [{"role": "user", "content": "Summarise the supplier payment terms for 2021."}]


@pytest.fixture(autouse=True)
def _clean_sdk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment the SDKs read on their own; none of it may steer these tests."""
    for name in (
        "ANTHROPIC_CUSTOM_HEADERS",
        "OPENAI_CUSTOM_HEADERS",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_GENAI_USE_ENTERPRISE",
        "GOOGLE_GENAI_API_VERSION",
        "GOOGLE_GENAI_HTTP_CLIENT",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def sim_config() -> SimulatorConfig:
    return SimulatorConfig()


@pytest.fixture
async def sim(sim_config: SimulatorConfig) -> AsyncIterator[Simulator]:
    async with Simulator(sim_config) as simulator:
        yield simulator


@pytest.fixture
async def claude(sim: Simulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(
        api_key="sk-test", base_url=f"{sim.base_url}/anthropic", max_retries=0
    )
    yield client
    await client.close()


async def _openai(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=base_url, max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def oai(sim: Simulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async for client in _openai(f"{sim.base_url}/openai/v1"):
        yield client


@pytest.fixture
async def deepseek(sim: Simulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async for client in _openai(f"{sim.base_url}/deepseek/v1"):
        yield client


@pytest.fixture
async def compat(sim: Simulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async for client in _openai(f"{sim.base_url}/compat/v1"):
        yield client


@pytest.fixture
async def gemini(sim: Simulator) -> AsyncIterator[genai.Client]:
    # Our own httpx2 client pins the transport (aiohttp, if ever installed, would change
    # google-genai's exceptions and retries).
    http = httpx2.AsyncClient()
    client = genai.Client(
        api_key="test",
        http_options=types.HttpOptions(base_url=f"{sim.base_url}/gemini", httpx_async_client=http),
    )
    yield client
    await client.aio.aclose()
    await http.aclose()
