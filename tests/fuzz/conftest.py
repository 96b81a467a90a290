"""One long-lived service per fuzz test, started in this process on the real Redis: the
dispatcher, a worker (against the in-process simulator), the collector, a mega-shard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.collector.service import run_collector
from services.collector.settings import CollectorSettings
from services.dispatcher.service import run_dispatcher
from services.dispatcher.settings import DispatcherSettings
from services.megashard.corpus import Document
from services.megashard.load import load_context
from services.megashard.service import run_megashard
from services.megashard.settings import DEFAULT_SHARD_MODEL, ShardSettings
from services.megashard.store import ContextStore
from services.simulator.config import SimulatorConfig
from services.simulator.server import Simulator
from services.worker.service import run_worker
from services.worker.settings import WorkerSettings
from shared.llm.registry import build_client, price_table
from shared.llm.settings import VendorSettings
from shared.protocol import Names
from shared.runtime.metrics import Metrics
from shared.runtime.settings import BusSettings, SwarmSettings

WORKER_VENDOR = "deepseek"
SHARD = "fuzz-shard"


@dataclass
class Running:
    """A service running in this process: `task` must still be running after any input."""

    task: asyncio.Task[int]
    stop: asyncio.Event

    def alive(self) -> None:
        if self.task.done():
            exc = None if self.task.cancelled() else self.task.exception()
            raise AssertionError(f"the service stopped on its own: {exc!r}")


def _swarm(redis_url: str, names: Names, consumer: str) -> SwarmSettings:
    return SwarmSettings(
        REDIS_URL=redis_url, SWARM_NAMESPACE=names.namespace, METRICS_PORT=0, CONSUMER_NAME=consumer
    )


def _bus() -> BusSettings:
    # A short block keeps each batch quick; the visibility timeout stays long, so an entry
    # a handler failed on stays pending (and the test sees it) instead of being retried.
    return BusSettings(
        block_ms=100, heartbeat_interval_s=0.3, heartbeat_ttl_s=1.5, drain_timeout_s=5
    )


async def _running(coro: Coroutine[Any, Any, int], stop: asyncio.Event) -> AsyncIterator[Running]:
    running = Running(asyncio.create_task(coro), stop)
    yield running
    running.alive()
    stop.set()
    assert await asyncio.wait_for(running.task, 30) == 0, "the service must exit cleanly"


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    sim = Simulator(SimulatorConfig(seed=11))
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
def vendors(simulator: Simulator) -> VendorSettings:
    return VendorSettings(SWARM_SIMULATOR_URL=simulator.base_url, SWARM_LLM_TIMEOUT_S=20)


@pytest.fixture
async def dispatcher(redis_url: str, names: Names) -> AsyncIterator[Running]:
    stop = asyncio.Event()
    coro = run_dispatcher(
        stop,
        _swarm(redis_url, names, "dispatcher-fuzz"),
        _bus(),
        # No workers here on purpose: routed tasks go to the cheapest model at once.
        DispatcherSettings(fleet_refresh_s=0.2, cold_start_wait_s=0),
        VendorSettings(),
    )
    async for running in _running(coro, stop):
        yield running


@pytest.fixture
async def worker(redis_url: str, names: Names, vendors: VendorSettings) -> AsyncIterator[Running]:
    stop = asyncio.Event()
    settings = WorkerSettings(vendor=WORKER_VENDOR, backoff_base_s=0.05, backoff_max_s=0.2)
    coro = run_worker(
        stop, _swarm(redis_url, names, f"worker-{WORKER_VENDOR}-fuzz"), _bus(), settings, vendors
    )
    async for running in _running(coro, stop):
        yield running


@pytest.fixture
async def collector(redis_url: str, names: Names, tmp_path: Path) -> AsyncIterator[Running]:
    stop = asyncio.Event()
    settings = CollectorSettings(export_path=str(tmp_path / "findings.jsonl"))
    coro = run_collector(
        stop,
        _swarm(redis_url, names, "collector-fuzz"),
        _bus(),
        settings,
        metrics=Metrics.create(),
    )
    async for running in _running(coro, stop):
        yield running


@pytest.fixture
async def shard(
    redis_url: str, redis: Redis, names: Names, vendors: VendorSettings
) -> AsyncIterator[Running]:
    model = DEFAULT_SHARD_MODEL["gemini"]
    llm = build_client("gemini", vendors, model)
    try:
        await load_context(
            ContextStore(redis, names),
            llm,
            price_table(vendors),
            shard=SHARD,
            documents=[Document("retries.md", "Retry 429s with exponential backoff. " * 50)],
            model=model,
        )
    finally:
        await llm.aclose()
    stop = asyncio.Event()
    coro = run_megashard(
        stop,
        _swarm(redis_url, names, "shard-fuzz"),
        _bus(),
        ShardSettings(id=SHARD, backoff_base_s=0.05),
        vendors,
    )
    async for running in _running(coro, stop):
        yield running
