"""A worker SIGKILLed with vendor calls in flight: a replica finishes its tasks, and every
task ends with exactly one finding."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from services.simulator.server import Simulator
from shared.protocol import Names
from tests.waiting import eventually
from tests.worker.conftest import StartWorker, post, wait_findings

ROOT = Path(__file__).resolve().parents[2]


async def test_sigkilled_worker_tasks_are_finished_once_by_a_replica(
    redis: Redis, redis_url: str, names: Names, simulator: Simulator, start_worker: StartWorker
) -> None:
    victim = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on here
        [sys.executable, "-m", "services.cli.main", "run", "worker", "--vendor", "deepseek"],
        cwd=ROOT,
        env={
            **os.environ,
            "REDIS_URL": redis_url,
            "SWARM_NAMESPACE": names.namespace,
            "METRICS_PORT": "0",
            "SWARM_SIMULATOR_URL": simulator.base_url,
            "CONSUMER_NAME": "victim",
            "LOG_LEVEL": "warning",
        },
    )
    try:
        for i in range(20):
            await post(
                redis,
                names,
                "deepseek",
                task_id=f"crash-{i}",
                prompt=f"slow research {i} [[sim:latency=3]]",
            )

        async def calls_in_flight() -> bool:
            return int(simulator.stats()["in_flight"]) >= 10

        await eventually(calls_in_flight, timeout=30, what="the victim's calls in flight")
        victim.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.wait)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    assert await redis.xlen(names.findings) == 0  # killed before any call came back

    await start_worker("deepseek")
    done = await wait_findings(redis, names, 20, timeout=60)
    assert sorted(f.task_id for f in done) == sorted(f"crash-{i}" for i in range(20))
    assert {f.worker_id for f in done} == {"worker-deepseek-0"}

    async def all_acked() -> bool:
        # The findings land first, the acks right after (never the other way round).
        summary = await redis.xpending(names.vendor_tasks("deepseek"), "worker-deepseek")
        return summary["pending"] == 0

    await eventually(all_acked, timeout=10, what="every task acknowledged")
