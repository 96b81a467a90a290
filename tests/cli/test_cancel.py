"""Cancelling a task, as a user does it (`swarm cancel`, or the redis-cli line
docs/protocol.md prints), against the real fleet; the simulator counts the vendor calls.

* a queued task is never sent to the vendor: its finding says cancelled, $0;
* a task in flight has its vendor call closed: its finding says so, before the vendor
  would have answered;
* a finished task and an unknown one are left alone, and the command says which.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from shared.bus.findings import task_view
from shared.protocol import Status, Task, encode
from tests.cli.typed_fleet import TypedFleet, typed_fleet

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli")


async def _post(fleet: TypedFleet, *task_ids: str) -> None:
    for task_id in task_ids:
        task = Task(task_id=task_id, prompt=f"Summarise note {task_id}.", complexity="simple")
        await fleet.redis.xadd(fleet.names.intake, encode(task))  # type: ignore[arg-type]


async def _in_flight(fleet: TypedFleet, n: int) -> None:
    async def calling() -> bool:
        return int((await fleet.swarm.sim_stats())["in_flight"]) >= n

    await fleet.swarm.wait_for(calling, timeout=30, what=f"{n} vendor call(s) in flight")


async def _finished(fleet: TypedFleet, *task_ids: str) -> None:
    async def done() -> bool:
        views = [await task_view(fleet.redis, fleet.names, t) for t in task_ids]
        return all(v is not None for v in views)

    await fleet.swarm.wait_for(done, timeout=60, what=f"findings of {task_ids}")


async def test_queued_tasks_cancelled_by_swarm_cancel_and_by_redis_cli_are_never_sent(
    tmp_path: Path,
) -> None:
    # One call at a time, each taking 1 s: b and c wait in the queue behind a.
    one_at_a_time = {"SWARM_MAX_IN_FLIGHT": "1"}
    async with typed_fleet(tmp_path / "logs", latency_s=1.0, worker_env=one_at_a_time) as fleet:
        await _post(fleet, "a", "b", "c")
        await _in_flight(fleet, 1)
        # The wire form, as docs/protocol.md prints it; then the command, which waits.
        await fleet.bash("redis-cli XADD swarm:cancel '*' task_id c reason 'changed my mind'")
        code, out = await fleet.bash("swarm cancel b --reason 'not needed any more'")
        assert code == 0, out
        assert "task b cancelled: cancelled before any vendor call: not needed any more" in out
        await _finished(fleet, "a", "b", "c")
        calls = int((await fleet.swarm.sim_stats())["total"])
        views = {t: await task_view(fleet.redis, fleet.names, t) for t in "abc"}
    assert calls == 1  # only a reached the vendor
    a, b, c = (views[t] for t in "abc")
    assert a is not None and a.summary.status == Status.OK.value
    for view, reason in ((b, "not needed any more"), (c, "changed my mind")):
        assert view is not None and view.summary.status == Status.CANCELLED.value
        [finding] = view.findings
        assert finding.cost_usd == 0.0 and finding.input_tokens == 0
        assert finding.error == f"cancelled before any vendor call: {reason}"


async def test_a_task_in_flight_has_its_vendor_call_closed(tmp_path: Path) -> None:
    async with typed_fleet(tmp_path / "logs", latency_s=30.0) as fleet:
        await _post(fleet, "slow")
        await _in_flight(fleet, 1)
        code, out = await fleet.bash("swarm cancel slow")
        stats = await fleet.swarm.sim_stats()
        view = await task_view(fleet.redis, fleet.names, "slow")
    # The vendor would have answered after 30 s; the cancel's wait is 15 s at most.
    assert code == 0, out
    assert "task slow cancelled: cancelled during its vendor call (closed)" in out
    assert int(stats["in_flight"]) == 0  # the HTTP request was closed, not left running
    assert view is not None and view.summary.status == Status.CANCELLED.value
    [finding] = view.findings
    assert finding.cost_usd is None  # unknown: the vendor may bill what it had read


async def test_a_finished_or_unknown_task_is_left_alone_and_said_so(tmp_path: Path) -> None:
    async with typed_fleet(tmp_path / "logs") as fleet:
        await _post(fleet, "quick")
        await _finished(fleet, "quick")
        finished_code, finished_out = await fleet.bash("swarm cancel quick", check=False)
        unknown_code, unknown_out = await fleet.bash("swarm cancel nobody", check=False)
        await asyncio.sleep(0.5)
        view = await task_view(fleet.redis, fleet.names, "quick")
        cancels = await fleet.redis.xlen(fleet.names.cancels)
    assert finished_code == 1 and "task quick has already finished (ok" in finished_out
    assert unknown_code == 1 and "no task 'nobody' in namespace 'swarm'" in unknown_out
    assert cancels == 0  # neither posted a request
    assert view is not None and view.summary.status == Status.OK.value
