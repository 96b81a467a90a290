"""What routing a task costs Redis, on a private redis-server (its counters are this test's
alone): a handful of plain commands per task, sent a batch at a time, no script per task
(bench/dispatcher_redis.py measures the CPU)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from services.cli.redis_finder import private_redis_server
from services.dispatcher.service import run_dispatcher
from services.dispatcher.settings import DispatcherSettings
from shared.bus import Heartbeat
from shared.llm.settings import VendorSettings
from shared.protocol import KNOWN_VENDORS, Names, Task, encode
from shared.runtime.settings import BusSettings, SwarmSettings
from tests.waiting import eventually

TASKS = 2000

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server (apt-get install redis-server)"
)


@pytest.fixture
def private_url() -> Iterator[str]:
    with private_redis_server() as (url, _proc):
        yield url


async def _counters(redis: Redis) -> tuple[dict[str, int], int]:
    stats: Any = await redis.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
    reads: Any = await redis.info("stats")
    return calls, int(reads["total_reads_processed"])


async def test_a_routed_task_costs_five_plain_commands_sent_a_batch_at_a_time(
    private_url: str, names: Names
) -> None:
    redis = Redis.from_url(private_url)
    for vendor in KNOWN_VENDORS:
        await Heartbeat(
            redis, names, f"worker-{vendor}-t", service=f"worker-{vendor}", interval_s=60,
            ttl_s=600, info={"vendor": vendor},
        ).beat()  # fmt: skip
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(TASKS):
            pipe.xadd(names.intake, encode(Task(task_id=f"t{i}", prompt=f"Question {i}?")))  # type: ignore[arg-type]
        await pipe.execute()
    calls0, reads0 = await _counters(redis)
    stop = asyncio.Event()
    swarm = SwarmSettings(
        REDIS_URL=private_url, SWARM_NAMESPACE=names.namespace, METRICS_PORT=0,
        CONSUMER_NAME="dispatcher-cost",
    )  # fmt: skip
    service = asyncio.create_task(
        run_dispatcher(stop, swarm, BusSettings(), DispatcherSettings(), VendorSettings())
    )

    async def drained() -> bool:
        groups = await redis.xinfo_groups(names.intake)
        return bool(groups) and groups[0]["lag"] == 0 and groups[0]["pending"] == 0

    try:
        await eventually(drained, timeout=90, interval=0.2, what=f"{TASKS} tasks routed")
    finally:
        stop.set()
        await asyncio.wait_for(service, 30)
    calls1, reads1 = await _counters(redis)
    routed = sum([await redis.xlen(names.vendor_tasks(v)) for v in KNOWN_VENDORS])
    await redis.aclose()
    assert routed == TASKS
    calls = {k: n - calls0.get(k, 0) for k, n in calls1.items() if n > calls0.get(k, 0)}
    assert calls.get("evalsha", 0) < TASKS / 20, calls  # scripts are upkeep, not per task
    # Round trips: requests Redis read, a batch of tasks per read, not one per task.
    assert reads1 - reads0 < TASKS / 4, (reads1 - reads0, calls)
    # Per task: HSETNX + PEXPIRE (the claim), XADD + HSET + SET (the effects: the routed
    # task, its record, its route); XREADGROUP and XACK per batch. Periodic upkeep (fleet,
    # heartbeat, reclaim, polling) adds a little.
    for command in ("hsetnx", "pexpire", "xadd", "hset", "set"):
        assert TASKS <= calls.get(command, 0) <= TASKS * 1.02, (command, calls)
    assert sum(calls.values()) < TASKS * 5.5, calls
