"""A passing state of the fleet must not decide a task's fate for good (found by the
fault tests here, then fixed in the dispatcher).

Before the fix, a fresh task whose pinned vendor's workers were restarting, or whose tier's
models with workers were all cooling down, was rejected with no finding, so its run never
completed; and when every heartbeat lapsed at once (a pause, CPU starvation) the dispatcher
took it for a cold start and queued the task for a vendor nobody ran. Now a vendor seen
live within SWARM_DISPATCHER_LIVE_GRACE_S still takes work, a pinned task waits in its
vendor's queue, a cooling model beats a refusal, a cold start waits
SWARM_DISPATCHER_COLD_START_WAIT_S for workers, and a refused task gets a failed finding.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.bus.cooldown import Cooldowns
from shared.bus.findings import expect_run, run_progress
from shared.protocol import Names, decode_rejection
from tests.chaos.checks import cleanup, post, sim_config, tasks
from tests.swarm_procs import SwarmProcs

pytestmark = [pytest.mark.chaos]


@pytest.fixture(autouse=True)
async def _clean(redis: Redis, names: Names) -> AsyncIterator[None]:
    yield
    await cleanup(redis, names)  # these fail by design: nothing to keep for inspection


async def _outcome(redis: Redis, names: Names, swarm: SwarmProcs, run_id: str) -> str:
    """Wait until the run's one task finished or was rejected; say which, and why."""

    async def ended() -> str:
        if (await run_progress(redis, names, run_id)).complete:
            return "finished"
        entries: Any = await redis.xrange(names.rejected)
        for _id, fields in entries:
            return f"rejected: {decode_rejection(fields).reason}"
        return ""

    outcome: str = await swarm.wait_for(ended, timeout=30, what="the task to end")
    return outcome


# Nobody dies here: a long heartbeat, so no live worker is ever taken for dead (a lapse would
# send the task to the cheapest vendor by the cold-start rule and hide what is shown here).
HEARTBEAT = {"SWARM_HEARTBEAT_INTERVAL_S": "1", "SWARM_HEARTBEAT_TTL_S": "10"}


async def _swarm(redis: Redis, names: Names, swarm: SwarmProcs) -> None:
    """A deepseek worker, then the dispatcher: its first look at the fleet (which it keeps
    for SWARM_DISPATCHER_FLEET_REFRESH_S) already shows the worker."""
    await swarm.simulator(sim_config(0.05))
    await swarm.start("collector", "collector", env=HEARTBEAT)
    await swarm.start("worker-deepseek", "worker", "--vendor", "deepseek", env=HEARTBEAT)
    await swarm.wait_live(redis, names, {"collector": 1, "worker-deepseek": 1})
    await swarm.start("dispatcher", "dispatcher", env=HEARTBEAT)
    await swarm.wait_live(redis, names, {"dispatcher": 1})


async def test_a_task_pinned_to_a_restarting_vendor_ends_with_a_finding(
    redis: Redis, names: Names, swarm: SwarmProcs
) -> None:
    await _swarm(redis, names, swarm)  # deepseek live; the gemini worker is (re)starting
    run_id = f"pin-{uuid.uuid4().hex[:8]}"
    await expect_run(redis, names, run_id, 1)
    await post(redis, names, tasks(run_id, 1, vendor="gemini"))
    await swarm.start("worker-gemini", "worker", "--vendor", "gemini", env=HEARTBEAT)
    assert await _outcome(redis, names, swarm, run_id) == "finished"


async def test_a_task_posted_while_its_vendors_cool_down_ends_with_a_finding(
    redis: Redis, names: Names, swarm: SwarmProcs
) -> None:
    # deepseek-flash, the one simple-tier model with a live worker, rests for 10 s.
    cooldowns = Cooldowns(redis, names, threshold=1, period_s=10)
    assert await cooldowns.failure("deepseek", "deepseek-flash")
    await _swarm(redis, names, swarm)
    run_id = f"cool-{uuid.uuid4().hex[:8]}"
    await expect_run(redis, names, run_id, 1)
    await post(redis, names, tasks(run_id, 1))
    assert await _outcome(redis, names, swarm, run_id) == "finished"


async def test_a_task_posted_while_every_heartbeat_lapsed_goes_to_a_vendor_with_workers(
    redis: Redis, names: Names, swarm: SwarmProcs
) -> None:
    fast = {"SWARM_HEARTBEAT_INTERVAL_S": "0.3", "SWARM_HEARTBEAT_TTL_S": "1.5"}
    await swarm.simulator(sim_config(0.05))
    await swarm.start("collector", "collector", env=HEARTBEAT)
    await swarm.start("worker-deepseek", "worker", "--vendor", "deepseek", env=fast)
    await swarm.wait_live(redis, names, {"collector": 1, "worker-deepseek": 1})
    refresh = {"SWARM_DISPATCHER_FLEET_REFRESH_S": "0.1"}  # a fresh view for every task
    await swarm.start("dispatcher", "dispatcher", env={**HEARTBEAT, **refresh})
    await swarm.wait_live(redis, names, {"dispatcher": 1})
    # The only worker pauses (SIGSTOP) long enough for its heartbeat to lapse.
    swarm.send("worker-deepseek", signal.SIGSTOP)

    async def lapsed() -> bool:
        return not await redis.exists(names.member("worker-deepseek"))

    try:
        await swarm.wait_for(lapsed, timeout=10, what="the paused worker's heartbeat to lapse")
        run_id = f"lapse-{uuid.uuid4().hex[:8]}"
        await expect_run(redis, names, run_id, 1)
        (task,) = tasks(run_id, 1)
        await post(redis, names, [task])

        async def routed() -> str:
            vendor: Any = await redis.hget(names.task(task.task_id), "vendor")
            return vendor.decode() if vendor else ""

        vendor = await swarm.wait_for(routed, timeout=10, what="the task to be routed")
    finally:
        swarm.send("worker-deepseek", signal.SIGCONT)
    assert vendor == "deepseek", f"routed to {vendor}, which has no worker"
    assert await _outcome(redis, names, swarm, run_id) == "finished"
