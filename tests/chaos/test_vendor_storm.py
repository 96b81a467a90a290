"""A vendor storm: 30% 429s with retry-after, 5% 500s and 3% hung requests on every vendor.
Every task completes, or fails visibly: a failed finding that says why, and the task's
record on a dead-letter stream (`<ns>:dlq` from a worker that gave up on a pinned task,
`<ns>:tasks:rejected` from the dispatcher when no vendor is left). Nothing is silent:
ok + failed == posted, and every failure has both its finding and its record."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.bus.findings import expect_run, run_progress, run_task_statuses
from shared.protocol import Finding, Names, Task, decode_rejection
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

VENDORS = ("deepseek", "gemini", "claude")
FREE = 340  # routed by the dispatcher; a worker that gives up hands them to another vendor
PINNED = 40  # pinned to deepseek: a worker that gives up dead-letters them
FORCED_500 = 10  # pinned to deepseek and always answered 500: dead-lettered, every one
FORCED_429 = 10  # free, always answered 429: every vendor gives up, then the dispatcher
# The default simple tier without gpt-6-luna: every model in it has a worker here.
SIMPLE_MODELS = (
    "deepseek-flash",
    "gemini-2.5-flash-lite",
    "gemini-3.5-flash-lite",
    "claude-haiku-5-5",
    "claude-haiku-4-5",
)
# No process dies here: a long heartbeat, so a worker busy under load is never taken for
# dead (the dispatcher would refuse the tasks pinned to it: test_transient_refusals.py).
HEARTBEAT = {"SWARM_HEARTBEAT_INTERVAL_S": "1", "SWARM_HEARTBEAT_TTL_S": "10"}
STORM = "rate_429 = 0.30\nrate_500 = 0.05\nrate_timeout = 0.03"
WORKER_ENV = {
    "SWARM_WORKER_MAX_ATTEMPTS": "3",
    "SWARM_WORKER_BACKOFF_BASE_S": "0.1",
    "SWARM_WORKER_BACKOFF_MAX_S": "1",
    "SWARM_WORKER_TASK_DEADLINE_S": "20",
    "SWARM_LLM_TIMEOUT_S": "1",  # a hung request (the simulator hangs 3 s) times out at 1 s
    "SWARM_MAX_IN_FLIGHT": "64",
    # A storm on every vendor would put each in cooldown within a second, and the dispatcher
    # then refuses new tasks outright (see test_transient_refusals.py); here the retries,
    # fallbacks and dead letters are under test, so the cooldown stays out of the way.
    "SWARM_WORKER_COOLDOWN_THRESHOLD": "1000000",
    **HEARTBEAT,
}


async def test_vendor_storm_every_task_completes_or_is_dead_lettered_with_its_reason(
    redis: Redis, names: Names, swarm: SwarmProcs
) -> None:
    await swarm.simulator(
        sim_config(0.1, defaults="retry_after_s = 0.3\ntimeout_hang_s = 3", faults=STORM)
    )
    await swarm.start("collector", "collector", env=HEARTBEAT)
    for vendor in VENDORS:
        await swarm.start(f"worker-{vendor}", "worker", "--vendor", vendor, env=WORKER_ENV)
    await swarm.wait_live(redis, names, {"collector": 1} | {f"worker-{v}": 1 for v in VENDORS})
    # The dispatcher last: its first look at the fleet already shows every worker.
    policy = simple_tier_policy(swarm.logs / "policy.toml", *SIMPLE_MODELS)
    await swarm.start("dispatcher", "dispatcher", env={**policy, **HEARTBEAT})
    await swarm.wait_live(redis, names, {"dispatcher": 1})
    run_id = f"storm-{uuid.uuid4().hex[:8]}"
    n = 0

    def more(count: int, **fields: Any) -> list[Task]:
        nonlocal n
        batch = tasks(run_id, count, start=n, **fields)
        n += count
        return batch

    free = more(FREE)
    pinned = more(PINNED, vendor="deepseek")
    forced_500 = more(FORCED_500, vendor="deepseek", prompt="Always fails {i} [[sim:500]]")
    forced_429 = more(FORCED_429, prompt="Always limited {i} [[sim:429]]")
    batch = free + pinned + forced_500 + forced_429
    await expect_run(redis, names, run_id, len(batch))
    clock = Clock()
    await post(redis, names, batch)

    async def complete() -> bool:
        return (await run_progress(redis, names, run_id)).complete

    await swarm.wait_for(complete, timeout=60, what=f"all {len(batch)} tasks to end")
    elapsed = clock.s

    result = await audit(redis, names, run_id, [t.task_id for t in batch])
    statuses = await run_task_statuses(redis, names, run_id)
    records = await _dead_letters(redis, names)
    failed = {t for t, s in statuses.items() if s == "failed"}
    stats = await swarm.sim_stats()
    retries = len(swarm.events("vendor.retry"))
    reroutes = len(swarm.events("task.rerouted"))
    takeovers = len(swarm.events("consumer.dead"))
    print(
        f"\nvendor storm: {len(batch)} tasks in {elapsed:.1f}s: {result.ok} ok, "
        f"{result.failed} failed, dead-lettered {sum(len(v) for v in records.values())} "
        f"({ {k: len(v) for k, v in records.items()} }), {retries} retries, {reroutes} "
        f"reroutes, {takeovers} takeovers, vendor calls {stats['total']} "
        f"{stats['by_status']}, tasks by vendor {result.summary_vendors}"
    )
    result.assert_each_task_counted_once()
    # Every failure has its reason twice over: the finding's error and a dead-letter record.
    dead = {task_id for by_stream in records.values() for task_id in by_stream}
    assert dead == failed, (
        f"failed without a record: {sorted(failed - dead)[:5]}, "
        f"recorded but not failed: {sorted(dead - failed)[:5]}"
    )
    for by_stream in records.values():
        for task_id, reason in by_stream.items():
            assert reason.strip(), f"{task_id}: dead-lettered without a reason"
    errors = await _failed_errors(redis, names, failed)
    assert all(errors.values()), errors
    # The forced failures end where they should, with the vendors' words in the reason.
    assert {t.task_id for t in forced_500} <= set(records["dlq"])
    assert all("500" in errors[t.task_id] for t in forced_500)
    assert {t.task_id for t in forced_429} <= set(records["rejected"])
    for t in forced_429:
        assert all(v in errors[t.task_id] for v in VENDORS), errors[t.task_id]
    # The storm was real, and most tasks got through it.
    assert {"429", "500"} <= set(stats["by_status"]), stats["by_status"]
    assert stats["faults"].get("timeout", 0) > 0, stats["faults"]
    assert result.ok >= 0.9 * (FREE + PINNED)
    await cleanup(redis, names)


async def _dead_letters(redis: Redis, names: Names) -> dict[str, dict[str, str]]:
    """Task id -> reason, per dead-letter stream."""
    out: dict[str, dict[str, str]] = {}
    for label, stream in (("dlq", names.dead_letter), ("rejected", names.rejected)):
        out[label] = {}
        entries: Any = await redis.xrange(stream)
        for _id, fields in entries:
            record = decode_rejection(fields)
            out[label][record.original.get("task_id", "?")] = record.reason
    return out


async def _failed_errors(redis: Redis, names: Names, task_ids: set[str]) -> dict[str, str]:
    """Task id -> the error of its failed finding."""
    out: dict[str, str] = {}
    for task_id in task_ids:
        docs: Any = await redis.hvals(names.task_findings(task_id))
        found = [Finding.model_validate_json(d) for d in docs]
        out[task_id] = " | ".join(f.error or "" for f in found if f.status.value == "failed")
    return out
