"""A fleet for commands run as a user types them: a private redis-server, the CLI's own
processes (simulator, dispatcher, collector, deepseek workers) in the default namespace
`swarm`, so the key names docs print are the real ones, and a bash environment in which
`redis-cli` reaches that server and `swarm` is this venv's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from services.cli.redis_finder import private_redis_server
from shared.protocol import Names
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings
from tests.chaos.checks import sim_config, simple_tier_policy
from tests.swarm_procs import SwarmProcs


@dataclass
class TypedFleet:
    redis: Redis
    swarm: SwarmProcs
    names: Names
    env: dict[str, str]
    prelude: str  # defines redis-cli as a function reaching the private server

    async def bash(self, script: str, *, check: bool = True) -> tuple[int, str]:
        """Run `script` as bash -euo pipefail would; its exit code and stdout+stderr."""
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            self.prelude + script,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        text = out.decode()
        assert not check or proc.returncode == 0, f"{script}\n{text}"
        return proc.returncode or 0, text


@contextlib.asynccontextmanager
async def typed_fleet(
    logs: Path,
    *,
    latency_s: float = 0.05,
    worker_env: Mapping[str, str] | None = None,
    fleet_env: Mapping[str, str] | None = None,
) -> AsyncIterator[TypedFleet]:
    """`fleet_env`: set in every service process (`worker_env`: in the worker's only)."""
    names = Names("swarm")
    with private_redis_server() as (url, _):
        port = url.rsplit(":", 1)[1].split("/")[0]
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "REDIS_URL": url,
            "SWARM_NAMESPACE": "swarm",
            "COLUMNS": "200",
        }
        prelude = f'redis-cli() {{ command redis-cli -p {port} "$@"; }}\n'
        redis = connect(url, BusSettings())
        try:
            async with SwarmProcs(url, names, logs, env=dict(fleet_env or {})) as swarm:
                await swarm.simulator(sim_config(latency_s))
                policy = simple_tier_policy(swarm.logs / "policy.toml", "deepseek-flash")
                await swarm.start("dispatcher", "dispatcher", env=policy)
                await swarm.start("collector", "collector")
                await swarm.start(
                    "worker-deepseek-1", "worker", "--vendor", "deepseek", env=worker_env or {}
                )
                await swarm.wait_live(redis, names, {"worker-deepseek": 1, "collector": 1})
                yield TypedFleet(redis, swarm, names, env, prelude)
        finally:
            await redis.aclose()
