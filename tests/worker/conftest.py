"""A worker on a real Redis against the simulator, started in this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from services.simulator.config import SimulatorConfig
from services.simulator.server import Simulator
from services.worker.service import run_worker
from services.worker.settings import WorkerSettings
from shared.llm.settings import VendorSettings
from shared.protocol import Finding, Names, Task, decode, encode
from shared.runtime.settings import BusSettings, SwarmSettings
from tests.waiting import eventually


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    sim = Simulator(SimulatorConfig(seed=3))
    await sim.start()
    yield sim
    await sim.stop()


def sim_calls(sim: Simulator) -> int:
    """Generation and counting calls the simulator has answered (any status)."""
    return int(sim.stats()["total"])


StartWorker = Callable[..., Awaitable[asyncio.Task[int]]]


@pytest.fixture
async def start_worker(
    redis_url: str, names: Names, simulator: Simulator
) -> AsyncIterator[StartWorker]:
    stops: list[tuple[asyncio.Event, asyncio.Task[int]]] = []

    async def start(
        vendor: str,
        sim: Simulator | None = None,
        llm_timeout_s: float = 10,
        max_in_flight: int = 256,
        **worker: Any,
    ) -> asyncio.Task[int]:
        stop = asyncio.Event()
        swarm = SwarmSettings(
            REDIS_URL=redis_url,
            SWARM_NAMESPACE=names.namespace,
            METRICS_PORT=0,
            CONSUMER_NAME=f"worker-{vendor}-{len(stops)}",
        )
        bus = BusSettings(
            block_ms=200,
            reclaim_interval_s=0.3,
            heartbeat_interval_s=0.3,
            heartbeat_ttl_s=1.5,
            drain_timeout_s=3,
            max_in_flight=max_in_flight,
        )
        settings = WorkerSettings(vendor=vendor, backoff_base_s=0.05, backoff_max_s=0.5, **worker)
        vendors = VendorSettings(
            SWARM_SIMULATOR_URL=(sim or simulator).base_url, SWARM_LLM_TIMEOUT_S=llm_timeout_s
        )
        task = asyncio.create_task(run_worker(stop, swarm, bus, settings, vendors))
        stops.append((stop, task))
        return task

    yield start
    for stop, _task in stops:
        stop.set()
    for _stop, task in stops:
        await asyncio.wait_for(task, 20)


async def post(
    redis: Redis, names: Names, stream_vendor: str, *, record: bool = True, **task: Any
) -> Task:
    """Put a task on a vendor's stream as the dispatcher would: with the task's record,
    which names the vendor (without it, `record=False`: posted straight to the stream)."""
    t = Task(**task)
    if record:
        await redis.hset(
            names.task(t.task_id), mapping={"state": "routed", "vendor": stream_vendor}
        )
    await redis.xadd(names.vendor_tasks(stream_vendor), encode(t))  # type: ignore[arg-type]
    return t


async def findings(redis: Redis, names: Names) -> list[Finding]:
    return [decode(Finding, f) for _id, f in await redis.xrange(names.findings)]


async def wait_findings(redis: Redis, names: Names, n: int, timeout: float = 30) -> list[Finding]:
    async def enough() -> list[Finding]:
        got = await findings(redis, names)
        return got if len(got) >= n else []

    return await eventually(enough, timeout=timeout, what=f"{n} findings")
