"""What routing a task costs Redis, on a private redis-server (its counters are this test's
alone): a handful of plain commands per task, sent a batch at a time, no script per task
(bench/dispatcher_redis.py measures the CPU)."""

from __future__ import annotations

from redis.asyncio import Redis

from services.dispatcher.service import run_dispatcher
from services.dispatcher.settings import DispatcherSettings
from shared.bus import Heartbeat
from shared.llm.settings import VendorSettings
from shared.protocol import KNOWN_VENDORS, Names, Task, encode
from shared.runtime.settings import BusSettings
from tests.redis_counters import cost_of, needs_redis_server, settings_for

TASKS = 2000

pytestmark = needs_redis_server


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
    swarm = settings_for(private_url, names, "dispatcher-cost")

    async def drained() -> bool:
        groups = await redis.xinfo_groups(names.intake)
        return bool(groups) and groups[0]["lag"] == 0 and groups[0]["pending"] == 0

    calls, reads = await cost_of(
        redis,
        lambda stop: run_dispatcher(
            stop, swarm, BusSettings(), DispatcherSettings(), VendorSettings()
        ),
        drained,
        what=f"{TASKS} tasks routed",
    )
    routed = sum([await redis.xlen(names.vendor_tasks(v)) for v in KNOWN_VENDORS])
    await redis.aclose()
    assert routed == TASKS
    assert calls.get("evalsha", 0) < TASKS / 20, calls  # scripts are upkeep, not per task
    # Round trips: requests Redis read, a batch of tasks per read, not one per task.
    assert reads < TASKS / 4, (reads, calls)
    # Per task: HSETNX + PEXPIRE (the claim), XADD + HSET + SET (the effects: the routed
    # task, its record, its route); XREADGROUP and XACK per batch. Periodic upkeep (fleet,
    # heartbeat, reclaim, polling) adds a little.
    for command in ("hsetnx", "pexpire", "xadd", "hset", "set"):
        assert TASKS <= calls.get(command, 0) <= TASKS * 1.02, (command, calls)
    assert sum(calls.values()) < TASKS * 5.5, calls
