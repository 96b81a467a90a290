"""Urgency, as a user posts it (`redis-cli XADD swarm:tasks '*' ... urgency high`), against
the real fleet behind a backlog: one deepseek worker, the simulator answering in 0.5 s.

* a `high` task overtakes 200 queued normal ones: done within 3 s, most of them still open;
* `critical` is taken before `high`;
* `low` waits behind the backlog at most the documented bound (SWARM_URGENCY_AGING_S), not
  behind all of it.
"""

from __future__ import annotations

import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from shared.bus.findings import task_view
from shared.protocol import Task, encode
from tests.cli.typed_fleet import TypedFleet, typed_fleet

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli")

LATENCY_S = 0.5
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_line(pattern: str) -> str:
    """The README's shell line that matches `pattern`."""
    found = [line for line in README.read_text().splitlines() if re.search(pattern, line)]
    assert found, f"README no longer shows a line matching {pattern!r}"
    return found[0].strip()


async def _backlog(fleet: TypedFleet, n: int) -> None:
    """`n` normal tasks, routed into the worker's queue before the test goes on."""
    async with fleet.redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            task = Task(task_id=f"n{i}", prompt=f"Summarise note {i}.", complexity="simple")
            pipe.xadd(fleet.names.intake, encode(task))  # type: ignore[arg-type]
        await pipe.execute()
    queue = fleet.names.vendor_tasks("deepseek")

    async def routed() -> bool:
        return int(await fleet.redis.xlen(queue)) >= n

    await fleet.swarm.wait_for(routed, timeout=30, what=f"{n} normal tasks routed")


async def _done_in(fleet: TypedFleet, task_id: str, timeout: float) -> float:
    """Seconds until `task_id` has its finding."""
    started = time.monotonic()

    async def done() -> bool:
        return await task_view(fleet.redis, fleet.names, task_id) is not None

    await fleet.swarm.wait_for(done, timeout=timeout, what=f"the finding of {task_id}")
    return time.monotonic() - started


async def _calls(fleet: TypedFleet) -> int:
    return int((await fleet.swarm.sim_stats())["total"])


def _xadd(task_id: str, urgency: str) -> str:
    return (
        f"redis-cli XADD swarm:tasks '*' task_id {task_id} "
        f"prompt 'Read the outage report.' complexity simple urgency {urgency}"
    )


@pytest.mark.timeout(180)
async def test_a_high_task_overtakes_a_backlog_of_normal_ones(tmp_path: Path) -> None:
    capacity_4 = {"SWARM_MAX_IN_FLIGHT": "4"}
    async with typed_fleet(tmp_path / "logs", latency_s=LATENCY_S, worker_env=capacity_4) as fleet:
        await _backlog(fleet, 200)
        # As the README prints it: no task_id, so the entry id XADD prints is the task's.
        _, out = await fleet.bash(readme_line(r"^redis-cli XADD .* urgency high$"))
        [urgent_id] = out.split()
        waited = await _done_in(fleet, urgent_id, timeout=30)
        calls = await _calls(fleet)
        urgent = await task_view(fleet.redis, fleet.names, urgent_id)
    assert waited < 3.0, f"the high task took {waited:.1f}s"
    assert calls - 1 <= 50, f"{calls - 1} normal tasks were sent first: fewer than 150 open"
    assert urgent is not None and urgent.summary.status == "ok"


@pytest.mark.timeout(180)
async def test_critical_is_taken_before_high(tmp_path: Path) -> None:
    one_at_a_time = {"SWARM_MAX_IN_FLIGHT": "1"}
    logs = tmp_path / "logs"
    async with typed_fleet(logs, latency_s=LATENCY_S, worker_env=one_at_a_time) as fleet:
        await _backlog(fleet, 20)
        # Frozen while both are routed, so neither is read before the other is queued.
        fleet.swarm.send("worker-deepseek-1", signal.SIGSTOP)
        try:
            both = _xadd("first-high", "high") + "\n" + _xadd("then-critical", "critical")
            await fleet.bash(both)

            async def both_routed() -> bool:
                queues = (fleet.names.vendor_tasks("deepseek", u) for u in ("high", "critical"))
                return all([int(await fleet.redis.xlen(q)) == 1 for q in queues])

            await fleet.swarm.wait_for(both_routed, timeout=10, what="both routed")
        finally:
            fleet.swarm.send("worker-deepseek-1", signal.SIGCONT)
        await _done_in(fleet, "first-high", timeout=30)
        findings = await fleet.redis.xrange(fleet.names.findings)
    order = [f[b"task_id"].decode() for _id, f in findings if b"task_id" in f]
    assert order.index("then-critical") < order.index("first-high"), order
    # Both ahead of the backlog: at most what was in flight when the worker froze and its
    # next read came before them.
    assert order.index("first-high") <= 3, order


@pytest.mark.timeout(180)
async def test_low_waits_at_most_the_aging_bound_behind_a_backlog(tmp_path: Path) -> None:
    aging_2s = {"SWARM_MAX_IN_FLIGHT": "4", "SWARM_URGENCY_AGING_S": "2"}
    async with typed_fleet(tmp_path / "logs", latency_s=LATENCY_S, worker_env=aging_2s) as fleet:
        await _backlog(fleet, 200)
        await fleet.bash(_xadd("patient", "low"))
        waited = await _done_in(fleet, "patient", timeout=60)
        calls = await _calls(fleet)
    # Bound: the aging interval, a slot freeing, its own call; 200 normal tasks take 25 s.
    assert waited < 2.0 + 2 * LATENCY_S + 1.5, f"the low task took {waited:.1f}s"
    assert calls - 1 <= 80, f"{calls - 1} normal tasks went first: it waited for the backlog"
