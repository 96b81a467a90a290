"""The fleet the Redis-outage and load tests run: a private redis-server (by default one
that keeps every acknowledged write: `appendonly yes`, `appendfsync always`), a deepseek
simulator, the dispatcher, the collector and two deepseek workers started from the CLI.

`restart()` brings Redis back on the same port and data dir after the test stopped it."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from services.cli.redis_finder import private_redis_server
from shared.protocol import Names
from shared.runtime.net import free_port
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings
from tests.chaos.checks import sim_config, simple_tier_policy
from tests.swarm_procs import SwarmProcs

DURABLE = "appendfsync always\n"
SERVICES = ("dispatcher", "collector", "worker-deepseek-1", "worker-deepseek-2")


@dataclass
class DurableFleet:
    redis: Redis
    swarm: SwarmProcs
    server: subprocess.Popen[bytes]
    port: int
    workdir: str

    @contextlib.contextmanager
    def restart(self) -> Iterator[None]:
        with private_redis_server(
            port=self.port, appendonly=True, workdir=self.workdir, config=DURABLE
        ):
            yield


@contextlib.asynccontextmanager
async def durable_fleet(
    names: Names,
    logs: Path,
    env: Mapping[str, str] | None = None,
    *,
    config: str = DURABLE,
    worker_env: Mapping[str, str] | None = None,
    latency_s: float = 0.2,
) -> AsyncIterator[DurableFleet]:
    """`env` goes to every process, `worker_env` to the workers (default: 32 in flight)."""
    port = free_port()
    worker_env = worker_env or {"SWARM_MAX_IN_FLIGHT": "32"}
    with (
        tempfile.TemporaryDirectory() as workdir,
        private_redis_server(port=port, appendonly=True, workdir=workdir, config=config) as (
            url,
            server,
        ),
    ):
        redis = connect(url, BusSettings(connect_timeout_s=10))
        try:
            async with SwarmProcs(url, names, logs, env=dict(env or {})) as swarm:
                await swarm.simulator(sim_config(latency_s))
                policy = simple_tier_policy(swarm.logs / "policy.toml", "deepseek-flash")
                await swarm.start("dispatcher", "dispatcher", env=policy)
                await swarm.start("collector", "collector")
                for name in SERVICES[2:]:
                    await swarm.start(name, "worker", "--vendor", "deepseek", env=worker_env)
                wanted = {"dispatcher": 1, "collector": 1, "worker-deepseek": 2}
                await swarm.wait_live(redis, names, wanted)
                yield DurableFleet(redis, swarm, server, port, workdir)
        finally:
            await redis.aclose()
