"""close() ends even when a background job swallowed its cancellation (redis-py can, when
the cancel lands mid-command): the job's loop sees the stop and returns."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from shared.bus import Bus
from shared.protocol import Names
from shared.runtime.metrics import Metrics
from shared.runtime.settings import BusSettings


async def test_close_returns_although_a_job_swallowed_its_cancel(
    redis: Redis, names: Names
) -> None:
    settings = BusSettings(block_ms=100, reclaim_interval_s=0.05)
    bus = Bus(redis, names, settings, Metrics.create())
    sub = bus.subscribe(names.vendor_tasks("claude"), "worker-claude", "c1")
    swallowed = asyncio.Event()

    async def stubborn_reclaim() -> None:
        try:
            await asyncio.sleep(0.2)  # a Redis command in flight
        except asyncio.CancelledError:
            swallowed.set()  # what redis-py does when a cancel lands mid-command

    sub._reclaim = stubborn_reclaim  # type: ignore[method-assign]
    await sub.start()
    await asyncio.sleep(0.1)  # the reclaimer is inside its job now
    started = time.monotonic()
    await asyncio.wait_for(sub.close(), 20)
    assert swallowed.is_set()  # the cancel was really swallowed
    assert time.monotonic() - started < 5  # and close() did not wait for its timeout
