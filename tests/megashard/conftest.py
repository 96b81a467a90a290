"""Mega-shards on a real Redis against the simulator, started in this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from services.megashard.corpus import Document
from services.megashard.load import load_context
from services.megashard.service import run_megashard
from services.megashard.settings import DEFAULT_SHARD_MODEL, ShardSettings
from services.megashard.store import ContextStore, Manifest
from services.simulator.config import SimulatorConfig
from services.simulator.server import Simulator
from shared.bus import Bus
from shared.bus.context_client import ContextClient
from shared.llm.registry import build_client, price_table
from shared.llm.settings import VendorSettings
from shared.protocol import Names
from shared.runtime.metrics import Metrics
from shared.runtime.settings import BusSettings, SwarmSettings
from shared.runtime.tracing import Tracer

WORDS = [
    *("ledger", "invoice", "supplier", "contract", "payment", "terms", "outage", "incident"),
    *("database", "failover", "latency", "budget", "quarter", "audit", "region", "cluster"),
]


def filler(n_words: int, seed: int = 0) -> str:
    """Deterministic text of about n_words words (~1.5 tokens each in the simulator)."""
    return " ".join(WORDS[(i * 7 + seed) % len(WORDS)] for i in range(n_words))


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    sim = Simulator(SimulatorConfig(seed=5))
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
def vendors(simulator: Simulator) -> VendorSettings:
    return VendorSettings(SWARM_SIMULATOR_URL=simulator.base_url, SWARM_LLM_TIMEOUT_S=20)


Load = Callable[..., Awaitable[Manifest]]


@pytest.fixture
async def load(redis: Redis, names: Names, vendors: VendorSettings) -> Load:
    async def do(
        shard: str,
        documents: list[Document],
        *,
        vendor: str = "gemini",
        model: str | None = None,
        **kwargs: Any,
    ) -> Manifest:
        model = model or DEFAULT_SHARD_MODEL[vendor]
        llm = build_client(vendor, vendors, model)
        try:
            return await load_context(
                ContextStore(redis, names),
                llm,
                price_table(vendors),
                shard=shard,
                documents=documents,
                model=model,
                **kwargs,
            )
        finally:
            await llm.aclose()

    return do


StartShard = Callable[..., Awaitable[asyncio.Task[int]]]
STOPS: dict[asyncio.Task[int], asyncio.Event] = {}


async def stop_shard(task: asyncio.Task[int]) -> int:
    """Stop a shard started by `start_shard` as SIGTERM would: drain, then leave."""
    STOPS[task].set()
    return await asyncio.wait_for(task, 20)


@pytest.fixture
async def start_shard(
    redis_url: str, names: Names, vendors: VendorSettings
) -> AsyncIterator[StartShard]:
    running: list[tuple[asyncio.Event, asyncio.Task[int]]] = []

    async def start(
        shard: str,
        *,
        visibility_timeout_s: float = 30,
        tracer: Tracer | None = None,
        **settings: Any,
    ) -> asyncio.Task[int]:
        stop = asyncio.Event()
        swarm = SwarmSettings(
            REDIS_URL=redis_url,
            SWARM_NAMESPACE=names.namespace,
            METRICS_PORT=0,
            CONSUMER_NAME=f"shard-{shard}-{len(running)}",
        )
        bus = BusSettings(
            block_ms=200,
            reclaim_interval_s=0.3,
            heartbeat_interval_s=0.3,
            heartbeat_ttl_s=1.5,
            drain_timeout_s=3,
            visibility_timeout_s=visibility_timeout_s,
        )
        shard_settings = ShardSettings(id=shard, backoff_base_s=0.05, **settings)
        task = asyncio.create_task(
            run_megashard(stop, swarm, bus, shard_settings, vendors, tracer=tracer)
        )
        running.append((stop, task))
        STOPS[task] = stop
        return task

    yield start
    for stop, _ in running:
        stop.set()
    for _, task in running:
        if not task.done():
            await asyncio.wait_for(task, 20)
        STOPS.pop(task, None)


@pytest.fixture
async def asker(redis: Redis, names: Names) -> AsyncIterator[ContextClient]:
    bus = Bus(redis, names, BusSettings(block_ms=200), Metrics.create())
    async with ContextClient(bus, requester_id="tester-1") as client:
        yield client
