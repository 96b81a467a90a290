"""The `swarm` command run as a user runs it (a subprocess with REDIS_URL and
SWARM_NAMESPACE), against a real Redis; services it talks to run in this process."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from services.dispatcher.service import run_dispatcher
from services.dispatcher.settings import DispatcherSettings
from shared.llm.settings import VendorSettings
from shared.protocol import Names
from shared.runtime.settings import BusSettings, SwarmSettings
from tests.collector.conftest import start_collector  # noqa: F401 - a fixture
from tests.worker.conftest import simulator, start_worker  # noqa: F401 - fixtures


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class Swarm:
    """`await swarm("post", "...")` runs `python -m services.cli.main post ...`."""

    redis_url: str
    names: Names

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "SWARM_NAMESPACE": self.names.namespace,
            "COLUMNS": "200",
            **extra,
        }

    async def start(self, *args: str, **env: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli.main",
            *args,
            env=self.env(**env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    @staticmethod
    async def finish(proc: asyncio.subprocess.Process, timeout: float = 60) -> Result:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        return Result(proc.returncode or 0, out.decode(), err.decode())

    async def __call__(self, *args: str, **env: str) -> Result:
        return await self.finish(await self.start(*args, **env))


@pytest.fixture
def swarm(redis_url: str, names: Names) -> Swarm:
    return Swarm(redis_url, names)


@pytest.fixture
async def dispatcher(redis_url: str, names: Names) -> AsyncIterator[None]:
    stop = asyncio.Event()
    swarm = SwarmSettings(
        REDIS_URL=redis_url,
        SWARM_NAMESPACE=names.namespace,
        METRICS_PORT=0,
        CONSUMER_NAME="dispatcher-test",
    )
    bus = BusSettings(block_ms=200, heartbeat_interval_s=0.3, heartbeat_ttl_s=1.5)
    settings = DispatcherSettings(fleet_refresh_s=0.1)
    task = asyncio.create_task(run_dispatcher(stop, swarm, bus, settings, VendorSettings()))
    yield
    stop.set()
    await asyncio.wait_for(task, 20)


async def intake_ids(redis: Redis, names: Names) -> list[str]:
    return [i.decode() for i, _ in await redis.xrange(names.intake)]
