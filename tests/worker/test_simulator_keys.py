"""A real vendor key and SWARM_SIMULATOR_URL together would send the key to the simulator
with every call: the worker refuses to start (exit 2, one line naming the variables, never
the key), unless SWARM_ALLOW_SIMULATOR_WITH_KEYS=1 says the simulator is the operator's
own. The processes run as a container runs them (`swarm run worker`), in a temp dir."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from redis.asyncio import Redis

from services.simulator.config import SimulatorConfig
from services.simulator.server import Simulator
from shared.bus import live_members
from shared.protocol import Names
from tests.clean_env import clean_env
from tests.waiting import eventually

KEY = "sk-real-looking-key-0123456789"


async def _worker(cwd: Path, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "run",
        "worker",
        "--vendor",
        "deepseek",
        cwd=cwd,
        env=clean_env(DEEPSEEK_API_KEY=KEY, **env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_a_worker_with_a_real_key_and_the_simulator_refuses_to_start(
    tmp_path: Path,
) -> None:
    proc = await _worker(tmp_path, SWARM_SIMULATOR_URL="http://127.0.0.1:9/")
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode() + err.decode()
    assert proc.returncode == 2, text
    assert "SWARM_ALLOW_SIMULATOR_WITH_KEYS" in text and "DEEPSEEK_API_KEY" in text
    assert KEY not in text


async def test_the_operator_may_allow_it_for_a_simulator_of_their_own(
    redis_url: str, redis: Redis, names: Names, tmp_path: Path
) -> None:
    sim = Simulator(SimulatorConfig(seed=5))
    await sim.start()
    proc = await _worker(
        tmp_path,
        SWARM_SIMULATOR_URL=sim.base_url,
        SWARM_ALLOW_SIMULATOR_WITH_KEYS="1",
        REDIS_URL=redis_url,
        SWARM_NAMESPACE=names.namespace,
    )
    try:

        async def live() -> bool:
            if proc.returncode is not None:
                return True  # exited: the assertion below says so
            return any(m.get("vendor") == "deepseek" for m in await live_members(redis, names))

        await eventually(live, timeout=30, what="the worker's heartbeat")
        assert proc.returncode is None, "the worker exited instead of starting"
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sim.stop()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert KEY not in out.decode() + err.decode()
