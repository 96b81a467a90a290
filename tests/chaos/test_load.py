"""The whole fleet under load, as the issue's probes ran it (2 cores, own Redis, the CLI's
processes, the shipped liveness defaults):

* 20,000 tasks through the dispatcher, two workers and the collector: every task one
  finding, and no live worker taken for dead (marker `long`, `make chaos-long`);
* a noisy neighbour, 300,000 keys of another application on the same Redis: the fleet
  never SCANs the keyspace (INFO commandstats), and a run finishes in seconds (it took 237 s
  for 3,000 tasks when each fleet refresh scanned for cooldown keys).

Each prints its figures: tasks/s, Redis CPU per task, vendor calls.
"""

from __future__ import annotations

import time
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.bus.findings import expect_run, run_progress, totals_by_model
from shared.protocol import Names
from tests.chaos.checks import audit, post, tasks
from tests.chaos.durable_fleet import DurableFleet, durable_fleet
from tests.chaos.results import save
from tests.chaos.test_worker_liveness import DEFAULT_LIVENESS

pytestmark = pytest.mark.chaos

# Redis as an ordinary deployment runs it (AOF, fsync every second), DEBUG allowed so the
# neighbour's keys can be made in a second.
EVERYSEC = "appendfsync everysec\nenable-debug-command yes\n"
WORKERS = {"SWARM_MAX_IN_FLIGHT": "128"}


def _fleet(names: Names, logs: Path) -> AbstractAsyncContextManager[DurableFleet]:
    return durable_fleet(names, logs, DEFAULT_LIVENESS, config=EVERYSEC, worker_env=WORKERS)


@dataclass
class Drained:
    tasks: int
    seconds: float
    redis_cpu_s: float
    scans: int
    takeovers: int
    vendor_calls: int

    def row(self, what: str) -> dict[str, Any]:
        return {
            "run": what,
            "tasks": self.tasks,
            "seconds": round(self.seconds, 2),
            "tasks_per_s": round(self.tasks / self.seconds, 1),
            "redis_cpu_us_per_task": round(self.redis_cpu_s / self.tasks * 1e6, 1),
            "scans": self.scans,
            "takeovers": self.takeovers,
            "vendor_calls": self.vendor_calls,
        }

    def line(self, what: str) -> str:
        return (
            f"\n{what}: {self.tasks} tasks in {self.seconds:.1f}s ({self.tasks / self.seconds:.0f}"
            f"/s), Redis CPU {self.redis_cpu_s / self.tasks * 1e6:.0f} µs per task, "
            f"{self.scans} SCANs, {self.takeovers} takeovers, vendor calls {self.vendor_calls} "
            f"(+{self.vendor_calls - self.tasks})"
        )


async def _cpu_and_scans(redis: Redis) -> tuple[float, int]:
    cpu = await redis.info("cpu")
    stats = await redis.info("commandstats")
    scans = int(stats.get("cmdstat_scan", {}).get("calls", 0))
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), scans


async def _drain(fleet: DurableFleet, names: Names, n: int, timeout_s: float) -> Drained:
    """Post `n` tasks of a fresh run, wait until the collector has every finding, audit
    that each counted once, and measure the window."""
    redis, swarm = fleet.redis, fleet.swarm
    run_id = f"load-{uuid.uuid4().hex[:8]}"
    batch = tasks(run_id, n)
    await expect_run(redis, names, run_id, n)
    calls_before = int((await swarm.sim_stats())["total"])
    takeovers_before = len(swarm.events("consumer.dead"))
    counted_before = sum(row.tasks for row in await totals_by_model(redis, names))
    cpu0, scans0 = await _cpu_and_scans(redis)
    t0 = time.monotonic()
    for i in range(0, n, 1000):
        await post(redis, names, batch[i : i + 1000])

    async def complete() -> bool:
        return (await run_progress(redis, names, run_id)).complete

    await swarm.wait_for(complete, timeout=timeout_s, what=f"all {n} tasks")
    seconds = time.monotonic() - t0
    cpu1, scans1 = await _cpu_and_scans(redis)
    result = await audit(redis, names, run_id, [t.task_id for t in batch])
    result.counted_in_totals -= counted_before  # the totals are cumulative: this run's part
    result.assert_each_task_counted_once()
    assert result.ok == n
    assert result.duplicates == 0
    return Drained(
        tasks=n,
        seconds=seconds,
        redis_cpu_s=cpu1 - cpu0,
        scans=scans1 - scans0,
        takeovers=len(swarm.events("consumer.dead")) - takeovers_before,
        vendor_calls=int((await swarm.sim_stats())["total"]) - calls_before,
    )


@pytest.mark.long
@pytest.mark.timeout(900)
async def test_twenty_thousand_tasks_with_two_workers_no_live_worker_taken_for_dead(
    names: Names, chaos_logs: Path
) -> None:
    async with _fleet(names, chaos_logs) as fleet:
        drained = await _drain(fleet, names, 20_000, timeout_s=600)
    print(drained.line("20k load, 2 workers"))
    assert drained.takeovers == 0  # no live worker was judged dead...
    assert drained.vendor_calls == drained.tasks  # ...so no task was paid for twice
    save("chaos-load", [drained.row("20,000 tasks, 2 workers, shipped liveness defaults")])


@pytest.mark.timeout(400)
async def test_a_noisy_neighbours_300k_keys_do_not_slow_the_fleet_nor_make_it_scan(
    names: Names, chaos_logs: Path
) -> None:
    async with _fleet(names, chaos_logs) as fleet:
        alone = await _drain(fleet, names, 3_000, timeout_s=120)
        await fleet.redis.execute_command(  # type: ignore[no-untyped-call]
            "DEBUG", "POPULATE", 300_000, "neighbour"
        )
        assert await fleet.redis.dbsize() > 300_000
        crowded = await _drain(fleet, names, 3_000, timeout_s=120)
    print(alone.line("alone") + crowded.line("beside 300k keys of another app"))
    assert alone.scans == crowded.scans == 0
    assert crowded.seconds < 60, "the old keyspace scans took 237 s for 3,000 tasks here"
    save(
        "chaos-neighbour",
        [alone.row("alone"), crowded.row("beside 300,000 keys of another namespace")],
    )
