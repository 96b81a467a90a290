"""A shard process killed mid-query, and a worker's task that asks a real shard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.megashard.corpus import Document
from services.simulator.server import Simulator
from shared.bus.context_client import ContextClient
from shared.protocol import Names, Status
from tests.megashard.conftest import Load, StartShard
from tests.waiting import eventually
from tests.worker.conftest import StartWorker, post, wait_findings
from tests.worker.conftest import start_worker as start_worker  # noqa: PLC0414 - the fixture

RETRIES = Document("retries.md", "Our 429 retry policy: exponential backoff with jitter. " * 300)
WEATHER = Document("weather.md", "Rain in March and sun in June. " * 300)


async def test_a_query_taken_by_a_killed_shard_is_answered_by_a_replica(
    redis_url: str,
    redis: Redis,
    names: Names,
    load: Load,
    start_shard: StartShard,
    asker: ContextClient,
    simulator: Simulator,
) -> None:
    await load("legal", [RETRIES], vendor="claude")
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SWARM_NAMESPACE": names.namespace,
        "SWARM_SIMULATOR_URL": simulator.base_url,
        "METRICS_PORT": "0",
        "SWARM_SHARD_ID": "legal",
        "SWARM_BLOCK_MS": "200",
        "SWARM_HEARTBEAT_INTERVAL_S": "0.3",
        "SWARM_HEARTBEAT_TTL_S": "1.5",
        "LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for below
        [sys.executable, "-m", "services.cli.main", "run", "megashard"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        pending_reply = await asker.send("legal", "retries? [[sim:latency=4]]", timeout_s=30)

        async def taken() -> bool:
            try:
                info = await redis.xpending(names.shard_queries("legal"), "megashard")
            except ResponseError:  # NOGROUP: the process has not started reading yet
                return False
            return bool(info["pending"])

        await eventually(taken, timeout=15, what="the shard process to take the query")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert not pending_reply.done()
        await start_shard("legal")  # a replica notices the dead consumer and takes over
        reply = await pending_reply.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert reply.status is Status.OK
    assert reply.shard_id == "legal"
    assert await redis.xlen(names.dead_letter) == 0


async def test_a_worker_task_asks_the_shard_and_uses_its_reply(
    redis: Redis,
    names: Names,
    load: Load,
    start_shard: StartShard,
    start_worker: StartWorker,
    simulator: Simulator,
) -> None:
    await load("history", [RETRIES, WEATHER], specialty="ops-history")
    await start_shard("history")
    await start_worker("deepseek")
    await post(
        redis,
        names,
        "deepseek",
        task_id="ctx-real-1",
        prompt="What is our 429 retry policy?",
        parent_shard="ops-history",
    )
    [finding] = await wait_findings(redis, names, 1, timeout=40)
    assert finding.task_id == "ctx-real-1"
    assert finding.status.value == "ok"
    # The shard's id, then its document and the lines drawn on (a one-line document).
    assert finding.sources == ("history:retries.md#L1",)
