"""The dispatcher and the collector SIGKILLed mid-run and started again, once as a new
consumer (its predecessor's pending entries are taken over) and once under the same consumer
name (a restarted container: it replays its own pending entries): nothing is lost, nothing is
counted twice, and the totals per vendor add up to the tasks posted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.bus.findings import expect_run, run_progress
from shared.protocol import Names
from tests.chaos.checks import (
    Clock,
    audit,
    cleanup,
    post,
    sim_config,
    simple_tier_policy,
    tasks,
)
from tests.swarm_procs import SwarmProcs

pytestmark = pytest.mark.chaos

# Workers of two vendors, the only two in the simple tier (see `simple_tier_policy`). The
# tasks are not pinned: the cheapest live one takes them, and whenever a busy worker's
# heartbeat lapses the dispatcher routes around it.
VENDORS = ("deepseek", "claude")
# Enough for the trickle to last 30 s, the longest the kills may wait for their victims to
# hold work at the same moment (a CI run with 1,500 ran dry after 15 s, and the last kill
# then never saw both busy); the rest is posted at once after the kills, as before.
TASKS = 3000
FEED = (10, 0.1)  # tasks per step, seconds between steps: ~100 tasks/s until the kills end


async def test_dispatcher_and_collector_sigkilled_mid_run_lose_and_double_count_nothing(
    redis: Redis, names: Names, swarm: SwarmProcs
) -> None:
    await swarm.simulator(sim_config(0.2))
    policy = simple_tier_policy(swarm.logs / "policy.toml", "deepseek-flash", "claude-haiku-5-5")
    await swarm.start("dispatcher-1", "dispatcher", env=policy)
    await swarm.start("collector-1", "collector")
    for vendor in VENDORS:
        await swarm.start(f"worker-{vendor}", "worker", "--vendor", vendor)
    await swarm.wait_live(
        redis, names, {"dispatcher": 1, "collector": 1} | {f"worker-{v}": 1 for v in VENDORS}
    )
    run_id = f"kill-{uuid.uuid4().hex[:8]}"
    batch = tasks(run_id, TASKS)
    await expect_run(redis, names, run_id, TASKS)
    clock = Clock()

    kills_done = asyncio.Event()

    async def feed() -> None:
        """A steady trickle while the kills happen, so each victim is caught mid-work;
        the rest at once after them."""
        step, pause = FEED
        i = 0
        while i < TASKS:
            n = TASKS - i if kills_done.is_set() else step
            await post(redis, names, batch[i : i + n])
            i += n
            await asyncio.sleep(pause)

    feeding = asyncio.create_task(feed())

    async def holding(stream: str, group: str, consumer: str) -> int:
        """Entries `consumer` has read and not acknowledged (its part of the PEL)."""
        summary: Any = await redis.xpending(stream, group)
        for c in summary["consumers"] or []:
            if c["name"].decode() == consumer:
                return int(c["pending"])
        return 0

    async def finished() -> int:
        return (await run_progress(redis, names, run_id)).finished

    at_kill: dict[str, int] = {}

    async def kill_mid_work(*victims: tuple[str, str, str, str]) -> None:
        """SIGKILL each (process, stream, group, consumer) at a moment when every one of
        them holds entries it has read and not acknowledged."""

        async def all_holding() -> list[int] | None:
            held = [await holding(stream, group, c) for _, stream, group, c in victims]
            return held if all(held) else None

        held = await swarm.wait_for(
            all_holding, timeout=30, what=f"{[v[0] for v in victims]} mid-work", interval=0.005
        )
        for (name, *_), n in zip(victims, held, strict=True):
            await swarm.kill(name)
            at_kill[name] = n

    intake = (names.intake, Names.DISPATCHER_GROUP)
    findings = (names.findings, Names.COLLECTOR_GROUP)
    # 1. The dispatcher dies holding intake entries; a new one (a new consumer) takes over
    #    once the dead one's heartbeat has expired.
    await kill_mid_work(("dispatcher-1", *intake, "dispatcher-1"))
    await swarm.start("dispatcher-2", "dispatcher", env=policy)
    # 2. The collector dies holding findings; it comes back under the same consumer name
    #    (a restarted container) and replays them first.
    await swarm.wait_for(lambda: _at_least(finished, 200), timeout=30, what="200 findings")
    await kill_mid_work(("collector-1", *findings, "collector-1"))
    await swarm.start("collector-2", "collector", consumer="collector-1")

    # 3. Both die at the same moment, each with work in hand, once the new ones are busy;
    #    they come back the other way round.
    async def both_busy() -> bool:
        return bool(
            swarm.events("task.routed", prefix="dispatcher-2")
            and swarm.events("finding.collected", prefix="collector-2")
        )

    await swarm.wait_for(both_busy, timeout=30, what="dispatcher-2 and collector-2 at work")
    await kill_mid_work(
        ("dispatcher-2", *intake, "dispatcher-2"), ("collector-2", *findings, "collector-1")
    )
    await swarm.start("dispatcher-3", "dispatcher", env=policy, consumer="dispatcher-2")
    await swarm.start("collector-3", "collector")
    kills_done_at = clock.s
    kills_done.set()
    await feeding

    async def complete() -> bool:
        return (await run_progress(redis, names, run_id)).complete

    await swarm.wait_for(complete, timeout=60, what=f"all {TASKS} tasks collected")
    elapsed = clock.s

    result = await audit(redis, names, run_id, [t.task_id for t in batch])
    calls = int((await swarm.sim_stats())["total"])
    takeovers = swarm.events("consumer.dead")
    replays = swarm.events("pending.replayed")
    redelivered = [
        e for e in swarm.events("finding.collected") if e.get("outcome") == "redelivered"
    ]
    print(
        f"\ndispatcher/collector SIGKILLs: {TASKS} tasks in {elapsed:.1f}s, 4 kills by "
        f"{kills_done_at:.1f}s holding {at_kill} unacknowledged entries, "
        f"vendor calls {calls} (+{calls - TASKS}), {len(takeovers)} takeovers, "
        f"{len(replays)} replays of own pending entries, "
        f"{len(redelivered)} findings redelivered to the collector (not counted again), "
        f"duplicate findings {result.duplicates}, totals {result.totals_by_vendor}"
    )
    result.assert_each_task_counted_once()
    assert result.ok == TASKS
    # The totals per vendor agree with the tasks' own summaries, vendor by vendor.
    assert result.totals_by_vendor == result.summary_vendors
    for stream, group in (intake, findings):
        summary: Any = await redis.xpending(stream, group)
        assert summary["pending"] == 0, f"{stream} still has entries pending"
    assert takeovers and replays
    await cleanup(redis, names)


async def _at_least(probe: Callable[[], Awaitable[int]], n: int) -> bool:
    return await probe() >= n
