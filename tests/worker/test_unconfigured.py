"""A fleet with one vendor's key: the other vendors' workers, under
SWARM_WORKER_UNCONFIGURED=idle (as compose.yaml runs them), neither crash-loop nor take
tasks. Each says so in one warning and in its heartbeat (`configured=false`, `missing=`
the variable to set), `swarm status` shows the vendor as not configured, the dispatcher
routes nothing to it, and SIGTERM stops it cleanly with exit code 0.

The processes run as a container runs them (`swarm run worker`), in a temp dir with the
vendor keys taken out of the environment, so a developer's `.env` or keys never leak in.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path

from redis.asyncio import Redis

from services.dispatcher.fleet import FleetView
from services.dispatcher.policy import Policy
from services.dispatcher.router import Fleet, route
from services.dispatcher.service import run_dispatcher
from services.dispatcher.settings import DispatcherSettings
from shared.bus import Cooldowns, Heartbeat, live_members
from shared.llm.prices import PriceTable
from shared.llm.settings import VendorSettings
from shared.protocol import Finding, Names, decode
from shared.runtime.settings import BusSettings, SwarmSettings
from tests.chaos.checks import post, sim_config, tasks
from tests.clean_env import clean_env
from tests.swarm_procs import SwarmProcs
from tests.waiting import eventually

IDLE = {"SWARM_WORKER_UNCONFIGURED": "idle"}


async def _swarm(*argv: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        *argv,
        cwd=cwd,
        env=clean_env(**env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_an_idle_worker_stays_up_says_why_once_and_stops_cleanly(
    redis_url: str, redis: Redis, names: Names, tmp_path: Path
) -> None:
    queue = names.vendor_tasks("deepseek")
    await redis.xadd(queue, {"prompt": "routed here before anyone knew"})
    async with SwarmProcs(redis_url, names, tmp_path / "logs", cwd=tmp_path) as swarm:
        proc = await swarm.start("worker-deepseek-idle", "worker", "--vendor", "deepseek", env=IDLE)
        beats: set[str] = set()
        member: dict[str, str] = {}

        async def beating() -> bool:
            for m in await live_members(redis, names):
                if m.get("member_id") == proc.name:
                    beats.add(m["seen_at"])
                    member.update(m)
            return len(beats) >= 4  # the first beat and three more: it stays up

        await swarm.wait_for(beating, timeout=30, what="four heartbeats")  # fails if it exits
        assert member["service"] == "worker-deepseek" and member["vendor"] == "deepseek"
        assert (member["configured"], member["missing"]) == ("false", "DEEPSEEK_API_KEY")
        assert "capacity" not in member

        env = {"REDIS_URL": redis_url, "SWARM_NAMESPACE": names.namespace}
        code, out, err = await _swarm("status", cwd=tmp_path, env=env)
        assert code == 0, err
        [row] = [line.split() for line in out.splitlines() if line.startswith("worker-deepseek")]
        assert row == [
            "worker-deepseek", "deepseek", "1", "0", "-",
            "not", "configured", "(set", "DEEPSEEK_API_KEY)",
        ]  # fmt: skip
        code, out, err = await _swarm("status", "--json", cwd=tmp_path, env=env)
        assert code == 0, err
        [live] = json.loads(out)["live"]
        assert (live["configured"], live["unconfigured"], live["missing"]) == (
            False, 1, ["DEEPSEEK_API_KEY"]
        )  # fmt: skip

        # It never joined its vendor's group: the task waits there for a configured worker.
        assert await redis.xinfo_groups(queue) == []
        assert await redis.xlen(queue) == 1

        await swarm.kill(proc.name, signal.SIGTERM)
        assert proc.process.returncode == 0, swarm.tail(proc.name)
    text = proc.log.read_text()
    assert "Traceback" not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    [warning] = [line for line in lines if line["level"] in ("warning", "error", "critical")]
    assert warning["event"] == "worker.unconfigured"
    assert warning["variable"] == "DEEPSEEK_API_KEY"
    assert "vendor deepseek needs DEEPSEEK_API_KEY" in warning["message"]
    assert not [m for m in await live_members(redis, names) if m["service"] == "worker-deepseek"]


async def test_the_fleet_view_counts_no_unconfigured_worker(redis: Redis, names: Names) -> None:
    for member_id, vendor, info in (
        ("w-deepseek", "deepseek", {"configured": "true"}),
        ("w-claude-old", "claude", {}),  # a worker from before the field: configured
        ("w-gemini", "gemini", {"configured": "false", "missing": "GOOGLE_API_KEY"}),
    ):
        await Heartbeat(
            redis,
            names,
            member_id,
            service=f"worker-{vendor}",
            interval_s=1,
            ttl_s=30,
            info={"vendor": vendor, **info},
        ).beat()
    view = FleetView(redis, names, Cooldowns(redis, names), refresh_s=0, live_grace_s=30)
    fleet = await view.get()
    assert dict(fleet.live) == {"deepseek": 1, "claude": 1}
    assert view.unconfigured == {"gemini": "GOOGLE_API_KEY"}


async def test_a_cold_start_queues_for_no_vendor_that_runs_without_its_key(
    redis_url: str, redis: Redis, names: Names
) -> None:
    """No worker with a key yet: after the cold-start wait a task is queued for the cheapest
    vendor whose workers may yet come, never for one whose workers are known keyless."""
    await Heartbeat(
        redis,
        names,
        "w-gemini",
        service="worker-gemini",
        interval_s=1,
        ttl_s=60,
        info={"vendor": "gemini", "configured": "false", "missing": "GOOGLE_API_KEY"},
    ).beat()
    stop = asyncio.Event()
    swarm = SwarmSettings(
        REDIS_URL=redis_url, SWARM_NAMESPACE=names.namespace, METRICS_PORT=0, CONSUMER_NAME="d"
    )
    bus = BusSettings(block_ms=200, heartbeat_interval_s=0.3, heartbeat_ttl_s=1.5)
    settings = DispatcherSettings(fleet_refresh_s=0.1, cold_start_wait_s=0.5)
    running = asyncio.create_task(run_dispatcher(stop, swarm, bus, settings, VendorSettings()))
    try:
        [task] = tasks("cold", 1)
        await post(redis, names, [task])

        async def routed_to() -> str:
            return (await redis.hget(names.task(task.task_id), "vendor") or b"").decode()

        vendor = await eventually(routed_to, timeout=20, what="the task routed")
    finally:
        stop.set()
        await asyncio.wait_for(running, 20)
    assert vendor not in ("", "gemini")
    assert not await redis.exists(names.vendor_tasks("gemini"))


async def test_the_dispatcher_routes_only_to_configured_vendors(
    redis_url: str, redis: Redis, names: Names, tmp_path: Path
) -> None:
    batch = tasks(f"one-key-{uuid.uuid4().hex[:6]}", 20)
    # Gemini is the cheapest for these: with a live gemini worker it would take them all.
    anyone = route(
        batch[0], Policy.load(), PriceTable.load(), Fleet(live={"gemini": 1, "deepseek": 1})
    )
    assert anyone.chosen is not None and anyone.chosen.vendor == "gemini"

    async with SwarmProcs(redis_url, names, tmp_path / "logs", cwd=tmp_path) as swarm:
        # Started before the simulator, so it has neither a key nor SWARM_SIMULATOR_URL.
        await swarm.start("worker-gemini", "worker", "--vendor", "gemini", env=IDLE)
        await swarm.simulator(sim_config(0.05))
        await swarm.start("worker-deepseek", "worker", "--vendor", "deepseek", env=IDLE)
        await swarm.wait_live(redis, names, {"worker-gemini": 1, "worker-deepseek": 1})
        await swarm.start("dispatcher", "dispatcher")
        await swarm.wait_live(redis, names, {"dispatcher": 1})
        await post(redis, names, batch)

        async def all_found() -> list[Finding]:
            found = [decode(Finding, f) for _id, f in await redis.xrange(names.findings)]
            return found if len(found) >= len(batch) else []

        found = await swarm.wait_for(all_found, timeout=60, what="a finding per task")
        assert swarm.running("worker-gemini"), "the idle worker exited"
        gemini_warnings = swarm.events("worker.unconfigured", "worker-gemini")
    assert sorted(f.task_id for f in found) == sorted(t.task_id for t in batch)
    assert {(f.vendor, f.status.value) for f in found} == {("deepseek", "ok")}
    for t in batch:
        assert await redis.hget(names.task(t.task_id), "vendor") == b"deepseek"
    assert not await redis.exists(names.vendor_tasks("gemini"))
    [warning] = gemini_warnings
    assert warning["variable"] == "GOOGLE_API_KEY"
    assert not swarm.events("worker.unconfigured", "worker-deepseek")  # it had the simulator
