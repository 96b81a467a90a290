"""A mega-shard with neither a Gemini nor a Claude key: by default a ConfigError naming both
variables (exit 2); with SWARM_SHARD_UNCONFIGURED=idle (as compose.yaml runs it) it stays
up, says so in its heartbeat and answers every query `failed`, naming the variable, at once
instead of leaving the asker to time out."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from services.megashard.service import run_megashard
from services.megashard.settings import ShardSettings
from shared.bus.context_client import ContextClient, ContextUnavailable
from shared.bus.membership import live_members
from shared.llm.settings import VendorSettings
from shared.protocol import Names
from shared.runtime.config_errors import ConfigError
from shared.runtime.settings import BusSettings, SwarmSettings
from tests.megashard.conftest import Load
from tests.megashard.test_queries import DOCS
from tests.waiting import eventually


@pytest.fixture
def keyless(monkeypatch: pytest.MonkeyPatch) -> VendorSettings:
    for name in (
        *("ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY", "SWARM_SIMULATOR_URL"),
        *("ANTHROPIC_BASE_URL", "GOOGLE_GEMINI_BASE_URL"),
    ):
        monkeypatch.delenv(name, raising=False)
    return VendorSettings(_env_file=None)  # no developer's .env either


def _swarm(redis_url: str, names: Names) -> SwarmSettings:
    return SwarmSettings(
        REDIS_URL=redis_url, SWARM_NAMESPACE=names.namespace, METRICS_PORT=0, CONSUMER_NAME="s-1"
    )


BUS = BusSettings(block_ms=200, heartbeat_interval_s=0.3, heartbeat_ttl_s=1.5, drain_timeout_s=3)


async def test_without_a_key_the_shard_refuses_to_start(
    redis_url: str, names: Names, keyless: VendorSettings
) -> None:
    with pytest.raises(ConfigError) as info:
        await run_megashard(
            asyncio.Event(), _swarm(redis_url, names), BUS, ShardSettings(id="h"), keyless
        )
    [problem] = info.value.problems
    assert problem.variable == "GOOGLE_API_KEY,ANTHROPIC_API_KEY"
    assert "needs GOOGLE_API_KEY or ANTHROPIC_API_KEY" in problem.message


async def test_an_idle_shard_answers_failed_naming_the_variable(
    redis_url: str,
    redis: Redis,
    names: Names,
    load: Load,
    asker: ContextClient,
    keyless: VendorSettings,
) -> None:
    await load("history", DOCS, specialty="history")  # the context is there; the key is not
    stop = asyncio.Event()
    settings = ShardSettings(id="history", unconfigured="idle")
    running = asyncio.create_task(
        run_megashard(stop, _swarm(redis_url, names), BUS, settings, keyless)
    )
    try:

        async def member() -> dict[str, str]:
            found = [m for m in await live_members(redis, names) if m.get("shard_id")]
            return found[0] if found else {}

        m = await eventually(member, timeout=20, what="the shard's heartbeat")
        assert (m["configured"], m["missing"]) == ("false", "GOOGLE_API_KEY,ANTHROPIC_API_KEY")
        started = time.monotonic()
        with pytest.raises(ContextUnavailable, match="vendor gemini needs GOOGLE_API_KEY"):
            await asker.ask("history", "what is our retry policy?", timeout_s=20)
        assert time.monotonic() - started < 10
        assert not running.done()
    finally:
        stop.set()
        assert await asyncio.wait_for(running, 20) == 0
