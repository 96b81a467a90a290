"""The gauges dashboards and alerts read: each consumer's backlog, the dispatcher's fleet."""

from __future__ import annotations

from redis.asyncio import Redis

from services.dispatcher.fleet import FleetView
from shared.bus import Bus, Cooldowns, Heartbeat
from shared.bus.spend import SpendBook
from shared.protocol import Names
from shared.runtime.metrics import Metrics
from shared.runtime.settings import BusSettings
from tests.waiting import eventually


async def test_a_consumer_reports_its_streams_length_lag_and_pending(
    redis: Redis, names: Names
) -> None:
    metrics = Metrics.create()
    settings = BusSettings(block_ms=100, backlog_interval_s=0.1, max_in_flight=2)
    bus = Bus(redis, names, settings, metrics)
    stream = names.vendor_tasks("claude")
    for i in range(7):
        await bus.publish(stream, {"n": str(i)})
    sub = bus.subscribe(stream, "worker-claude", "c1")
    await sub.start()
    try:
        value = metrics.registry.get_sample_value

        async def reported() -> bool:
            labels = {"stream": stream, "group": "worker-claude"}
            return (
                value("swarm_stream_length", {"stream": stream}) == 7
                and value("swarm_stream_pending", labels) == 2  # two held, none acked
                and value("swarm_stream_lag", labels) == 5  # five never delivered
            )

        await eventually(reported, timeout=5, what="the backlog gauges")
    finally:
        await sub.close()


async def test_the_dispatcher_exports_live_members_cooldowns_and_budgets(
    redis: Redis, names: Names
) -> None:
    metrics = Metrics.create()
    for i, (service, vendor) in enumerate(
        [("worker-claude", "claude"), ("worker-claude", "claude"), ("worker-gemini", "gemini")]
    ):
        beat = Heartbeat(
            redis, names, f"m{i}", service=service, interval_s=1, ttl_s=30,
            info={"vendor": vendor},
        )  # fmt: skip
        await beat.beat()
    cooldowns = Cooldowns(redis, names, threshold=1)
    await cooldowns.failure("deepseek", "deepseek-flash")
    spend = SpendBook(redis, names)
    await spend.record("claude", "research", 8.5)
    fleet = FleetView(
        redis,
        names,
        cooldowns,
        0.0,
        spend=spend,
        vendor_caps={"claude": 10.0},
        task_type_caps={"research": 100.0},
    )
    await fleet.get()
    fleet.export(metrics)
    value = metrics.registry.get_sample_value

    members = {"service": "worker-claude", "vendor": "claude"}
    assert value("swarm_fleet_live_members", members) == 2
    gemini = {"service": "worker-gemini", "vendor": "gemini"}
    assert value("swarm_fleet_live_members", gemini) == 1
    cooling = {"vendor": "deepseek", "model": "deepseek-flash"}
    assert value("swarm_vendor_cooldown_active", cooling) == 1
    assert value("swarm_budget_spent_usd", {"kind": "vendor", "name": "claude"}) == 8.5
    assert value("swarm_budget_cap_usd", {"kind": "vendor", "name": "claude"}) == 10.0
    assert value("swarm_budget_spent_usd", {"kind": "task_type", "name": "research"}) == 8.5

    await redis.delete(names.cooldown("deepseek", "deepseek-flash"))
    await fleet.get()
    fleet.export(metrics)
    assert value("swarm_vendor_cooldown_active", cooling) is None  # over: the series is gone
