"""Period budgets: spend that workers record keeps vendors and task types under their caps."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from services.dispatcher.policy import Policy
from services.dispatcher.router import Fleet, route
from services.dispatcher.service import run_dispatcher
from services.dispatcher.settings import DispatcherSettings
from shared.bus.spend import SpendBook
from shared.llm.prices import PriceTable
from shared.llm.settings import VendorSettings
from shared.protocol import KNOWN_VENDORS, Names, Task, decode_rejection
from shared.runtime.settings import BusSettings, SwarmSettings
from tests.dispatcher.test_intake import _routed, _workers
from tests.waiting import eventually


async def test_caps_route_around_a_spent_vendor_and_refuse_a_spent_task_type(
    redis: Redis, redis_url: str, names: Names
) -> None:
    await _workers(redis, names, *KNOWN_VENDORS)
    book = SpendBook(redis, names)
    uncapped = route(
        Task(prompt="Capital of France?", complexity="simple"),
        Policy.load(),
        PriceTable.load(),
        Fleet(live=dict.fromkeys(KNOWN_VENDORS, 1)),
    )
    assert uncapped.chosen is not None
    spent_vendor = uncapped.chosen.vendor  # where the task would go without caps
    await book.record(spent_vendor, "research", 3.0)
    await book.record("openai", "triage", 0.5)
    settings = DispatcherSettings(
        fleet_refresh_s=0.1,
        vendor_caps_usd={spent_vendor: 2.0},
        task_type_caps_usd={"triage": 0.25},
    )
    stop = asyncio.Event()
    swarm = SwarmSettings(REDIS_URL=redis_url, SWARM_NAMESPACE=names.namespace, METRICS_PORT=0)
    service = asyncio.create_task(
        run_dispatcher(stop, swarm, BusSettings(block_ms=200), settings, VendorSettings())
    )
    try:
        await redis.xadd(
            names.intake,
            {"task_id": "cheap", "prompt": "Capital of France?", "complexity": "simple"},
        )
        await redis.xadd(
            names.intake, {"task_id": "tri", "prompt": "Sort this ticket", "task_type": "triage"}
        )
        [(vendor, task)] = await _routed(redis, names, 1)

        async def rejected() -> list[object]:
            return list(await redis.xrange(names.rejected))

        [(_id, record)] = await eventually(rejected, what="the over-budget task type refused")
    finally:
        stop.set()
        await asyncio.wait_for(service, 20)
    assert task.task_id == "cheap" and vendor != spent_vendor  # it spent its $2 cap
    refusal = decode_rejection(record)
    assert refusal.field == "task_type"
    assert "$0.50 of its $0.25" in refusal.reason
    assert await book.spent("vendor", [spent_vendor]) == {spent_vendor: 3.0}
