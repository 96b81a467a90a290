"""Processes die and are stopped: nothing acknowledged is lost, nothing running is stolen."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.bus import Bus, Delivery, Outgoing, serve
from shared.protocol import Names
from shared.runtime.metrics import Metrics
from shared.runtime.settings import BusSettings
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spawn(redis_url: str, names: Names) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(handle_s: float, **env: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.consumer_proc"],
            cwd=ROOT,
            env={
                **os.environ,
                "REDIS_URL": redis_url,
                "SWARM_NAMESPACE": names.namespace,
                "METRICS_PORT": "0",
                "HANDLE_S": str(handle_s),
                "SWARM_BLOCK_MS": "200",
                "SWARM_RECLAIM_INTERVAL_S": "1",
                **env,
            },
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def _started(redis: Redis, names: Names) -> list[Any]:
    return list(await redis.xrange(names.intake + ":started"))


async def _findings(redis: Redis, names: Names) -> list[dict[bytes, bytes]]:
    return [fields for _id, fields in await redis.xrange(names.findings)]


class Peer:
    """An in-test consumer in group `g`, heartbeating as member `peer`."""

    def __init__(self, redis: Redis, names: Names, **overrides: Any) -> None:
        settings = BusSettings(
            block_ms=200,
            reclaim_interval_s=0.5,
            heartbeat_ttl_s=3,
            heartbeat_interval_s=1,
            **overrides,
        )
        self.redis, self.names = redis, names
        self.bus = Bus(redis, names, settings, Metrics.create())
        self.handled: list[tuple[str, float]] = []
        self.t0 = time.monotonic()

    async def handler(self, d: Delivery) -> list[Outgoing]:
        self.handled.append((d.entry_id, time.monotonic() - self.t0))
        return [Outgoing(self.names.findings, {"id": d.entry_id, "by": "peer"})]

    async def serve_until(self, probe: Any, what: str, timeout: float = 20) -> Any:
        await self.redis.hset(self.names.member("peer"), mapping={"service": "test"})
        sub = self.bus.subscribe(self.names.intake, "g", "peer")
        await sub.start()
        stop = asyncio.Event()
        served = asyncio.create_task(serve(sub, self.handler, stop=stop, drain_timeout_s=2))
        try:
            return await eventually(probe, timeout=timeout, what=what)
        finally:
            stop.set()
            await served


async def test_sigkilled_consumers_work_is_finished_by_a_peer_within_seconds(
    redis: Redis, names: Names, spawn: Any
) -> None:
    victim = spawn(handle_s=3600)  # takes the task and never finishes it
    entry_id = await Bus(redis, names, BusSettings(), Metrics.create()).publish(
        names.intake, {"n": "1"}
    )
    await eventually(lambda: _started(redis, names), timeout=20, what="victim to start")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    # A live peer with the default heartbeat TTL (3 s) and visibility timeout (60 s): only
    # the dead consumer's expired heartbeat can make it take the task this soon.
    peer = Peer(redis, names)
    findings = await peer.serve_until(lambda: _findings(redis, names), "the peer's finding")
    assert [f[b"id"] for f in findings] == [entry_id.encode()]
    assert findings[0][b"by"] == b"peer"
    print(f"\ntakeover of a SIGKILLed consumer's task: {peer.handled[0][1]:.2f}s after the kill")
    assert peer.handled[0][1] < 5.0, f"took {peer.handled[0][1]:.1f}s after the kill"


async def test_live_consumers_long_task_is_never_stolen(
    redis: Redis, names: Names, spawn: Any
) -> None:
    # Visibility timeout 1 s, task takes 4 s: only the claim refresh keeps peers off it.
    owner = spawn(handle_s=4, SWARM_VISIBILITY_TIMEOUT_S="1")
    await Bus(redis, names, BusSettings(), Metrics.create()).publish(names.intake, {"n": "1"})
    await eventually(lambda: _started(redis, names), timeout=20, what="owner to start")
    peer = Peer(redis, names, visibility_timeout_s=1)
    try:
        findings = await peer.serve_until(lambda: _findings(redis, names), "owner's finding")
    finally:
        owner.terminate()
        owner.wait()
    assert peer.handled == []
    assert [f[b"by"] for f in findings] != [b"peer"]
    assert len(findings) == 1
    assert len(await _started(redis, names)) == 1  # handled exactly once


async def test_sigterm_drains_in_flight_work_then_exits(
    redis: Redis, names: Names, spawn: Any
) -> None:
    proc = spawn(handle_s=1.0)
    bus = Bus(redis, names, BusSettings(), Metrics.create())
    for i in range(5):
        await bus.publish(names.intake, {"n": str(i)})

    async def all_started() -> bool:
        return len(await _started(redis, names)) == 5

    await eventually(all_started, timeout=20, what="5 deliveries in flight")
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    assert len(await _findings(redis, names)) == 5  # finished, not dropped
    summary: Any = await redis.xpending(names.intake, "g")
    assert summary["pending"] == 0


async def test_work_past_the_drain_deadline_stays_pending_for_a_peer(
    redis: Redis, names: Names, spawn: Any
) -> None:
    proc = spawn(handle_s=3600, SWARM_DRAIN_TIMEOUT_S="0.5")
    bus = Bus(redis, names, BusSettings(), Metrics.create())
    entry_id = await bus.publish(names.intake, {"n": "1"})
    await eventually(lambda: _started(redis, names), timeout=20, what="delivery in flight")
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    rows: Any = await redis.xpending_range(names.intake, "g", min="-", max="+", count=10)
    assert [r["message_id"] for r in rows] == [entry_id.encode()]  # not acked, not lost
    assert await _findings(redis, names) == []
    # The stopped consumer left the fleet, so a peer takes the entry over straight away.
    peer = Peer(redis, names)
    findings = await peer.serve_until(lambda: _findings(redis, names), "the peer's finding")
    assert findings[0][b"id"] == entry_id.encode()
    assert findings[0][b"by"] == b"peer"
