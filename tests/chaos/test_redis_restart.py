"""Redis SIGKILLed mid-run and started again on the same port: the services reconnect by
themselves (none is restarted) and every task Redis acknowledged ends with one finding.

Redis runs privately with `appendonly yes` and `appendfsync always`: a write is on disk
before Redis answers it, so everything acknowledged survives the crash. (With the usual
`everysec`, up to a second of acknowledged writes can be lost on a crash: tasks, findings
and acks alike. That is Redis's own durability window, not something the swarm can close.)
It is killed with SIGKILL rather than `SHUTDOWN NOSAVE`: a crash (OOM killer, node loss)
gives no chance to flush or say goodbye, and `SHUTDOWN` would still flush the AOF.

A poster keeps posting through the outage, as any client would: a task whose XADD failed
is posted again until Redis acknowledges it (posted twice if the first XADD landed but its
answer was lost: the dispatcher takes each task id once).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from shared.bus.findings import expect_run, run_progress
from shared.protocol import Names
from shared.runtime.redis import REDIS_UNAVAILABLE
from tests.chaos.checks import Clock, audit, post, tasks
from tests.chaos.durable_fleet import SERVICES, DurableFleet, durable_fleet

pytestmark = pytest.mark.chaos

TASKS = 500
BEFORE = 300  # posted at once before the crash; the rest one by one through it
RESERVE = 50  # of those, posted only once Redis is down


async def test_redis_sigkilled_and_restarted_loses_no_acknowledged_task(
    names: Names, chaos_logs: Path
) -> None:
    async with durable_fleet(names, chaos_logs) as fleet:
        await _run(fleet, names)


async def _run(fleet: DurableFleet, names: Names) -> None:
    redis, swarm, server = fleet.redis, fleet.swarm, fleet.server
    run_id = f"restart-{uuid.uuid4().hex[:8]}"
    batch = tasks(run_id, TASKS)
    await expect_run(redis, names, run_id, TASKS)
    clock = Clock()
    await post(redis, names, batch[:BEFORE])
    acked_before_kill: list[str] = [t.task_id for t in batch[:BEFORE]]
    killed = asyncio.Event()
    retries = 0

    async def poster() -> None:
        """One task every 10 ms; the last RESERVE wait for the crash, so some are posted
        into the outage."""
        nonlocal retries
        for k, task in enumerate(batch[BEFORE:]):
            if k == TASKS - BEFORE - RESERVE:
                await killed.wait()
            while True:
                try:
                    await post(redis, names, [task])
                    break
                except REDIS_UNAVAILABLE:
                    retries += 1
                    await asyncio.sleep(0.05)
            if not killed.is_set():
                acked_before_kill.append(task.task_id)
            await asyncio.sleep(0.01)

    posting = asyncio.create_task(poster())

    async def finished(n: int) -> bool:
        return (await run_progress(redis, names, run_id)).finished >= n

    await swarm.wait_for(lambda: finished(100), timeout=30, what="100 findings before the crash")
    first_run_id = (await redis.info("server"))["run_id"]
    server.kill()  # SIGKILL
    killed.set()
    await asyncio.to_thread(server.wait)
    kill_at = clock.s

    # Every service and the poster notice the outage (and keep going) before Redis is back.
    def waited() -> set[str]:
        return {
            e["process"]
            for event in ("redis.unavailable", "heartbeat.failed", "ack.retry")
            for e in swarm.events(event)
        }

    async def all_noticed() -> bool:
        return waited() >= set(SERVICES) and retries > 0

    await swarm.wait_for(all_noticed, timeout=20, what="every service and the poster to notice")
    with fleet.restart():
        restart_at = clock.s

        async def complete() -> bool:
            try:
                return (await run_progress(redis, names, run_id)).complete
            except REDIS_UNAVAILABLE:
                return False

        await swarm.wait_for(complete, timeout=60, what=f"all {TASKS} tasks after the restart")
        await posting
        elapsed = clock.s
        assert (await redis.info("server"))["run_id"] != first_run_id  # truly restarted
        result = await audit(redis, names, run_id, [t.task_id for t in batch])
        calls = int((await swarm.sim_stats())["total"])
        takeovers = len(swarm.events("consumer.dead"))
        print(
            f"\nredis SIGKILL at {kill_at:.1f}s, back at {restart_at:.1f}s: {TASKS} tasks in "
            f"{elapsed:.1f}s, {len(acked_before_kill)} acknowledged before the kill, "
            f"{retries} posts retried through the outage, services that waited it out: "
            f"{sorted(waited())}, vendor calls {calls} (+{calls - TASKS}), {takeovers} "
            f"takeovers, duplicate findings {result.duplicates}"
        )
        result.assert_each_task_counted_once()
        assert result.ok == TASKS
        assert set(acked_before_kill) <= result.run_tasks
        # Nobody was restarted: the very processes started at the beginning finished the run.
        assert sorted(p.name for p in swarm.running()) == sorted(("simulator", *SERVICES))
        for name in SERVICES:
            assert swarm.procs[name].process.returncode is None
