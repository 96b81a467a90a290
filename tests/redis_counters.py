"""What a test did to Redis, read from a private redis-server's own counters (its
commandstats and reads are the test's alone; the `private_url` fixture of tests/conftest.py
starts one): for tests of Redis cost per task."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.protocol import Names
from shared.runtime.settings import SwarmSettings
from tests.waiting import eventually

needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server (apt-get install redis-server)"
)


async def counters(redis: Redis) -> tuple[dict[str, int], int]:
    """Calls per command (commandstats) and requests read (`total_reads_processed`)."""
    stats: Any = await redis.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
    reads: Any = await redis.info("stats")
    return calls, int(reads["total_reads_processed"])


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Calls per command between two readings, the commands that ran only."""
    return {k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)}


def settings_for(url: str, names: Names, consumer: str) -> SwarmSettings:
    return SwarmSettings(
        REDIS_URL=url, SWARM_NAMESPACE=names.namespace, METRICS_PORT=0, CONSUMER_NAME=consumer
    )


async def cost_of(
    redis: Redis,
    run: Callable[[asyncio.Event], Awaitable[int]],
    done: Callable[[], Awaitable[bool]],
    *,
    what: str,
) -> tuple[dict[str, int], int]:
    """Run a service (`run(stop)`) until `done()`, then stop it: the calls per command and
    the requests Redis read in between."""
    calls0, reads0 = await counters(redis)
    stop = asyncio.Event()
    service = asyncio.create_task(run(stop))
    try:
        await eventually(done, timeout=90, interval=0.2, what=what)
    finally:
        stop.set()
        await asyncio.wait_for(service, 30)
    calls1, reads1 = await counters(redis)
    return delta(calls0, calls1), reads1 - reads0
